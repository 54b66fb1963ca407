"""The approval inbox and a task page in English, as an approver who chose English sees them.

Saves process-english-inbox.png and process-english-task.png under the screenshot folder.
"""

import pytest
import sqlalchemy as sa

from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.org.models import User
from app.processes.services import start_process

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

SEASON = "2025-2026"
# Legacy number of a residential TJ account billed normally in the TJ-shared.xlsx ledger.
LEGACY_NO = "TJ-0001031"


@pytest.fixture
def suspension_requested(import_fixture):
    """Return the account number of a 报停 request for TJ-0001031, filed by the clerk, waiting in the approver's inbox; the approver reads English."""
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    clerk = db.session.scalar(sa.select(User).filter_by(username="tj_clerk"))
    account = db.session.scalar(sa.select(Account).filter_by(legacy_no=LEGACY_NO))
    start_process("suspension", account.id, clerk, {"reason": "vacant", "comment": "房屋空置"})
    db.session.execute(sa.update(User).where(User.username == "tj_approver").values(locale="en"))
    db.session.commit()
    return account.account_no


def test_inbox_and_task_in_english(page, browser_login, screenshot, suspension_requested):
    browser_login(page, "tj_approver")
    page.goto("/processes/inbox")
    assert page.locator("main h1").inner_text() == "Inbox"
    row = page.locator("#inbox tbody tr[data-task-id]", has_text=suspension_requested)
    assert row.count() == 1
    assert "Unclaimed" in row.inner_text()
    screenshot(page, "process-english-inbox")

    with page.expect_navigation():
        row.get_by_role("button", name="Claim").click()
    assert page.locator("#task-summary").get_by_text("Receivable after the suspension").is_visible()
    assert page.locator("#task-form").get_by_label("Approve").is_visible()
    assert page.get_by_role("button", name="Submit").is_visible()
    assert page.get_by_role("heading", name="History").is_visible()
    screenshot(page, "process-english-task")
