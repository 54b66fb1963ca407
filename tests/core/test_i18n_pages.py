"""English pages show no Chinese interface text.

Every GET route of the URL map is requested by English-speaking staff of TJ (each demo
role) and by the group administrator, with TJ's own rows in the URL (the route walking of
tests/security/test_isolation_matrix.py). An HTML response fails when it contains a run of
Chinese characters (or full-width punctuation) that is not part of a data value stored in
the database: names of companies, customers, tariffs and roles stay as their users typed
them. The language switcher's "中文" button is the only other exception.

Receipts and invoices (PDF) are legal documents and stay Chinese by law, so PDF responses
and the receipt templates are not checked.

ALLOWED_UNTRANSLATED lists the areas whose pages are not translated yet. Each key is a
blueprint name (every endpoint "<name>.*") or one full endpoint ("<name>.<view>"); the value
says which area it is. On those pages only the page header (base.html) is checked. Remove an entry when the area is translated: the test then checks
its pages, and it fails while an entry names an area whose checked pages are all English.
The goal is an empty dict.
"""

import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.i18n import LANGUAGES
from app.org.models import User
from tests.security.test_isolation_matrix import _urls, world  # noqa: F401  world is a fixture

# Areas (blueprint or endpoint -> description) whose pages may still show Chinese outside
# the header. Every area is translated, so it is empty. A new entry needs a description of what is missing.
ALLOWED_UNTRANSLATED = {}
# Chinese characters, CJK punctuation and full-width forms.
CJK_RUN = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]+")
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# The page header of base.html, checked on allow-listed pages too.
PAGE_HEADER = re.compile(r"<header\b.*?</header>", re.DOTALL)
CRAWL_USERS = ["tj_admin", "tj_clerk", "tj_approver", "tj_cashier", "tj_field", "tj_finance", "hq_admin"]


def _allowed(endpoint):
    """Return the ALLOWED_UNTRANSLATED key covering `endpoint`, or None."""
    if endpoint in ALLOWED_UNTRANSLATED:
        return endpoint
    blueprint = endpoint.split(".", 1)[0]
    return blueprint if blueprint in ALLOWED_UNTRANSLATED and "." in endpoint else None


def _strings(value):
    """Every string inside a column value, including those nested in JSON."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _data_values():
    """(set of Chinese runs, all stored strings joined) of every text and JSON column in the database."""
    runs, texts = set(), set()
    for table in db.metadata.sorted_tables:
        columns = [c for c in table.columns if isinstance(c.type, (sa.String, sa.JSON))]
        if not columns:
            continue
        for row in db.session.execute(sa.select(*columns)):
            for value in row:
                for text in _strings(value):
                    if CJK_RUN.search(text):
                        texts.add(text)
                        runs.update(CJK_RUN.findall(text))
    return runs, "\n".join(texts)


def _interface_chinese(html, data_runs, data_text):
    """The Chinese runs of a page that are neither stored data nor a language's own name."""
    found = []
    for run in CJK_RUN.findall(HTML_COMMENT.sub("", html)):
        if run in data_runs or run in LANGUAGES.values() or run in data_text:
            continue
        found.append(run)
    return found


@pytest.fixture
def english_staff(world):
    """The crawl users, each with English saved as their language."""
    db.session.execute(sa.update(User).where(User.username.in_(CRAWL_USERS)).values(locale="en"))
    db.session.commit()
    return world


def test_allow_list_names_real_areas(app_ctx):
    endpoints = set(app_ctx.view_functions)
    blueprints = set(app_ctx.blueprints)
    unknown = [key for key in ALLOWED_UNTRANSLATED if key not in endpoints and key not in blueprints]
    assert not unknown, f"ALLOWED_UNTRANSLATED names no blueprint or endpoint: {unknown}"


def test_english_pages_have_no_chinese(app_ctx, english_staff, login):
    company = english_staff["TJ"]
    data_runs, data_text = _data_values()
    clients = {username: login(username) for username in CRAWL_USERS}
    failures, checked = [], 0
    # Per allow-listed area: whether any of its pages was checked and whether one showed Chinese.
    area_pages, area_chinese = set(), set()

    for rule, url, method, _targets_object in _urls(app_ctx, company):
        if method != "GET":
            continue
        area = _allowed(rule.endpoint)
        for username, client in clients.items():
            response = client.get(url)
            assert response.status_code < 500, f"{username} GET {url}: {response.status_code}"
            if response.mimetype != "text/html":
                continue
            html = response.get_data(as_text=True)
            if area is not None:
                area_pages.add(area)
                if _interface_chinese(html, data_runs, data_text):
                    area_chinese.add(area)
                html = " ".join(PAGE_HEADER.findall(html))
            chinese = _interface_chinese(html, data_runs, data_text)
            checked += 1
            if chinese:
                failures.append(f"{username} GET {url} ({rule.endpoint}): {sorted(set(chinese))[:8]}")

    assert not failures, f"{len(failures)} English pages show Chinese interface text:\n" + "\n".join(failures[:40])
    finished = sorted(area_pages - area_chinese)
    assert not finished, f"These areas show no Chinese in English any more; remove them from ALLOWED_UNTRANSLATED: {finished}"
    assert checked > 0
