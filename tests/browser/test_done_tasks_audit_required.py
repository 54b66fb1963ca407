"""Done tasks with their decisions, the HQ audit page's default list and required-field marks, in Chinese and English.

Saves done-tasks-<locale>.png, hq-audit-default-<locale>.png and field-task-required-<locale>.png.
"""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.models import User
from tests.fieldwork.conftest import valve_task  # noqa: F401
from tests.processes.conftest import make_account, start_request  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

USERS = ("tj_approver", "hq_auditor", "tj_field")


def _log_in_afresh(page, browser_login, username):
    # Without the previous user's cookies the login page is Chinese, as browser_login expects.
    page.context.clear_cookies()
    browser_login(page, username)


def _read_in(locale):
    db.session.execute(sa.update(User).where(User.username.in_(USERS)).values(locale=locale))
    db.session.commit()


@pytest.fixture
def approved_and_open(valve_task, make_account, login):  # noqa: F811
    """The approved valve_task request, and a second request still waiting for approval."""
    waiting = make_account("TJ", "70.00")
    assert start_request(login("tj_clerk"), waiting.id).status_code == 302
    return valve_task


@pytest.mark.parametrize("locale, decision, required", [("zh_CN", "同意", "必填"), ("en", "Approve", "Required")])
def test_screens_in_both_languages(approved_and_open, page, browser_login, screenshot, locale, decision, required):
    _account, _instance, valve = approved_and_open
    _read_in(locale)

    _log_in_afresh(page, browser_login, "tj_approver")
    page.goto("/processes/inbox?status=completed")
    assert page.locator("#inbox td.decision").all_inner_texts() == [decision]
    screenshot(page, f"done-tasks-{locale}")

    _log_in_afresh(page, browser_login, "hq_auditor")
    page.goto("/hq/audit")
    assert page.locator("#audit-results tbody tr[data-instance]").count() == 2
    screenshot(page, f"hq-audit-default-{locale}")

    _log_in_afresh(page, browser_login, "tj_field")
    page.goto(f"/field/tasks/{valve.id}")
    seal = page.locator("input[name=seal_no]")
    assert seal.get_attribute("required") is not None
    assert page.locator(f'abbr.required-mark[title="{required}"]').count() >= 3
    screenshot(page, f"field-task-required-{locale}")
