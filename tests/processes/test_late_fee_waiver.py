"""Late-fee waivers (滞纳金减免) through the 减免 process.

A TJ account of 87.35 m² owes 87.35 × 25.00 = 2183.75 for 2025-2026. TJ charges 2‰ a day
on the unpaid fee from 2026-01-01, so the late fee posted as of 2026-01-31 is
2183.75 × 0.002 × 31 = 135.3925, rounded once to 135.39.
"""

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from app.billing.invariants import account_figures, find_invariant_breaks
from app.billing.late_fees import late_fee_receivable, post_late_fee
from app.billing.models import LedgerEntry
from app.billing.services import season_receivable
from app.extensions import db
from app.payments.services import amount_owed, collect_payment
from app.processes.models import ProcessEvent
from app.tariffs.services import get_season
from tests.processes.conftest import SEASON, flashed, instance_of, open_task, start_process_request, submit_task, user

D = Decimal


def _season(account):
    return get_season(account.company_id, SEASON)


def _with_late_fee(make_account, area="87.35"):
    account = make_account("TJ", area)
    post_late_fee(account, _season(account), date(2026, 1, 31))
    db.session.commit()
    return account


def _request(client, account, **values):
    data = {
        "target": "late_fee", "late_fee_season": SEASON, "category": "hardship", "mode": "amount", "amount": "",
        "percent": "", "evidence": "困难证明 2026-007", "comment": "",
    }
    data.update(values)
    return start_process_request(client, "waiver", account.id, data)


def _approve_in_company(instance):
    submit_task(_client("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    submit_task(_client("tj_finance"), open_task(instance.id, "finance_review").id, {"decision": "approve"})


_clients = {}


def _client(username):
    return _clients[username]


def _escalation_reason(instance):
    return db.session.scalar(
        sa.select(ProcessEvent.comment).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated")
    )


def _login_all(login):
    for name in ("tj_clerk", "tj_approver", "tj_finance", "hq_approver"):
        _clients[name] = login(name)


def test_late_fee_waiver_lowers_late_fee_only(demo, make_account, login):
    # 35.39 is 26.14 % of 135.39 and below 1000.00, so the company decides.
    _login_all(login)
    account = _with_late_fee(make_account)
    season = _season(account)
    assert late_fee_receivable(account.id, season.id) == D("135.39")
    response = _request(_client("tj_clerk"), account, amount="35.39")
    assert response.status_code == 302
    instance = instance_of(account.id, "waiver")
    assert instance.status == "running"

    approval = open_task(instance.id, "company_approval")
    page = _client("tj_approver").get(f"/processes/tasks/{approval.id}").get_data(as_text=True)
    assert "减免对象" in page
    assert "滞纳金" in page
    assert "减免后滞纳金" in page
    assert "100.00" in page  # 135.39 − 35.39
    _approve_in_company(instance)

    db.session.expire_all()
    assert instance_of(account.id, "waiver").status == "completed"
    assert _escalation_reason(instance) is None
    [line] = db.session.scalars(
        sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "late_fee_waiver")
    ).all()
    assert line.amount == D("-35.39")
    assert line.season_id == season.id
    assert line.idempotency_key == f"waiver:{instance.id}"
    assert late_fee_receivable(account.id, season.id) == D("100.00")
    assert season_receivable(account.id, season.id) == D("2183.75")
    assert amount_owed(account).total == D("2283.75")  # 2183.75 + 100.00
    assert find_invariant_breaks(account.company_id, season.id) == []

    # The next night's accrual 2183.75 × 0.002 × 32 = 139.76 adds 139.76 − 135.39 = 4.37 and
    # does not post the waived 35.39 again.
    next_day = post_late_fee(account, season, date(2026, 2, 1))
    db.session.commit()
    assert next_day.amount == D("4.37")
    assert late_fee_receivable(account.id, season.id) == D("104.37")
    assert find_invariant_breaks(account.company_id, season.id) == []


def test_whole_late_fee_by_percent_escalates(demo, make_account, login):
    # 100 % of 135.39 is above the 30 % share of the late-fee receivable, so the group decides.
    _login_all(login)
    account = _with_late_fee(make_account)
    _request(_client("tj_clerk"), account, mode="percent", percent="100")
    instance = instance_of(account.id, "waiver")
    _approve_in_company(instance)
    group_task = open_task(instance.id, "group_approval")
    assert group_task is not None
    assert _escalation_reason(instance) == "减免金额占应收 100.00%，超过 30%，需集团审批。"
    submit_task(_client("hq_approver"), group_task.id, {"decision": "approve", "comment": "集团同意"})

    db.session.expire_all()
    season = _season(account)
    assert late_fee_receivable(account.id, season.id) == D("0.00")
    assert amount_owed(account).total == D("2183.75")
    assert find_invariant_breaks(account.company_id, season.id) == []


def test_late_fee_waiver_above_amount_escalates(demo, make_account, login):
    # 5000.00 m² × 25.00 = 125000.00; its late fee is 125000.00 × 0.002 × 31 = 7750.00.
    # 1200.00 is 15.48 % of it, inside the share but above 1000.00 yuan.
    _login_all(login)
    account = _with_late_fee(make_account, "5000.00")
    assert late_fee_receivable(account.id, _season(account).id) == D("7750.00")
    _request(_client("tj_clerk"), account, amount="1200.00")
    instance = instance_of(account.id, "waiver")
    _approve_in_company(instance)
    assert open_task(instance.id, "group_approval") is not None
    assert _escalation_reason(instance) == "减免金额 1200.00 元超过 1000.00 元，需集团审批。"


def test_paid_late_fee_waived_keeps_identity(demo, make_account, login):
    # 2200.00 pays the fee 2183.75 and 16.25 of the late fee. Waiving 35.39 leaves
    # 135.39 − 35.39 − 16.25 = 83.75 of late fee unpaid:
    # 135.39 posted = 16.25 received + 35.39 waived + 83.75 outstanding.
    _login_all(login)
    account = _with_late_fee(make_account)
    collect_payment(account, "2200.00", "cash", user("tj_cashier"))
    _request(_client("tj_clerk"), account, amount="35.39")
    _approve_in_company(instance_of(account.id, "waiver"))

    db.session.expire_all()
    season = _season(account)
    figures = account_figures(account, season.id)
    assert figures.late_fee == D("135.39")
    assert figures.late_fee_received == D("16.25")
    assert figures.late_fee_waived == D("35.39")
    assert figures.late_fee_outstanding == D("83.75")
    assert figures.late_fee_credit == D("0.00")
    assert figures.gap == D("0.00")
    assert amount_owed(account).total == D("83.75")
    assert find_invariant_breaks(account.company_id, season.id) == []


def test_late_fee_waiver_bad_input(demo, make_account, login):
    clerk = login("tj_clerk")
    without_late_fee = make_account("TJ", "87.35")
    response = _request(clerk, without_late_fee, amount="10.00")
    assert "该户没有已入账的滞纳金" in flashed(clerk, response)

    account = _with_late_fee(make_account)
    cases = [
        ({"amount": "135.40"}, "减免金额 135.40 元超过该户 2025-2026 滞纳金应收 135.39 元"),
        ({"late_fee_season": "2019-2020"}, "供暖季「2019-2020」在本公司不存在"),
        ({"target": "charge", "amount": "10.00"}, "减免对象为「热费」时不填写滞纳金所属供暖季"),
        ({"target": "fine", "amount": "10.00"}, "请选择减免对象"),
    ]
    for values, message in cases:
        response = _request(clerk, account, **{"amount": "10.00", **values})
        assert response.status_code == 400, values
        assert message in flashed(clerk, response), values
    assert instance_of(account.id, "waiver") is None
    # Without a season the only season with late fees is taken.
    response = _request(clerk, account, late_fee_season="", amount="10.00")
    instance = instance_of(account.id, "waiver")
    assert instance is not None
    started = db.session.scalar(
        sa.select(ProcessEvent.data).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "started")
    )
    assert (started["target"], started["season"]) == ("late_fee", SEASON)


def test_waiver_form_offers_late_fee_seasons(demo, make_account, login):
    clerk = login("tj_clerk")
    account = _with_late_fee(make_account)
    page = clerk.get(f"/accounts/{account.id}").get_data(as_text=True)
    assert 'name="target"' in page
    assert "2025-2026（滞纳金 135.39 元，未缴 135.39 元）" in page
