"""The English catalog covers every interface string of the code, with matching placeholders.

The strings are extracted from app/ the way `bin/i18n extract` does (babel.cfg, the same
keywords), so a string wrapped in `_()`, `gettext` or `lazy_gettext` without an English
translation in app/translations/en/LC_MESSAGES/messages.po fails here.
"""

import re
import subprocess
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "app" / "translations" / "en" / "LC_MESSAGES" / "messages.po"
# %(name)s-style placeholders (Python and Jinja gettext) and {name}-style ones (str.format).
PERCENT_PLACEHOLDER = re.compile(r"%\((\w+)\)[-#0 +]*\d*(?:\.\d+)?[sdifrx]")
BRACE_PLACEHOLDER = re.compile(r"(?<!\{)\{(\w*)(?:[:!][^{}]*)?\}(?!\})")
# Translations that must quote Chinese words because users type them into a Chinese ledger.
QUOTES_LEDGER_WORDS = {"是否有电梯应填“是”或“否”"}
# A bare %s or %d: its position cannot move in a translation, so it must get a name.
UNNAMED_PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdifrx]")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The messages of the code, extracted by bin/i18n into a temporary template."""
    template = tmp_path_factory.mktemp("i18n") / "messages.pot"
    subprocess.run([str(ROOT / "bin" / "i18n"), "template", str(template)], check=True, capture_output=True)
    with template.open("rb") as f:
        return {message.id: message for message in read_po(f) if message.id}


@pytest.fixture(scope="module")
def english():
    with CATALOG.open("rb") as f:
        return {message.id: message for message in read_po(f) if message.id}


def _texts(message_id):
    """The singular and plural forms of a msgid."""
    return list(message_id) if isinstance(message_id, tuple) else [message_id]


def _placeholders(text):
    return sorted(PERCENT_PLACEHOLDER.findall(text)), sorted(BRACE_PLACEHOLDER.findall(text))


def test_code_extracts_some_messages(extracted):
    assert len(extracted) > 50


def test_every_message_translated(extracted, english):
    missing = [text for text in extracted if text not in english]
    assert not missing, f"{len(missing)} strings are missing from {CATALOG.name}; run bin/i18n extract and translate: {missing[:10]}"


def test_no_empty_translation(extracted, english):
    empty = [key for key in extracted if key in english and not all(_texts(english[key].string))]
    assert not empty, f"{len(empty)} strings have an empty English translation: {empty[:10]}"


def test_no_fuzzy_translation(english):
    fuzzy = [key for key, message in english.items() if message.fuzzy]
    assert not fuzzy, f"{len(fuzzy)} translations are marked fuzzy; check them and drop the flag: {fuzzy[:10]}"


def test_catalog_has_no_stale_messages(extracted, english):
    stale = [key for key in english if key not in extracted]
    assert not stale, f"{len(stale)} catalog entries are no longer in the code; run bin/i18n extract: {stale[:10]}"


def test_placeholders_match(extracted, english):
    mismatched = []
    for key in extracted:
        if key not in english:
            continue
        sources, translations = _texts(key), _texts(english[key].string)
        for translation in translations:
            if translation and _placeholders(translation) != _placeholders(sources[-1]):
                mismatched.append((sources[-1], translation))
    assert not mismatched, f"Placeholders differ between source and translation: {mismatched[:5]}"


def test_placeholders_named(extracted):
    unnamed = [key for key in extracted for text in _texts(key) if UNNAMED_PLACEHOLDER.search(text.replace("%%", ""))]
    assert not unnamed, f"Use named placeholders such as %(name)s, so a translation may reorder them: {unnamed[:10]}"


def test_translations_have_no_chinese(english):
    cjk = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
    chinese = [
        key for key, message in english.items()
        if key not in QUOTES_LEDGER_WORDS and any(cjk.search(text or "") for text in _texts(message.string))
    ]
    assert not chinese, f"English translations contain Chinese characters or punctuation: {chinese[:10]}"
