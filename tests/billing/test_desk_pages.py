"""Billing desk pages: collection list, write-off, re-rating approval, what-if, meter import, allocation."""

import io
from decimal import Decimal

import sqlalchemy as sa
from openpyxl import Workbook, load_workbook

from app.billing.models import AllocationPolicy, CollectionTask, LedgerEntry, RerateChange
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import AccountTerms
from app.org.models import User


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def test_arrears_list_filters_assigns_and_exports(add_account, login):
    # 87.35 × 25 = 2183.75 and 20 × 25 = 500.00 outstanding.
    big = add_account("TJ", "87.35", customer_name="李四")
    small = add_account("TJ", "20", customer_name="王五")
    run_billing("TJ", "2025-2026")
    clerk = login("tj_clerk")

    page = clerk.get("/billing/arrears?min_amount=1000").get_data(as_text=True)
    assert "李四" in page
    assert "王五" not in page
    assert "2183.75" in page

    response = clerk.post("/billing/arrears/assign", data={"account_id": [big.id, small.id], "collector_id": _user("tj_field").id})
    assert response.status_code == 302
    assert db.session.scalar(sa.select(sa.func.count(CollectionTask.id))) == 2

    export = clerk.get("/billing/arrears/export")
    assert export.status_code == 200
    rows = list(load_workbook(io.BytesIO(export.data)).active.iter_rows(values_only=True))
    assert [row[1] for row in rows[1:]] == ["李四", "王五"]


def test_field_staff_see_only_their_tasks(add_account, login):
    mine = add_account("TJ", "87.35", customer_name="李四")
    add_account("TJ", "20", customer_name="王五")
    run_billing("TJ", "2025-2026")
    db.session.add(CollectionTask(company_id=mine.company_id, account_id=mine.id, collector_id=_user("tj_field").id,
                                  amount_at_assignment=Decimal("2183.75")))
    db.session.commit()

    page = login("tj_field").get("/billing/arrears").get_data(as_text=True)

    assert "李四" in page
    assert "王五" not in page
    assert login("tj_field").post("/billing/arrears/assign", data={"account_id": [mine.id]}).status_code == 403


def test_bad_filter_shows_message(login, demo):
    page = login("tj_clerk").get("/billing/arrears?min_amount=abc").get_data(as_text=True)

    assert "最低欠费金额「abc」无效" in page


def test_write_off_needs_permission(add_account, login):
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    form = {"account": account.id, "season": "2025-2026", "amount": "183.75", "reason": "用户去世，无继承人"}

    assert login("tj_clerk").post("/billing/write-off", data=form).status_code == 403
    response = login("tj_finance").post("/billing/write-off", data=form)

    assert response.status_code == 302
    line = db.session.scalar(sa.select(LedgerEntry).filter_by(account_id=account.id, kind="write_off"))
    assert line.amount == Decimal("-183.75")
    page = login("tj_finance").get(f"/billing/write-off?account={account.id}").get_data(as_text=True)
    assert "2000.00" in page


def test_write_off_over_outstanding_shows_error(add_account, login):
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    finance = login("tj_finance")

    response = finance.post("/billing/write-off", data={"account": account.id, "season": "2025-2026", "amount": "9999",
                                                         "reason": "长期失联无法催收"})

    assert "核销金额 9999.00 元超过用户" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).filter_by(kind="write_off")) == 0


def test_rerate_submitted_then_approved(add_account, login):
    # Area 100 from 2026-01-01 on a 87.35 m² account billed 2183.75: +193.41.
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    clerk = login("tj_clerk")

    clerk.post("/billing/rerates/new", data={"kind": "account_terms", "account_no": account.account_no,
                                             "effective_from": "2026-01-01", "building_area": "100", "description": "测绘更正"})
    change = db.session.scalar(sa.select(RerateChange))
    page = clerk.get(f"/billing/rerates?change={change.id}").get_data(as_text=True)
    assert "193.41" in page
    assert "审批通过并过账" not in page
    assert clerk.post("/billing/rerates/decide", data={"change_id": change.id, "decision": "approve"}).status_code == 403

    approver = login("tj_approver")
    approver.post("/billing/rerates/decide", data={"change_id": change.id, "decision": "approve"})
    approver.post("/billing/rerates/decide", data={"change_id": change.id, "decision": "approve"})

    amounts = db.session.scalars(sa.select(LedgerEntry.amount).filter_by(account_id=account.id, kind="rerate")).all()
    assert amounts == [Decimal("193.41")]


def test_rerate_rejected_on_page_keeps_account_terms(add_account, login):
    # Area 100 from 2026-01-01 proposed (+193.41) and rejected: the account keeps 87.35 m².
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    login("tj_clerk").post("/billing/rerates/new", data={
        "kind": "account_terms", "account_no": account.account_no, "effective_from": "2026-01-01", "building_area": "100",
    })
    change = db.session.scalar(sa.select(RerateChange))
    assert [p.difference for p in change.proposals] == [Decimal("193.41")]

    login("tj_approver").post("/billing/rerates/decide", data={"change_id": change.id, "decision": "reject"})

    db.session.expire_all()
    assert change.status == "rejected"
    assert account.building_area == Decimal("87.35")
    assert db.session.scalar(sa.select(sa.func.count(AccountTerms.id)).filter_by(account_id=account.id)) == 0
    assert db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).filter_by(account_id=account.id, kind="rerate")) == 0


def test_rerate_bad_input_shows_error(login, demo):
    clerk = login("tj_clerk")

    clerk.post("/billing/rerates/new", data={"kind": "account_terms", "account_no": "119999999999999", "effective_from": "2026-01-01"})
    page = clerk.get("/billing/rerates").get_data(as_text=True)

    assert "用户编号「119999999999999」在本公司不存在" in page


def test_what_if_page_and_export(add_account, login):
    add_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    form = {"season": "2025-2026", "suspension_ratio": "0.2", "price_residential": "26", "price_non_residential": "40",
            "basis_residential": "building_area", "factor_residential": "1",
            "basis_non_residential": "building_area", "factor_non_residential": "1"}
    admin = login("tj_admin")

    page = admin.post("/billing/what-if", data=form).get_data(as_text=True)
    export = admin.post("/billing/what-if", data={**form, "export": "1"})

    assert "2271.10" in page  # 87.35 × 26
    assert "87.35" in page
    assert export.mimetype.endswith("spreadsheetml.sheet")
    assert load_workbook(io.BytesIO(export.data)).sheetnames == ["公司汇总", "按类别", "按户"]
    assert login("tj_clerk").get("/billing/what-if").status_code == 403


def test_meter_upload_lists_errors(add_account, login, qd_season):
    account = add_account("QD", "92.17", billing_method="metered")
    run_billing("QD", "2025-2026")
    workbook = Workbook()
    workbook.active.append(["用户编号", "起始读数", "结束读数"])
    workbook.active.append([account.account_no, "100", "90"])
    buffer = io.BytesIO()
    workbook.save(buffer)

    response = login("qd_clerk").post(
        "/billing/meter-readings", data={"season": "2025-2026", "file": (io.BytesIO(buffer.getvalue()), "读数.xlsx")},
        content_type="multipart/form-data",
    )

    page = response.get_data(as_text=True)
    assert "读数倒走" in page
    assert "1 处错误，未保存" in page


def test_allocation_order_saved(login, demo):
    admin = login("tj_admin")

    admin.post("/billing/allocation", data={"order": "current_first", "late_fees_last": "1"})
    admin.post("/billing/allocation", data={"order": "newest", "late_fees_last": ""})

    policy = db.session.scalar(sa.select(AllocationPolicy).filter_by(company_id=demo["TJ"].id))
    assert (policy.order, policy.late_fees_last) == ("current_first", True)
    page = admin.get("/billing/allocation").get_data(as_text=True)
    assert "先还本季" in page
    assert 'name="late_fees_last" value="1" checked' in page


def test_nav_links_follow_permissions(login, demo):
    clerk = login("tj_clerk").get("/").get_data(as_text=True)
    admin = login("tj_admin").get("/").get_data(as_text=True)

    assert "/billing/arrears" in clerk
    assert "/billing/meter-readings" in clerk
    assert "/billing/what-if" not in clerk
    assert "/billing/what-if" in admin


