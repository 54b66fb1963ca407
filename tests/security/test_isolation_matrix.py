"""Tenant isolation across every route: TJ staff never see or change a QD row.

The route list comes from the app's URL map, so a new route is covered without editing
this file; a route with a parameter this file cannot fill fails the test until a finder
for that parameter is added to OBJECT_FINDERS.
"""

import io
import re

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from app.extensions import db
from app.ledger.models import LedgerImport
from app.network.models import Account
from app.org.models import Role, User
from app.tariffs.models import Tariff

TJ_USERS = ["tj_admin", "tj_clerk", "tj_approver", "tj_cashier", "tj_field", "tj_finance"]


def _first(model, company_id):
    return db.session.scalar(sa.select(model.id).filter_by(company_id=company_id).order_by(model.id).limit(1))


def _model(path):
    module, name = path.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


class PathValue(str):
    """A fixed value for a URL parameter that names no row (e.g. a process type)."""


# URL parameter name -> model whose QD row the parameter should point at, or a PathValue.
OBJECT_FINDERS = {
    "account_id": Account,
    "import_id": LedgerImport,
    "tariff_id": Tariff,
    "user_id": User,
    "role_id": Role,
    "payment_id": "app.payments.models.Payment",
    "refund_id": "app.payments.models.Refund",
    "task_id": "app.processes.models.HumanTask",
    "instance_id": "app.processes.models.ProcessInstance",
    "process_type": PathValue("suspension"),
    "company_code": PathValue("QD"),
    "visit_id": "app.fieldwork.models.FieldVisit",
    "photo_id": "app.fieldwork.models.FieldPhoto",
    "decision_id": PathValue("suspension_escalation"),
    "invoice_id": "app.invoicing.models.Invoice",
    "item_id": "app.payments.models.ReconciliationItem",
    "voucher_id": "app.messaging.models.FinanceVoucher",
    "review_id": "app.messaging.models.MeterReadingReview",
    "code": PathValue("QD"),
    "community_id": "app.network.models.Community",
    "view": PathValue("companies"),
    "fmt": PathValue("json"),
}


@pytest.fixture
def qd_world(import_fixture, demo):
    """Both companies with accounts, a QD import, a QD payment with a cash refund and a QD suspension request."""
    from app.billing.services import run_billing
    from app.payments.refunds import request_refund
    from app.payments.services import collect_payment
    from app.processes.services import start_suspension

    import_fixture("TJ", "TJ-shared.xlsx")
    import_fixture("QD", "QD-shared.xlsx")
    run_billing("QD", "2025-2026")
    qd = demo["QD"]
    db.session.add(LedgerImport(company_id=qd.id, filename="qd.xlsx", sha256="0" * 64, content=b"x", status="rejected",
                                errors=[{"excel_row": 3, "column": "小区", "value": "胶州湾秘密", "reason": "x"}]))
    db.session.commit()
    account = db.session.scalar(
        sa.select(Account).filter_by(company_id=qd.id, billing_status="normal", user_type="non_residential").limit(1)
    )
    cashier = db.session.scalar(sa.select(User).filter_by(username="qd_cashier"))
    clerk = db.session.scalar(sa.select(User).filter_by(username="qd_clerk"))
    payment = collect_payment(account, "100.00", "cash", cashier)
    request_refund(payment.id, "10.00", "重复缴费", cashier)
    start_suspension(account.id, clerk, "出租空置")
    _add_qd_field_work(qd, account)
    from datetime import date

    from app.messaging.vouchers import issue_voucher

    issue_voucher(qd, date(2025, 11, 15))
    from app.messaging.models import MeterReadingReview

    db.session.add(MeterReadingReview(
        company_id=qd.id, message_id="qd-review-1", account_no=account.account_no, read_at="2025-11-20T08:00:00+08:00",
        reading="1.000", reason="胶州湾秘密",
    ))
    db.session.commit()
    _qd_invoice_and_reconciliation(qd, payment, cashier)
    return qd


def _add_qd_field_work(qd, account):
    """A QD inspection visit with a submitted result and its photo."""
    from app.fieldwork.models import FieldPhoto, FieldSubmission, FieldVisit

    field = db.session.scalar(sa.select(User).filter_by(username="qd_field"))
    admin = db.session.scalar(sa.select(User).filter_by(username="qd_admin"))
    visit = FieldVisit(company_id=qd.id, account_id=account.id, assigned_to_id=field.id, created_by_id=admin.id, note="胶州湾秘密")
    db.session.add(visit)
    db.session.flush()
    submission = FieldSubmission(
        company_id=qd.id, submission_id="00000000-0000-4000-8000-000000000001", user_id=field.id, target_kind="visit",
        target_id=visit.id, account_id=account.id, values={"comment": "胶州湾秘密"},
    )
    db.session.add(submission)
    db.session.flush()
    db.session.add(FieldPhoto(
        company_id=qd.id, submission_id=submission.id, account_id=account.id, filename="胶州湾秘密.png",
        content_type="image/png", sha256="0" * 64, size=3, content=b"\x89PN",
    ))
def _qd_invoice_and_reconciliation(qd, payment, cashier):
    """A QD paper invoice and a QD reconciliation difference, for the invoice and reconciliation routes."""
    from datetime import date

    from app.invoicing.issuing import record_paper_invoice
    from app.payments.models import ReconciliationItem, ReconciliationRun, WechatMerchant

    record_paper_invoice(payment, "3700221130", "00012345", cashier)
    db.session.add(WechatMerchant(company_id=qd.id, sub_mchid="1900000112"))
    run = ReconciliationRun(company_id=qd.id, channel="wechatpay", merchant_id="1900000112", day=date(2025, 12, 3), runs=1)
    db.session.add(run)
    db.session.flush()
    db.session.add(ReconciliationItem(company_id=qd.id, run_id=run.id, line_kind="payment", channel_txn_id="4200000112",
                                      difference="missing_ours", their_amount="12.00"))
    db.session.commit()


def _snapshot(company_id):
    """Every company-owned row of a company, as plain tuples."""
    from app.tenancy import CompanyOwned

    rows = {}
    for mapper in db.Model.registry.mappers:
        cls = mapper.class_
        if issubclass(cls, CompanyOwned) and hasattr(cls, "__table__"):
            table = cls.__table__
            rows[table.name] = db.session.execute(sa.select(table).where(table.c.company_id == company_id)).all()
    return rows


def _qd_markers(qd):
    """Strings that must never appear in a TJ user's response."""
    names = db.session.scalars(sa.select(Account.customer_name).filter_by(company_id=qd.id).limit(50)).all()
    # A name inside a TJ account's name may appear on TJ's own lists (the collection list shows all of them).
    tj_names = set(db.session.scalars(sa.select(Account.customer_name).where(Account.company_id != qd.id)))
    names = [name for name in names if not any(name in tj_name for tj_name in tj_names)]
    numbers = db.session.scalars(sa.select(Account.account_no).filter_by(company_id=qd.id).limit(50)).all()
    return [qd.name, "胶州湾秘密", *[n for n in names if len(n) >= 2], *numbers]


def _body_text(response):
    """The text a response shows: HTML as is, an Excel export's cell values, nothing of a PDF."""
    if response.mimetype.startswith("application/pdf"):
        return ""
    if response.mimetype.endswith("spreadsheetml.sheet"):
        workbook = load_workbook(io.BytesIO(response.data), read_only=True)
        return " ".join(str(value) for sheet in workbook for row in sheet.iter_rows(values_only=True) for value in row if value)
    return response.get_data(as_text=True)


def _urls(app, qd_id):
    for rule in app.url_map.iter_rules():
        # Logging out would end the session the loop keeps using; it touches no company rows.
        if rule.endpoint in ("static", "org.logout"):
            continue
        values = {}
        # A route whose parameters are all PathValues names no QD row, so TJ staff may reach their own data there.
        targets_object = False
        for argument in rule.arguments:
            finder = OBJECT_FINDERS.get(argument)
            assert finder is not None, f"Route {rule.rule} has parameter {argument}; add it to OBJECT_FINDERS."
            if isinstance(finder, PathValue):
                values[argument] = finder
                continue
            targets_object = True
            model = _model(finder) if isinstance(finder, str) else finder
            object_id = _first(model, qd_id)
            assert object_id is not None, f"No QD {model.__name__} exists to test {rule.rule}."
            values[argument] = object_id
        url = rule.rule
        for argument, value in values.items():
            url = re.sub(rf"<(?:[a-z]+:)?{argument}>", str(value), url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, url, method, targets_object


def test_tj_staff_never_reach_qd_rows(app_ctx, qd_world, login):
    qd = qd_world
    before = _snapshot(qd.id)
    markers = _qd_markers(qd)
    clients = {username: login(username) for username in TJ_USERS}
    qd_account_no = db.session.scalar(sa.select(Account.account_no).filter_by(company_id=qd.id).limit(1))
    query = {"company": "QD", "q": qd_account_no, "season": "2025-2026"}
    # A page may echo the user's own query back (the search box does); that is not a leak.
    markers = [m for m in markers if m != qd_account_no]
    checked = 0

    for rule, url, method, targets_object in _urls(app_ctx, qd.id):
        for username, client in clients.items():
            response = client.open(
                url, method=method, query_string=query, data={"company_id": qd.id, "decision": "approve", "amount": "1"}
            )
            body = _body_text(response)
            assert response.status_code < 500, f"{username} {method} {url}: {response.status_code}"
            if targets_object:
                assert response.status_code in (302, 400, 403, 404, 405), f"{username} {method} {url}: {response.status_code}"
            leaked = [m for m in markers if m and m in body]
            assert not leaked, f"{username} {method} {url} shows QD data: {leaked[:3]}"
            checked += 1

    db.session.expire_all()
    assert _snapshot(qd.id) == before
    assert checked > 100
