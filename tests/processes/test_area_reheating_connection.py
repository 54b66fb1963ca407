"""The 调整面积, 复热 and 入网 processes end to end, with hand-worked amounts."""

from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import season_receivable
from app.extensions import db
from app.network.models import Account
from app.processes.models import ProcessEvent
from app.tariffs.services import get_season
from tests.processes.conftest import SEASON, flashed, instance_of, open_task, start_process_request, submit_task


def _receivable(account):
    return season_receivable(account.id, get_season(account.company_id, SEASON).id)


def _lines(account, kind):
    return [
        line.amount
        for line in db.session.scalars(
            sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == kind).order_by(LedgerEntry.id)
        )
    ]


def _escalation(instance):
    return db.session.scalar(
        sa.select(ProcessEvent.comment).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated")
    )


def _area_request(client, account, new_area, certificate_no="津(2019)津南区不动产权第0012345号"):
    return start_process_request(client, "area_adjustment", account.id, {
        "new_area": new_area, "evidence_kind": "certificate", "certificate_no": certificate_no, "evidence": "", "comment": "",
    })


# -- 调整面积


def test_area_decrease_within_rule_rerates(demo, make_account, login):
    # 87.35 → 80.00 m² lowers the area by 7.35 m² (8.41 %): company only. 80.00 × 25 = 2000.00, so the line is −183.75.
    account = make_account("TJ", "87.35")
    assert _area_request(login("tj_clerk"), account, "80.00").status_code == 302
    instance = instance_of(account.id, "area_adjustment")
    approver = login("tj_approver")
    task = open_task(instance.id, "company_approval")
    approver.post(f"/processes/tasks/{task.id}/claim")
    page = approver.get(f"/processes/tasks/{task.id}").get_data(as_text=True)
    assert "调整后应收" in page
    assert "2000.00" in page
    assert submit_task(approver, task.id, {"decision": "approve"}).status_code == 302

    db.session.expire_all()
    assert instance_of(account.id, "area_adjustment").status == "completed"
    assert db.session.get(Account, account.id).building_area == Decimal("80.00")
    assert _lines(account, "rerate") == [Decimal("-183.75")]
    assert _receivable(account) == Decimal("2000.00")
    assert _escalation(instance) is None


def test_large_area_decrease_goes_to_group(demo, make_account, login):
    # 120.00 → 100.00 m²: 20 m² and 16.67 %, both above the 10 m² / 10 % rule. 3000.00 → 2500.00.
    account = make_account("TJ", "120.00")
    _area_request(login("tj_clerk"), account, "100.00")
    instance = instance_of(account.id, "area_adjustment")
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    assert _escalation(instance) == "面积减少 20 ㎡，超过 10 ㎡，需集团审批；面积减少 16.67%，超过 10%，需集团审批。"
    assert db.session.get(Account, account.id).building_area == Decimal("120.00")
    submit_task(login("hq_approver"), open_task(instance.id, "group_approval").id, {"decision": "approve", "comment": "核实无误"})
    db.session.expire_all()
    assert _lines(account, "rerate") == [Decimal("-500.00")]
    assert _receivable(account) == Decimal("2500.00")


def test_area_rejection_and_missing_evidence(demo, make_account, login):
    clerk = login("tj_clerk")
    account = make_account("TJ", "89.24")
    response = _area_request(clerk, account, "94.38", certificate_no="")
    assert "没有证据的面积变更不予受理" in flashed(clerk, response)
    assert instance_of(account.id, "area_adjustment") is None
    response = _area_request(clerk, account, "89.24")
    assert "与现有建筑面积相同" in flashed(clerk, response)

    _area_request(clerk, account, "94.38")
    instance = instance_of(account.id, "area_adjustment")
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "reject", "comment": "证书与现场不符"})
    db.session.expire_all()
    assert instance_of(account.id, "area_adjustment").status == "rejected"
    assert db.session.get(Account, account.id).building_area == Decimal("89.24")
    assert _receivable(account) == Decimal("2231.00")
    assert _lines(account, "rerate") == []


# -- 复热


def _reheat(login, account, requested_on="2026-01-20"):
    response = start_process_request(login("tj_clerk"), "reheating", account.id, {"requested_on": requested_on, "comment": ""})
    assert response.status_code == 302
    return instance_of(account.id, "reheating")


def test_reheating_bills_remaining_days(demo, make_account, login):
    # Suspended 87.35 m²: 436.75 of 2183.75. From 2026-01-20 to 2026-03-15 is 55 of 121 days:
    # (2183.75 − 436.75) × 55 / 121 = 96085 / 121 = 794.0909 → 794.09; receivable 436.75 + 794.09 = 1230.84.
    account = make_account("TJ", "87.35", status="suspended")
    assert _receivable(account) == Decimal("436.75")
    instance = _reheat(login, account)
    approver = login("tj_approver")
    task = open_task(instance.id, "company_approval")
    approver.post(f"/processes/tasks/{task.id}/claim")
    assert "1230.84" in approver.get(f"/processes/tasks/{task.id}").get_data(as_text=True)
    submit_task(approver, task.id, {"decision": "approve"})
    assert _escalation(instance) is None

    field = login("tj_field")
    field_task = open_task(instance.id, "valve_open")
    response = submit_task(field, field_task.id, {"opened_on": "2026-03-16"})
    assert response.status_code == 409
    assert "日期 2026-03-16 不在供暖季 2025-2026" in response.get_data(as_text=True)
    response = field.post(f"/processes/tasks/{field_task.id}", data={"opened_on": "2026-01-20", "photo_note": "阀门照片"})
    assert response.status_code == 302, response.get_data(as_text=True)

    db.session.expire_all()
    stored = db.session.get(Account, account.id)
    assert (stored.billing_status, stored.valve_state) == ("normal", "open")
    assert _lines(account, "rerate") == [Decimal("794.09")]
    assert _receivable(account) == Decimal("1230.84")
    assert instance_of(account.id, "reheating").status == "completed"


def test_reheating_escalates_when_rule_is_set(demo, make_account, login):
    # The company turns on group approval for non-residential reheating on the settings page.
    admin = login("tj_admin")
    response = admin.post("/processes/settings", data={"process_type": "reheating", "escalate_non_residential": "on"})
    assert response.status_code == 303
    # Non-residential 547.07 m² × 40.00 = 21882.80, suspended at 0.20: 4376.56.
    # (21882.80 − 4376.56) × 55 / 121 = 962843.20 / 121 = 7957.3818 → 7957.38.
    account = make_account("TJ", "547.07", user_type="non_residential", status="suspended")
    instance = _reheat(login, account)
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    assert _escalation(instance) == "非居民用户复热需集团审批。"
    submit_task(login("hq_approver"), open_task(instance.id, "group_approval").id, {"decision": "approve"})
    submit_task(login("tj_field"), open_task(instance.id, "valve_open").id, {"opened_on": "2026-01-20"})
    db.session.expire_all()
    assert _lines(account, "rerate") == [Decimal("7957.38")]
    assert _receivable(account) == Decimal("12333.94")


def test_reheating_rejection_keeps_suspension(demo, make_account, login):
    account = make_account("TJ", "87.35", status="suspended")
    instance = _reheat(login, account)
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "reject", "comment": "欠费未清"})
    db.session.expire_all()
    assert instance_of(account.id, "reheating").status == "rejected"
    assert db.session.get(Account, account.id).billing_status == "suspended"
    assert _receivable(account) == Decimal("436.75")

    clerk = login("tj_clerk")
    response = start_process_request(clerk, "reheating", account.id, {"requested_on": "2026-04-01"})
    assert "日期 2026-04-01 不在供暖季 2025-2026" in flashed(clerk, response)
    normal = make_account("TJ", "60.00")
    response = start_process_request(clerk, "reheating", normal.id, {"requested_on": "2026-01-20"})
    assert "只有「报停」、「强停」状态的用户可以申请复热" in flashed(clerk, response)


# -- 入网


def _connect(login, account, applied_area="80.00"):
    response = start_process_request(login("bj_clerk"), "connection", account.id, {"applied_area": applied_area, "contract_no": "BJ-RW-2026-01"})
    assert response.status_code == 302
    instance = instance_of(account.id, "connection")
    assert instance is not None
    return instance


def test_connection_bills_from_connection_date(demo, make_account, login):
    # BJ 80 m² × 24.00 = 1920.00 for the season; 2026-01-10 to 2026-03-15 is 65 of 121 days:
    # 1920.00 × 65 / 121 = 1031.4049 → 1031.40 (rounding the daily rate first would give 1031.55).
    account = make_account("BJ", "0.01", status="not_connected")
    assert _lines(account, "charge") == []
    instance = _connect(login, account)
    field = login("bj_field")
    response = submit_task(field, open_task(instance.id, "survey").id, {"surveyed_area": "80.00", "comment": "实测无误"})
    assert response.status_code == 302, response.get_data(as_text=True)
    submit_task(login("bj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    assert _escalation(instance) is None
    response = submit_task(field, open_task(instance.id, "connect").id, {"connected_on": "2026-01-10", "seal_no": ""})
    assert response.status_code == 302, response.get_data(as_text=True)

    db.session.expire_all()
    stored = db.session.get(Account, account.id)
    assert (stored.billing_status, stored.valve_state, stored.building_area) == ("normal", "open", Decimal("80.00"))
    assert _lines(account, "charge") == [Decimal("1031.40")]
    assert _receivable(account) == Decimal("1031.40")
    assert instance_of(account.id, "connection").status == "completed"


def test_large_connection_goes_to_group(demo, make_account, login):
    # 350 m² is above the 300 m² rule. 350 × 24.00 = 8400.00; 8400.00 × 65 / 121 = 4512.3967 → 4512.40.
    account = make_account("BJ", "0.01", status="not_connected")
    instance = _connect(login, account, "350.00")
    submit_task(login("bj_field"), open_task(instance.id, "survey").id, {"surveyed_area": "350.00"})
    submit_task(login("bj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    assert _escalation(instance) == "入网面积 350 ㎡ 超过 300 ㎡，需集团审批。"
    submit_task(login("hq_approver"), open_task(instance.id, "group_approval").id, {"decision": "approve"})
    submit_task(login("bj_field"), open_task(instance.id, "connect").id, {"connected_on": "2026-01-10"})
    db.session.expire_all()
    assert _lines(account, "charge") == [Decimal("4512.40")]


def test_connection_rejection_leaves_account_unconnected(demo, make_account, login):
    account = make_account("BJ", "0.01", status="not_connected")
    instance = _connect(login, account)
    response = submit_task(login("bj_field"), open_task(instance.id, "survey").id, {"surveyed_area": "80.5"})
    assert response.status_code == 302
    submit_task(login("bj_approver"), open_task(instance.id, "company_approval").id, {"decision": "reject", "comment": "管网容量不足"})
    db.session.expire_all()
    assert instance_of(account.id, "connection").status == "rejected"
    assert db.session.get(Account, account.id).billing_status == "not_connected"
    assert db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).where(LedgerEntry.account_id == account.id)) == 0
