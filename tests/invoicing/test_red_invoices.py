"""Red-letter invoices when an approved waiver lowers a season that was paid and invoiced."""

from decimal import Decimal

import sqlalchemy as sa

from app.billing.services import season_receivable
from app.extensions import db
from app.invoicing.issuing import record_paper_invoice
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
