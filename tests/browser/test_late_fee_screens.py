"""The late-fee waiver form, its approval page and the HQ findings page, driven through Chromium.

TJ-0001031 owes 3408.00 for 2025-2026 (136.32 m² × 25.00); its late fee as of 2026-01-31
is 3408.00 × 0.002 × 31 = 211.296, posted as 211.30. Waiving 50.00 leaves 161.30.
"""

from datetime import date

import pytest
import sqlalchemy as sa

from app.billing.invariants import InvariantBreak, record_findings
from app.billing.late_fees import post_late_fee
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.processes.models import ProcessInstance
from app.tariffs.services import get_season

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

SEASON = "2025-2026"
ACCOUNT = "TJ-0001031"


@pytest.fixture
def late_fee_account(import_fixture):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    account = db.session.scalar(sa.select(Account).filter_by(legacy_no=ACCOUNT))
    post_late_fee(account, get_season(account.company_id, SEASON), date(2026, 1, 31))
    db.session.commit()
    return account.id, account.account_no


def _submit(page, button_name):
    with page.expect_navigation():
        page.get_by_role("button", name=button_name).click()


def _claim(page, account_no):
    page.goto("/processes/inbox")
    row = page.locator("#inbox tbody tr[data-task-id]", has_text=account_no)
    with page.expect_navigation():
        row.get_by_role("button", name="签收").click()


def _approve(page):
    page.locator("#task-form").get_by_label("同意").check()
    _submit(page, "提交")
    assert "已办结" in page.locator(".flash.success").inner_text()


def test_late_fee_waiver_form_and_approval(page, browser_login, screenshot, late_fee_account):
    account_id, account_no = late_fee_account
    browser_login(page, "tj_clerk")
    page.goto(f"/accounts/{account_id}")
    page.locator("details.process-start summary", has_text="申请减免").click()
    form = page.locator("#waiver-start")
    assert form.get_by_label("热费").is_checked()
    form.get_by_label("滞纳金", exact=True).check()
    season = form.locator("select[name=late_fee_season]")
    assert season.locator("option").all_inner_texts() == ["请选择", "2025-2026（滞纳金 211.30 元，未缴 211.30 元）"]
    season.select_option("2025-2026")
    form.locator("select[name=category]").select_option("hardship")
    form.locator("select[name=mode]").select_option("amount")
    form.locator("input[name=amount]").fill("50.00")
    form.locator("textarea[name=evidence]").fill("困难证明 2026-007")
    screenshot(page, "waiver-late-fee-form")
    _submit(page, "提交减免申请")
    assert "减免申请已受理" in page.locator(".flash.success").inner_text()

    page.context.clear_cookies()
    browser_login(page, "tj_approver")
    _claim(page, account_no)
    summary = page.locator("#task-summary").inner_text()
    assert "减免对象" in summary
    assert "滞纳金" in summary
    assert "211.30" in summary
    assert "减免后滞纳金" in summary
    assert "161.30" in summary
    screenshot(page, "waiver-late-fee-approval")
    _approve(page)

    page.context.clear_cookies()
    browser_login(page, "tj_finance")
    _claim(page, account_no)
    _approve(page)
    db.session.expire_all()
    assert db.session.scalar(sa.select(ProcessInstance.status).filter_by(account_id=account_id)) == "completed"

    page.goto(f"/accounts/{account_id}")
    history = page.locator(".process-events").first.inner_text()
    assert "调整金额 -50.00 元（2025-2026 滞纳金），滞纳金 211.30 → 161.30 元" in history
    screenshot(page, "waiver-late-fee-history")


def test_hq_findings_page(page, browser_login, screenshot, late_fee_account, demo):
    account_id, _account_no = late_fee_account
    season = get_season(demo["TJ"].id, SEASON)
    planted = InvariantBreak(demo["TJ"].id, season.id, account_id, "payment_allocation", "payments 0.00 but payment lines 50.00")
    record_findings(demo["TJ"].id, season.id, [planted])
    db.session.commit()
    browser_login(page, "hq_auditor")
    page.get_by_role("link", name="账务校验").click()
    page.wait_for_url("**/hq/invariants")
    assert "共 1 项未解决问题" in page.locator("#invariant-count").inner_text()
    assert "收款与台账收款行不符" in page.locator("#invariant-findings").inner_text()
    screenshot(page, "hq-invariants")
