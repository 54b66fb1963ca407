"""Outbox events are written in the transaction of the change they report, and only then."""

import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.services import run_billing
from app.extensions import db
from app.invoicing.services import print_receipt
from app.messaging.events import EventError, emit
from app.messaging.models import OutboxEvent
from app.network.models import Account
from app.payments.services import PaymentError, collect_payment
from app.processes.models import ProcessInstance
from tests.processes.conftest import open_task, start_request, submit_task, user


def _events(event_type):
    rows = db.session.scalars(sa.select(OutboxEvent).filter_by(event_type=event_type).order_by(OutboxEvent.id)).all()
    return [(row, json.loads(row.payload)) for row in rows]


def test_billing_run_writes_one_bill_event_per_account(metered_qd, backend):
    # 92.17 m² at QD: usable area blank, so 92.17 × 0.75 = 69.1275 m² × 30.40 = 2101.476 → 2101.48 each.
    # On PostgreSQL the set-based path writes them; on SQLite the per-account loop.
    events = _events("bill.issued")
    assert len(events) == 5
    assert {payload["account_no"] for _, payload in events} == {a.account_no for a in metered_qd}
    for row, payload in events:
        assert payload["amount"] == "2101.48"
        assert payload["season"] == "2025-2026"
        assert payload["prorated"] is False
        assert row.schema_version == 1
        assert row.published_at is None
        assert len(row.event_id) == 36
    assert len({row.event_id for row, _ in events}) == 5

    run_billing("QD", "2025-2026")
    assert len(_events("bill.issued")) == 5


def test_payment_event_commits_with_the_payment_and_not_without(metered_qd):
    account = metered_qd[0]
    cashier = user("qd_cashier")
    payment = collect_payment(account, "1000.00", "cash", cashier)

    [(row, payload)] = _events("payment.posted")
    assert row.key == f"payment.posted:{payment.id}"
    assert payload["receipt_no"] == payment.receipt_no
    assert payload["amount"] == "1000.00"
    assert payload["allocations"] == [{"season": "2025-2026", "amount": "1000.00"}]
    assert payload["credit"] == "0.00"
    assert payload["paid_at"].endswith("+08:00")

    # 2101.48 − 1000.00 = 1101.48 still owed, so 1101.49 is refused and nothing is stored.
    with pytest.raises(PaymentError):
        collect_payment(account, "1101.49", "cash", cashier)
    assert len(_events("payment.posted")) == 1


def test_receipt_first_print_issues_the_invoice_event_once(metered_qd):
    payment = collect_payment(metered_qd[0], "2101.48", "card", user("qd_cashier"))
    print_receipt(payment)
    print_receipt(payment)

    [(row, payload)] = _events("invoice.issued")
    assert payload["document_type"] == "receipt"
    assert payload["document_no"] == payment.receipt_no
    assert payload["amount"] == "2101.48"


def test_suspension_reports_valve_change_and_finish(demo, make_account, login):  # noqa: F811
    # TJ residential 87.35 m² × 25.00 = 2183.75, decided by the company approver.
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = db.session.scalar(sa.select(ProcessInstance).filter_by(account_id=account.id))
    response = submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve", "comment": ""})
    assert response.status_code == 302
    assert _events("process.finished") == []

    field_task = open_task(instance.id, "valve_close")
    response = submit_task(login("tj_field"), field_task.id, {"result": "sealed", "seal_no": "TJ-2025-0009", "comment": ""})
    assert response.status_code == 302

    [(valve, valve_data)] = _events("valve.state_changed")
    assert valve_data == {
        "account_id": account.id, "account_no": account.account_no, "previous_state": "open", "valve_state": "sealed",
        "instance_id": instance.id, "process_type": "suspension",
    }
    [(finished, finished_data)] = _events("process.finished")
    assert finished_data["status"] == "completed"
    assert finished_data["instance_id"] == instance.id
    assert valve.id < finished.id
    assert db.session.get(Account, account.id).valve_state == "sealed"


def test_emit_refuses_floats_and_unknown_types(demo):
    with pytest.raises(EventError):
        emit(demo["TJ"].id, "payment.posted", "x", {"amount": 1.5})
    with pytest.raises(EventError):
        emit(demo["TJ"].id, "bill.paid", "x", {})
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(OutboxEvent.id))) == 0


def test_decimal_is_written_as_plain_string(demo):
    event = emit(demo["TJ"].id, "payment.posted", "y", {"amount": Decimal("12.50"), "tiny": Decimal("1E-7")})
    db.session.commit()
    assert json.loads(event.payload) == {"amount": "12.50", "tiny": "0.0000001"}
