"""Counter payment and 报停 approval driven through Chromium, each user logged in through the form.

The ledger import and the season billing run as services before the browser starts. Each
test saves screenshots of its key screens, and the payment test also saves the receipt PDF
and a PNG of its first page.
"""

import re
import subprocess
from decimal import ROUND_HALF_UP, Decimal

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.money import amount_in_words
from app.network.models import Account
from app.org.models import User
from app.processes.models import HumanTask, ProcessInstance
from tests.browser.conftest import SCREENSHOTS

# The xdist group keeps all browser tests on one worker, so that one Chromium serves them all.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

SEASON = "2025-2026"
TOOL_TIMEOUT_SECONDS = 60
# TJ-0001031 owes 1960.43 prior arrears and 3408.00 for 2025-2026 (136.32 m² × 25.00).
PAYING_ACCOUNT = "TJ-0001031"
PAID = Decimal("1234.56")
# TJ's 2025-2026 tariff: unit prices in yuan/m² and the suspension ratio.
NON_RESIDENTIAL_PRICE = Decimal("40.00")
RESIDENTIAL_PRICE = Decimal("25.00")
SUSPENSION_RATIO = Decimal("0.20")
# TJ's escalation rule: residential accounts up to this building area (m²) are decided by the company alone.
ESCALATION_AREA = Decimal("200")
REQUEST_COMMENT = "房屋空置，冬季无人居住"
COMPANY_COMMENT = "材料齐全，同意报停"
GROUP_COMMENT = "集团复核同意"
SEAL_NO = "TJ-S-0001"
FIELD_COMMENT = "用户在场，已施封"


@pytest.fixture
def tj_billed(import_fixture):
    """TJ-shared.xlsx imported into TJ and season 2025-2026 billed."""
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    db.session.expire_all()


def _run(*command):
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=TOOL_TIMEOUT_SECONDS).stdout


def _money(text):
    """Parse the first amount like 1234.56 in a text into Decimal."""
    match = re.search(r"-?\d+\.\d{2}", text)
    assert match, f"no amount in {text!r}"
    return Decimal(match.group())


def _round_money(value):
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _user_name(username):
    return db.session.scalar(sa.select(User.name).filter_by(username=username))


def _switch_user(page, browser_login, username):
    page.context.clear_cookies()
    browser_login(page, username)
    assert page.locator("header .who").inner_text().endswith(f"（{username}）")


def _submit(page, button_name):
    with page.expect_navigation():
        page.get_by_role("button", name=button_name).click()


def _inbox_row(page, account_no):
    page.goto("/processes/inbox")
    return page.locator("#inbox tbody tr[data-task-id]", has_text=account_no)


def _claim(page, account_no, task_title):
    """Claim the account's task from the inbox, which opens the task page."""
    row = _inbox_row(page, account_no)
    assert row.count() == 1, f"expected one inbox row for {account_no}: {page.locator('#inbox').inner_text()}"
    assert row.locator("td").first.inner_text() == task_title
    with page.expect_navigation():
        row.get_by_role("button", name="签收").click()
    assert page.locator("main h1").inner_text().startswith(task_title)


def _approve(page, comment):
    page.locator("#task-form").get_by_label("同意").check()
    page.locator("#task-form textarea[name=comment]").fill(comment)
    _submit(page, "提交")
    assert "已办结" in page.locator(".flash.success").inner_text()


def _file_suspension(page, account_id):
    page.goto(f"/accounts/{account_id}")
    form = page.locator("#suspension-start")
    form.locator("select[name=reason]").select_option("vacant")
    form.locator("textarea[name=comment]").fill(REQUEST_COMMENT)
    _submit(page, "提交报停申请")
    assert "报停申请已受理" in page.locator(".flash.success").inner_text()
    assert page.locator("#suspension-running").is_visible()


def _instance_id(account_id):
    db.session.expire_all()
    return db.session.scalar(sa.select(ProcessInstance.id).where(ProcessInstance.account_id == account_id))


def _event_rows(page, instance_id):
    """Return the history rows of an instance as (step, event, user, decision, details)."""
    rows = page.locator(f"#process-{instance_id} .process-events tbody tr").all()
    return [tuple(cell.strip() for cell in row.locator("td").all_inner_texts()[2:]) for row in rows]


def test_counter_payment_and_receipt(page, browser_login, screenshot, tj_billed, demo):
    account = db.session.scalar(sa.select(Account).filter_by(legacy_no=PAYING_ACCOUNT))
    account_no = account.account_no
    words = amount_in_words(PAID)

    browser_login(page, "tj_cashier")
    page.goto("/payments/")
    page.locator("input[name=q]").fill(PAYING_ACCOUNT)
    _submit(page, "查找")
    results = page.locator("#counter-results tbody tr")
    assert results.count() == 1
    assert results.locator("td").nth(1).inner_text() == PAYING_ACCOUNT
    screenshot(page, "counter-search")

    with page.expect_navigation():
        results.get_by_role("link", name="收费").click()
    owed_before = _money(page.locator("#total-owed").inner_text())
    assert PAID < owed_before, f"{PAYING_ACCOUNT} owes {owed_before}, less than the test payment {PAID}"
    form = page.locator("#pay-form")
    form.locator("input[name=amount]").fill(str(PAID))
    form.locator("select[name=method]").select_option("cash")
    screenshot(page, "pay-form")

    _submit(page, "确认收款")
    assert re.search(r"/payments/\d+$", page.url), page.url
    assert f"已收款 {PAID} 元" in page.locator(".flash.success").inner_text()
    facts = page.locator("#payment-facts").inner_text()
    assert account_no in facts
    assert f"{PAID} 元" in facts
    remaining = page.get_by_text("该户剩余欠费").inner_text()
    assert _money(remaining) == owed_before - PAID
    screenshot(page, "payment")

    receipt_url = page.locator("#receipt-link").get_attribute("href")
    response = page.request.get(receipt_url)
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pdf = SCREENSHOTS / "receipt.pdf"
    pdf.write_bytes(response.body())
    _run("pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(SCREENSHOTS / "receipt"))
    assert (SCREENSHOTS / "receipt.png").stat().st_size > 0

    text = _run("pdftotext", "-layout", str(pdf), "-")
    assert demo["TJ"].name in text
    assert "供热费收据" in text
    assert account_no in text
    assert words in text, f"{words} is missing from the receipt text"
    assert str(PAID) in text

    # Columns of pdffonts end with: emb sub uni object-id generation.
    fonts = [line.split() for line in _run("pdffonts", str(pdf)).splitlines()[2:]]
    assert fonts, "the receipt names no font"
    assert any(row[-5] == "yes" for row in fonts), f"no font is embedded: {fonts}"

    page.goto(f"/payments/accounts/{account.id}")
    assert _money(page.locator("#total-owed").inner_text()) == owed_before - PAID


def test_suspension_approved_by_company_and_group(page, browser_login, screenshot, tj_billed, demo):
    without_arrears = ~sa.exists().where(LedgerEntry.account_id == Account.id, LedgerEntry.kind == "prior_arrears")
    account = db.session.scalar(
        sa.select(Account)
        .where(
            Account.company_id == demo["TJ"].id, Account.user_type == "non_residential",
            Account.billing_status == "normal", without_arrears,
        )
        .order_by(Account.account_no)
        .limit(1)
    )
    assert account is not None, "TJ-shared.xlsx has no non-residential 正常 account without prior arrears"
    account_id, account_no, area = account.id, account.account_no, account.building_area
    receivable_before = _round_money(area * NON_RESIDENTIAL_PRICE)
    receivable_after = _round_money(area * NON_RESIDENTIAL_PRICE * SUSPENSION_RATIO)
    clerk, company_approver, group_approver, field = (
        _user_name(name) for name in ("tj_clerk", "tj_approver", "hq_approver", "tj_field")
    )

    browser_login(page, "tj_clerk")
    _file_suspension(page, account_id)
    instance_id = _instance_id(account_id)

    _switch_user(page, browser_login, "tj_approver")
    _inbox_row(page, account_no).wait_for()
    screenshot(page, "inbox")
    _claim(page, account_no, "分公司审批")
    summary = page.locator("#task-summary").inner_text()
    assert f"{receivable_before:.2f}" in summary
    assert f"{receivable_after:.2f}" in summary
    assert "非居民用户报停需集团审批" in summary
    screenshot(page, "approval-form")
    _approve(page, COMPANY_COMMENT)
    assert _inbox_row(page, account_no).count() == 0

    _switch_user(page, browser_login, "hq_approver")
    _claim(page, account_no, "集团审批")
    assert COMPANY_COMMENT in page.locator("#task-summary").inner_text()
    _approve(page, GROUP_COMMENT)

    _switch_user(page, browser_login, "tj_clerk")
    page.goto(f"/accounts/{account_id}")
    assert page.locator("#billing-status").inner_text() == "报停"
    statement = page.locator("#statement tbody tr").last.locator("td").all_inner_texts()
    assert statement[2] == "调整应收"
    assert Decimal(statement[3]) == receivable_after - receivable_before
    assert Decimal(statement[4]) == receivable_after
    steps = _event_rows(page, instance_id)
    assert ("报停申请", "发起申请", clerk, "", f"{REQUEST_COMMENT} 原因：房屋空置") in steps
    assert ("分公司审批", "办结", company_approver, "同意", COMPANY_COMMENT) in steps
    assert ("集团审批", "办结", group_approver, "同意", GROUP_COMMENT) in steps
    rebilled = (
        f"调整金额 {receivable_after - receivable_before} 元，应收 {receivable_before} → {receivable_after} 元"
    )
    assert ("按报停比例重算应收", "重算应收", group_approver, "", rebilled) in steps

    _switch_user(page, browser_login, "tj_field")
    _claim(page, account_no, "关栓")
    task_form = page.locator("#task-form")
    task_form.locator("select[name=result]").select_option("sealed")
    task_form.locator("input[name=seal_no]").fill(SEAL_NO)
    task_form.locator("textarea[name=comment]").fill(FIELD_COMMENT)
    _submit(page, "提交")
    assert "已办结" in page.locator(".flash.success").inner_text()
    assert _inbox_row(page, account_no).count() == 0

    _switch_user(page, browser_login, "tj_clerk")
    page.goto(f"/accounts/{account_id}")
    assert "已完成" in page.locator(f"#process-{instance_id} h3").inner_text()
    steps = _event_rows(page, instance_id)
    assert ("关栓", "办结", field, "", f"{FIELD_COMMENT} 封签号 {SEAL_NO}") in steps
    assert ("登记阀门已关", "登记关栓", field, "", f"封签号 {SEAL_NO}（施封）") in steps
    screenshot(page, "account-history")


def test_small_residential_suspension_stays_in_company(page, browser_login, tj_billed, demo):
    account = db.session.scalar(
        sa.select(Account)
        .where(
            Account.company_id == demo["TJ"].id, Account.user_type == "residential",
            Account.billing_status == "normal", Account.building_area < ESCALATION_AREA,
        )
        .order_by(Account.account_no)
        .limit(1)
    )
    assert account is not None, "TJ-shared.xlsx has no residential 正常 account under 200 m²"
    account_id, account_no, area = account.id, account.account_no, account.building_area
    receivable_after = _round_money(area * RESIDENTIAL_PRICE * SUSPENSION_RATIO)

    browser_login(page, "tj_clerk")
    _file_suspension(page, account_id)
    instance_id = _instance_id(account_id)

    _switch_user(page, browser_login, "hq_approver")
    assert _inbox_row(page, account_no).count() == 0

    _switch_user(page, browser_login, "tj_approver")
    _claim(page, account_no, "分公司审批")
    assert "未达到集团审批条件" in page.locator("#task-summary").inner_text()
    _approve(page, COMPANY_COMMENT)

    _switch_user(page, browser_login, "hq_approver")
    assert _inbox_row(page, account_no).count() == 0
    db.session.expire_all()
    group_tasks = db.session.scalar(
        sa.select(sa.func.count(HumanTask.id)).where(
            HumanTask.instance_id == instance_id, HumanTask.task_spec_name == "group_approval"
        )
    )
    assert group_tasks == 0

    _switch_user(page, browser_login, "tj_clerk")
    page.goto(f"/accounts/{account_id}")
    assert page.locator("#billing-status").inner_text() == "报停"
    rebilled = page.locator(f"#process-{instance_id} .process-events tbody tr", has_text="重算应收").inner_text()
    assert f"→ {receivable_after} 元" in rebilled
    assert "升级集团审批" not in page.locator(f"#process-{instance_id}").inner_text()
