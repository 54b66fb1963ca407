"""Red-letter invoices when an approved waiver lowers a season that was paid and invoiced."""

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from app.billing.invariants import find_invariant_breaks
from app.billing.late_fees import late_fee_receivable, post_late_fee
from app.billing.services import season_receivable
from app.extensions import db
from app.invoicing.issuing import record_paper_invoice, season_invoiced
from app.invoicing.models import Invoice
from app.payments.services import collect_payment
from app.processes.models import ProcessEvent
from app.tariffs.services import get_season
from app.tasks.invoicing import issue_pending_e_invoices_task
from tests.processes.conftest import instance_of, open_task, start_process_request, submit_task


def _approve_waiver(login, account, amount, code="tj"):
    data = {"category": "hardship", "mode": "amount", "amount": amount, "percent": "", "evidence": "困难证明 2025-018", "comment": ""}
    assert start_process_request(login(f"{code}_clerk"), "waiver", account.id, data).status_code == 302
    instance = instance_of(account.id, "waiver")
    submit_task(login(f"{code}_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    submit_task(login(f"{code}_finance"), open_task(instance.id, "finance_review").id, {"decision": "approve", "comment": "复核无误"})
    db.session.expire_all()
    assert instance_of(account.id, "waiver").status == "completed"
    return instance


def _invoices(direction):
    db.session.expire_all()
    return db.session.scalars(sa.select(Invoice).where(Invoice.direction == direction).order_by(Invoice.id)).all()


def test_waiver_after_full_payment_reverses_excess(einvoicing, make_account, staff, login):
    # TJ 87.35 m² × 25.00 = 2183.75 paid and invoiced; a 200.00 waiver leaves 1983.75 owed,
    # so 2183.75 − 1983.75 = 200.00 is reversed by a red invoice.
    account = make_account("TJ", "87.35")
    collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
    [blue] = _invoices("blue")
    assert blue.status == "issued"

    instance = _approve_waiver(login, account, "200.00")

    [red] = _invoices("red")
    assert red.status == "pending"
    assert red.original_id == blue.id
    assert red.amount == Decimal("-200.00")
    assert red.tax_amount == Decimal("0.00")
    assert red.cause_id == instance.id
    assert "销售折让" in red.reason
    events = db.session.scalars(sa.select(ProcessEvent.event_type).where(ProcessEvent.instance_id == instance.id)).all()
    assert "red_invoice" in events

    assert issue_pending_e_invoices_task(older_than_seconds=0) == 1
    [red] = _invoices("red")
    assert red.status == "issued"
    assert red.pdf.startswith(b"%PDF")
    order = einvoicing.orders[red.order_no]["order"]
    assert order["invoiceType"] == "2"
    assert order["invoiceNum"] == blue.invoice_number
    assert order["invoiceDetail"][0]["taxIncludedAmount"] == "-200.00"


def test_waiver_within_unpaid_part_needs_no_red(einvoicing, make_account, staff, login):
    # 1000.00 of 2183.75 paid and invoiced; after a 200.00 waiver 1983.75 is owed, above 1000.00.
    account = make_account("TJ", "87.35")
    collect_payment(account, "1000.00", "cash", staff("tj_cashier"))
    _approve_waiver(login, account, "200.00")
    assert _invoices("red") == []


def test_taxed_partial_reversal(einvoicing, make_account, staff, login):
    # Non-residential 87.35 m² × 40.00 = 3494.00 paid; a 500.00 waiver leaves 2994.00 owed,
    # so 500.00 is reversed, with VAT 500.00 × 0.09 / 1.09 = 41.2844… → 41.28.
    account = make_account("TJ", "87.35", user_type="non_residential")
    collect_payment(account, "3494.00", "cash", staff("tj_cashier"))
    _approve_waiver(login, account, "500.00")
    [red] = _invoices("red")
    assert red.amount == Decimal("-500.00")
    assert red.tax_amount == Decimal("-41.28")
    assert red.lines[0].tax_rate == Decimal("0.09")


def test_paper_red_invoice_recorded_by_cashier(make_account, staff, login):
    # QD prints paper invoices: the red one waits for the cashier to print and record it.
    account = make_account("QD", "80.00")
    receivable = account_receivable(account)
    paid = receivable - Decimal("24.00")
    payment = collect_payment(account, str(paid), "cash", staff("qd_cashier"))
    record_paper_invoice(payment, "3700221130", "00012345", staff("qd_cashier"))
    # A 100.00 waiver leaves receivable − 100.00 owed, 100.00 − 24.00 = 76.00 below what was invoiced.
    _approve_waiver(login, account, "100.00", code="qd")
    [red] = _invoices("red")
    assert red.medium == "paper"
    assert red.status == "pending"
    assert red.amount == Decimal("-76.00")
    recorded = record_paper_invoice(payment, "3700221130", "00012346", staff("qd_cashier"), invoice=red)
    assert recorded.status == "issued"
    assert recorded.invoice_number == "00012346"


def account_receivable(account):
    return season_receivable(account.id, get_season(account.company_id, "2025-2026").id)


# -- late-fee waivers
# TJ 87.35 m² × 25.00 = 2183.75 for 2025-2026, with the late fee as of 2026-01-31 posted:
# 2183.75 × 0.002 × 31 = 135.3925 → 135.39. Paid in full, 2183.75 + 135.39 = 2319.14.


def _with_late_fee(make_account):
    account = make_account("TJ", "87.35")
    post_late_fee(account, get_season(account.company_id, "2025-2026"), date(2026, 1, 31))
    db.session.commit()
    return account


def _approve_late_fee_waiver(login, account, amount):
    data = {
        "target": "late_fee", "late_fee_season": "2025-2026", "category": "hardship", "mode": "amount", "amount": amount,
        "percent": "", "evidence": "困难证明 2026-007", "comment": "",
    }
    assert start_process_request(login("tj_clerk"), "waiver", account.id, data).status_code == 302
    instance = instance_of(account.id, "waiver")
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    submit_task(login("tj_finance"), open_task(instance.id, "finance_review").id, {"decision": "approve", "comment": "复核无误"})
    db.session.expire_all()
    assert instance_of(account.id, "waiver").status == "completed"
    return instance


def _assert_no_breaks(account):
    assert find_invariant_breaks(account.company_id, get_season(account.company_id, "2025-2026").id) == []


def _line_facts(invoice):
    return [(line.label, line.item, line.amount) for line in invoice.lines]


def test_blue_invoice_lists_paid_late_fee(einvoicing, make_account, staff):
    account = _with_late_fee(make_account)
    collect_payment(account, "2319.14", "cash", staff("tj_cashier"))

    [blue] = _invoices("blue")
    assert blue.amount == Decimal("2319.14")
    assert _line_facts(blue) == [
        ("2025-2026 供暖季热费", "charge", Decimal("2183.75")),
        ("2025-2026 供暖季滞纳金", "late_fee", Decimal("135.39")),
    ]
    order = einvoicing.orders[blue.order_no]["order"]
    assert [detail["goodsName"] for detail in order["invoiceDetail"]] == ["*供热*热费", "*供热*滞纳金"]
    assert [detail["taxIncludedAmount"] for detail in order["invoiceDetail"]] == ["2183.75", "135.39"]
    _assert_no_breaks(account)


def test_late_fee_waiver_reverses_invoiced_late_fee(einvoicing, make_account, staff, login):
    # 35.39 of the 135.39 paid and invoiced is waived: 100.00 is owed, so 35.39 is reversed.
    account = _with_late_fee(make_account)
    season = get_season(account.company_id, "2025-2026")
    collect_payment(account, "2319.14", "cash", staff("tj_cashier"))
    [blue] = _invoices("blue")
    _assert_no_breaks(account)

    instance = _approve_late_fee_waiver(login, account, "35.39")

    assert late_fee_receivable(account.id, season.id) == Decimal("100.00")
    _assert_no_breaks(account)
    [red] = _invoices("red")
    assert red.original_id == blue.id
    assert red.amount == Decimal("-35.39")
    assert red.tax_amount == Decimal("0.00")
    assert red.cause_id == instance.id
    assert _line_facts(red) == [("2025-2026 供暖季滞纳金", "late_fee", Decimal("-35.39"))]
    assert season_invoiced(account.id, season.id, "late_fee") == Decimal("100.00")
    assert season_invoiced(account.id, season.id) == Decimal("2183.75")
    events = db.session.scalars(sa.select(ProcessEvent.event_type).where(ProcessEvent.instance_id == instance.id)).all()
    assert "red_invoice" in events

    assert issue_pending_e_invoices_task(older_than_seconds=0) == 1
    [red] = _invoices("red")
    assert red.status == "issued"
    detail = einvoicing.orders[red.order_no]["order"]["invoiceDetail"]
    assert [(d["goodsName"], d["taxIncludedAmount"]) for d in detail] == [("*供热*滞纳金", "-35.39")]
    _assert_no_breaks(account)

    # HQ sees the waiver beside the charge waivers: 35.39 of 135.39 posted is 26.139 %.
    client = login("hq_auditor")
    waivers = client.get("/hq/dashboard/waivers.json?season=2025-2026").get_json()
    tj = next(row for row in waivers["rows"] if row["code"] == "TJ")
    assert tj["late_fee_waiver_amount"] == "35.39"
    assert tj["late_fee_waiver_count"] == 1
    assert tj["late_fee_waiver_rate"] == "26.139"
    assert tj["amount"] == "0.00"
    assert tj["count"] == 0
    communities = client.get("/hq/dashboard/companies/TJ.json?season=2025-2026").get_json()
    [community] = [row for row in communities["rows"] if row["code"] == "0001"]
    assert community["late_fee_waiver_amount"] == "35.39"
    assert community["late_fee_waiver_count"] == 1
    assert community["late_fee_waiver_rate"] == "26.139"
    assert community["waiver_amount"] == "0.00"


def test_unpaid_late_fee_waiver_needs_no_red(einvoicing, make_account, staff, login):
    # 1000.00 pays the season's charge before its late fee, so no late fee was invoiced.
    account = _with_late_fee(make_account)
    collect_payment(account, "1000.00", "cash", staff("tj_cashier"))
    [blue] = _invoices("blue")
    assert _line_facts(blue) == [("2025-2026 供暖季热费", "charge", Decimal("1000.00"))]

    _approve_late_fee_waiver(login, account, "35.39")

    assert _invoices("red") == []
    _assert_no_breaks(account)


def test_charge_waiver_leaves_late_fee_lines(einvoicing, make_account, staff, login):
    # A 200.00 charge waiver leaves 1983.75 owed against 2183.75 invoiced as charge: 200.00 is
    # reversed on the charge line. The 135.39 invoiced late fee is no part of that excess.
    account = _with_late_fee(make_account)
    collect_payment(account, "2319.14", "cash", staff("tj_cashier"))

    _approve_waiver(login, account, "200.00")

    [red] = _invoices("red")
    assert _line_facts(red) == [("2025-2026 供暖季热费", "charge", Decimal("-200.00"))]
    _assert_no_breaks(account)
