"""The dictionaries of the BPMN designer and the DMN editor (frontend/src/locale/).

frontend/src/translate.js looks up the English templates of bpmn-js, dmn-js and the
properties panel in zh_CN.json, and the Chinese texts of Heatflow's own page scripts in
en.json. These tests check that both are well formed and keep each template's
{placeholders}, that every palette, context-pad and replace-menu text of the installed
bpmn-js (and every hit policy of dmn-js) has a Chinese entry, so a library upgrade that
adds a text fails here instead of showing English, and that every Chinese text the page
scripts translate has an English entry.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "frontend" / "src"
DICTIONARY = SOURCES / "locale" / "zh_CN.json"
ENGLISH = SOURCES / "locale" / "en.json"
NODE_MODULES = ROOT / "frontend" / "node_modules"
PLACEHOLDER = re.compile(r"\{[^}]*\}")
# A translate('...') call, or a `label: '...'` of the replace menu's option lists.
TRANSLATE_CALL = re.compile(r"translate\(\s*'([^']+)'")
OPTION_LABEL = re.compile(r"label: '([^']+)'")
# A single-quoted literal with a CJK character in a page script. Every such literal is a text
# that the script translates, so each needs an English entry.
CHINESE_LITERAL = re.compile(r"'([^'\n]*[\u4e00-\u9fff][^'\n]*)'")
# Library files whose texts users see in the designer and the DMN editor, and how to read them.
COVERED_SOURCES = [
    ("bpmn-js/lib/features/palette/PaletteProvider.js", TRANSLATE_CALL),
    ("bpmn-js/lib/features/context-pad/ContextPadProvider.js", TRANSLATE_CALL),
    ("bpmn-js/lib/features/popup-menu/ReplaceMenuProvider.js", TRANSLATE_CALL),
    ("bpmn-js/lib/features/replace/ReplaceOptions.js", OPTION_LABEL),
    ("dmn-js-decision-table/lib/features/hit-policy/HitPolicies.js", OPTION_LABEL),
]


@pytest.fixture(scope="module")
def dictionary():
    return json.loads(DICTIONARY.read_text(encoding="utf-8"))


def test_dictionary_entries_are_chinese_text(dictionary):
    assert len(dictionary) > 500
    for template, text in dictionary.items():
        assert isinstance(text, str), template
        assert text.strip(), f"empty translation of {template!r}"
        assert text != template, f"{template!r} is not translated"


def test_dictionary_keeps_placeholders(dictionary):
    for template, text in dictionary.items():
        assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(template)), template


@pytest.mark.parametrize("source, pattern", COVERED_SOURCES, ids=[path for path, _ in COVERED_SOURCES])
def test_dictionary_covers_library_texts(dictionary, source, pattern):
    path = NODE_MODULES / source
    if not path.exists():
        pytest.skip(f"{path} is missing; bin/setup installs the frontend packages")
    texts = set(pattern.findall(path.read_text(encoding="utf-8")))
    assert texts, f"no texts found in {source}; update the pattern for this library version"
    assert sorted(texts - set(dictionary)) == []


@pytest.fixture(scope="module")
def english():
    return json.loads(ENGLISH.read_text(encoding="utf-8"))


def test_english_keeps_placeholders(english):
    for template, text in english.items():
        assert text.strip(), f"empty translation of {template!r}"
        assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(template)), template


def test_english_covers_page_scripts(english):
    texts = set()
    for path in [*SOURCES.glob("*.js"), *SOURCES.glob("*.jsx")]:
        texts |= set(CHINESE_LITERAL.findall(path.read_text(encoding="utf-8")))
    assert "热费平台设置" in texts
    assert sorted(texts - set(english)) == []
