"""Billing desk screens driven through Chromium: the collection list, re-rating approval and what-if."""

import pytest
import sqlalchemy as sa

from app.billing.models import CollectionTask, LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@pytest.fixture
def tj_billed(import_fixture):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")


def test_collection_list_assigns(page, browser_login, screenshot, tj_billed):
    browser_login(page, "tj_clerk")
    page.get_by_role("link", name="清欠").click()
    page.get_by_label("欠费不少于（元）").fill("8000")
    with page.expect_navigation():
        page.get_by_role("button", name="筛选").click()
    rows = page.locator("#arrears tbody tr")
    count = rows.count()
    assert count > 0
    rows.nth(0).locator("input[type=checkbox]").check()
    with page.expect_navigation():
        page.get_by_role("button", name="分派勾选的用户").click()

    assert "已将 1 户分派给" in page.locator(".flash").inner_text()
    assert db.session.scalar(sa.select(sa.func.count(CollectionTask.id))) == 1
    screenshot(page, "arrears-list")


def test_rerate_submitted_and_approved(page, browser_login, screenshot, tj_billed):
    account = db.session.scalar(
        sa.select(Account).join(LedgerEntry, LedgerEntry.account_id == Account.id)
        .where(LedgerEntry.kind == "charge", Account.user_type == "residential", Account.billing_status == "normal")
        .order_by(Account.id).limit(1)
    )
    browser_login(page, "tj_clerk")
    page.goto("/billing/rerates")
    form = page.locator("form", has=page.locator("input[value=account_terms]"))
    form.get_by_label("用户编号").fill(account.account_no)
    form.get_by_label("生效日期").fill("2026-01-01")
    form.get_by_label("建筑面积（㎡）").fill(str(account.building_area + 10))
    with page.expect_navigation():
        form.get_by_role("button", name="计算差额").click()
    assert "待审批" in page.locator(".flash").inner_text()

    browser_login(page, "tj_approver")
    page.get_by_role("link", name="追溯调整").click()
    screenshot(page, "rerate-approval")
    with page.expect_navigation():
        page.get_by_role("button", name="审批通过并过账").click()

    assert "已过账 1 条" in page.locator(".flash").inner_text()
    assert db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).filter_by(kind="rerate")) == 1


def test_what_if_shows_totals(page, browser_login, screenshot, tj_billed):
    browser_login(page, "tj_admin")
    page.get_by_role("link", name="调价测算").click()
    page.locator("input[name=price_residential]").fill("26")
    with page.expect_navigation():
        page.get_by_role("button", name="测算", exact=True).click()

    assert page.locator("#what-if-total tbody tr").count() == 1
    assert page.locator("#what-if-households tbody tr").count() == 200
    assert "完整清单请导出 Excel" in page.locator("h2", has_text="按户").inner_text()
    screenshot(page, "what-if")
