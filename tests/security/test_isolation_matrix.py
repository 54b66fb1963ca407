"""Tenant isolation across every route: no company's staff see or change another company's row.

Every role of TJ is sent at QD's rows and every role of QD at TJ's rows. The headquarters
roles may read every company, so they are sent at both and must change no company row.

The route list comes from the app's URL map, so a new route is covered without editing
this file; a route with a parameter this file cannot fill fails the test until a finder
for that parameter is added to OBJECT_FINDERS.
"""

import io
import re

import pytest
import sqlalchemy as sa
from openpyxl import Workbook, load_workbook

from app.extensions import db
from app.ledger.models import LedgerImport
from app.network.models import Account
from app.org.models import Role, User
from app.tariffs.models import Tariff

COMPANY_ROLES = ["admin", "clerk", "approver", "cashier", "field", "finance"]
HQ_USERS = ["hq_admin", "hq_approver", "hq_auditor"]
# Text planted in each company's free-text fields, which must never reach another company's staff.
SECRETS = {"TJ": "海河秘密", "QD": "胶州湾秘密"}
# Per-company values for columns whose unique key would otherwise clash across companies.
UNIQUE_SUFFIX = {"TJ": "1", "QD": "2"}


def _staff(code):
    return [f"{code.lower()}_{role}" for role in COMPANY_ROLES]


# (victim company, users sent at its rows): every role of one company against the other.
DIRECTIONS = [pytest.param("QD", _staff("TJ"), id="TJ->QD"), pytest.param("TJ", _staff("QD"), id="QD->TJ")]


def _first(model, company_id):
    return db.session.scalar(sa.select(model.id).filter_by(company_id=company_id).order_by(model.id).limit(1))


def _model(path):
    module, name = path.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


class PathValue(str):
    """A fixed value for a URL parameter that names no row (e.g. a process type)."""


class VictimCode(PathValue):
    """A URL parameter that takes the victim company's code."""


# URL parameter name -> model whose victim-company row the parameter should point at, or a PathValue.
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
    "company_code": VictimCode("company_code"),
    "visit_id": "app.fieldwork.models.FieldVisit",
    "photo_id": "app.fieldwork.models.FieldPhoto",
    "decision_id": PathValue("suspension_escalation"),
    "invoice_id": "app.invoicing.models.Invoice",
    "item_id": "app.payments.models.ReconciliationItem",
    "voucher_id": "app.messaging.models.FinanceVoucher",
    "review_id": "app.messaging.models.MeterReadingReview",
    "code": VictimCode("code"),
    "community_id": "app.network.models.Community",
    "view": PathValue("companies"),
    "fmt": PathValue("json"),
}


@pytest.fixture
def world(import_fixture, demo):
    """TJ and QD, each with accounts, a rejected import, a payment with a cash refund, a suspension request,
    field work, a voucher, a meter-reading review, an invoice and a reconciliation difference."""
    from app.billing.services import run_billing

    import_fixture("TJ", "TJ-shared.xlsx")
    import_fixture("QD", "QD-shared.xlsx")
    for code in ("TJ", "QD"):
        run_billing(code, "2025-2026")
        _fill_company(demo[code])
    return demo


def _fill_company(company):
    from datetime import date

    from app.messaging.models import MeterReadingReview
    from app.messaging.vouchers import issue_voucher
    from app.payments.refunds import request_refund
    from app.payments.services import collect_payment
    from app.processes.services import start_suspension

    secret, prefix = SECRETS[company.code], company.code.lower()
    db.session.add(LedgerImport(company_id=company.id, filename=f"{prefix}.xlsx", sha256="0" * 64, content=_workbook(secret),
                                status="rejected", errors=[{"excel_row": 3, "column": "小区", "value": secret, "reason": "x"}]))
    db.session.commit()
    account = db.session.scalar(
        sa.select(Account).filter_by(company_id=company.id, billing_status="normal", user_type="non_residential").limit(1)
    )
    assert account is not None, f"{company.code}'s fixture ledger needs a normal non-residential account."
    cashier = db.session.scalar(sa.select(User).filter_by(username=f"{prefix}_cashier"))
    clerk = db.session.scalar(sa.select(User).filter_by(username=f"{prefix}_clerk"))
    payment = collect_payment(account, "100.00", "cash", cashier)
    request_refund(payment.id, "10.00", "重复缴费", cashier)
    start_suspension(account.id, clerk, "出租空置")
    _add_field_work(company, account)
    issue_voucher(company, date(2025, 11, 15))
    db.session.add(MeterReadingReview(
        company_id=company.id, message_id=f"{prefix}-review-1", account_no=account.account_no,
        read_at="2025-11-20T08:00:00+08:00", reading="1.000", reason=secret,
    ))
    db.session.commit()
    _invoice_and_reconciliation(company, payment, cashier)


def _workbook(secret):
    """A small workbook whose third row contains `secret`, so HQ staff can download its error report."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["小区"])
    sheet.append(["甲"])
    sheet.append([secret])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _add_field_work(company, account):
    """An inspection visit with a submitted result and its photo."""
    from app.fieldwork.models import FieldPhoto, FieldSubmission, FieldVisit

    secret, prefix = SECRETS[company.code], company.code.lower()
    field = db.session.scalar(sa.select(User).filter_by(username=f"{prefix}_field"))
    admin = db.session.scalar(sa.select(User).filter_by(username=f"{prefix}_admin"))
    visit = FieldVisit(company_id=company.id, account_id=account.id, assigned_to_id=field.id, created_by_id=admin.id, note=secret)
    db.session.add(visit)
    db.session.flush()
    submission = FieldSubmission(
        company_id=company.id, submission_id=f"00000000-0000-4000-8000-00000000000{UNIQUE_SUFFIX[company.code]}",
        user_id=field.id, target_kind="visit", target_id=visit.id, account_id=account.id, values={"comment": secret},
    )
    db.session.add(submission)
    db.session.flush()
    db.session.add(FieldPhoto(
        company_id=company.id, submission_id=submission.id, account_id=account.id, filename=f"{secret}.png",
        content_type="image/png", sha256="0" * 64, size=3, content=b"\x89PN",
    ))


def _invoice_and_reconciliation(company, payment, cashier):
    """An invoice and a reconciliation difference, for the invoice and reconciliation routes."""
    from datetime import date

    from app.invoicing.issuing import record_paper_invoice
    from app.payments.models import ReconciliationItem, ReconciliationRun, WechatMerchant

    suffix = UNIQUE_SUFFIX[company.code]
    # An e-invoice company already got a pending invoice from collect_payment.
    if company.invoice_mode == "paper_tax_invoice":
        record_paper_invoice(payment, "3700221130", f"0001234{suffix}", cashier)
    merchant = f"190000011{suffix}"
    db.session.add(WechatMerchant(company_id=company.id, sub_mchid=merchant))
    run = ReconciliationRun(company_id=company.id, channel="wechatpay", merchant_id=merchant, day=date(2025, 12, 3), runs=1)
    db.session.add(run)
    db.session.flush()
    db.session.add(ReconciliationItem(company_id=company.id, run_id=run.id, line_kind="payment",
                                      channel_txn_id=f"420000011{suffix}", difference="missing_ours", their_amount="12.00"))
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


def _markers(victim):
    """Strings of the victim company that must never appear in another company's response."""
    names = db.session.scalars(sa.select(Account.customer_name).filter_by(company_id=victim.id).limit(50)).all()
    # A name inside another company's account name may appear on that company's own lists.
    other_names = set(db.session.scalars(sa.select(Account.customer_name).where(Account.company_id != victim.id)))
    names = [name for name in names if not any(name in other for other in other_names)]
    numbers = db.session.scalars(sa.select(Account.account_no).filter_by(company_id=victim.id).limit(50)).all()
    return [victim.name, SECRETS[victim.code], *[n for n in names if len(n) >= 2], *numbers]


def _body_text(response):
    """The text a response shows: HTML as is, an Excel export's cell values, nothing of a PDF."""
    if response.mimetype.startswith("application/pdf"):
        return ""
    if response.mimetype.endswith("spreadsheetml.sheet"):
        workbook = load_workbook(io.BytesIO(response.data), read_only=True)
        return " ".join(str(value) for sheet in workbook for row in sheet.iter_rows(values_only=True) for value in row if value)
    return response.get_data(as_text=True)


def _urls(app, victim):
    """(rule, url, method, targets_object) for every route, with the victim's row ids and code in the URL."""
    for rule in app.url_map.iter_rules():
        # Logging out would end the session the loop keeps using; it touches no company rows.
        if rule.endpoint in ("static", "org.logout"):
            continue
        values = {}
        # A route whose parameters are all PathValues names no victim row, so staff may reach their own data there.
        targets_object = False
        for argument in rule.arguments:
            finder = OBJECT_FINDERS.get(argument)
            assert finder is not None, f"Route {rule.rule} has parameter {argument}; add it to OBJECT_FINDERS."
            if isinstance(finder, VictimCode):
                values[argument] = victim.code
                continue
            if isinstance(finder, PathValue):
                values[argument] = finder
                continue
            targets_object = True
            model = _model(finder) if isinstance(finder, str) else finder
            object_id = _first(model, victim.id)
            assert object_id is not None, f"No {victim.code} {model.__name__} exists to test {rule.rule}."
            values[argument] = object_id
        url = rule.rule
        for argument, value in values.items():
            url = re.sub(rf"<(?:[a-z]+:)?{argument}>", str(value), url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, url, method, targets_object


def _searched_account_no(victim):
    """The victim's account number that every request sends as its search query."""
    return db.session.scalar(sa.select(Account.account_no).filter_by(company_id=victim.id).order_by(Account.id).limit(1))


def _request(client, victim, url, method):
    """Send one route with the victim's ids in the query string and the form."""
    query = {"company": victim.code, "q": _searched_account_no(victim), "season": "2025-2026"}
    return client.open(url, method=method, query_string=query, data={"company_id": victim.id, "decision": "approve", "amount": "1"})


@pytest.mark.parametrize(("victim_code", "attackers"), DIRECTIONS)
def test_staff_never_reach_other_company(app_ctx, world, login, victim_code, attackers):
    victim = world[victim_code]
    before = _snapshot(victim.id)
    # A page may echo the user's own query back (the search box does); that is not a leak.
    markers = [m for m in _markers(victim) if m != _searched_account_no(victim)]
    clients = {username: login(username) for username in attackers}
    checked = 0

    for _rule, url, method, targets_object in _urls(app_ctx, victim):
        for username, client in clients.items():
            response = _request(client, victim, url, method)
            body = _body_text(response)
            assert response.status_code < 500, f"{username} {method} {url}: {response.status_code}"
            if targets_object:
                assert response.status_code in (302, 400, 403, 404, 405), f"{username} {method} {url}: {response.status_code}"
            leaked = [m for m in markers if m and m in body]
            assert not leaked, f"{username} {method} {url} shows {victim.code} data: {leaked[:3]}"
            checked += 1

    db.session.expire_all()
    assert _snapshot(victim.id) == before
    assert checked > 100


# (endpoint, method, HQ user) -> the tables of the target company that this request is meant to change.
HQ_EXPECTED_CHANGES = {
    # The group administrator grants functions to the subsidiary named in the form. With no
    # "functions" field the request revokes them all, and the change is written to the audit log.
    ("admin.companies", "POST", "hq_admin"): {"company_function", "auth_event"},
}


def test_hq_roles_change_no_rows(app_ctx, world, login):
    """Check that HQ roles sent at TJ's and QD's rows change no row of either company.

    The requests in HQ_EXPECTED_CHANGES are meant to change rows, so they run last and each is checked on its own.
    """
    companies = [world["TJ"], world["QD"]]
    clients = {username: login(username) for username in HQ_USERS}
    requests = [
        (victim, rule, url, method, username)
        for victim in companies
        for rule, url, method, _targets_object in _urls(app_ctx, victim)
        for username in clients
    ]
    expected = [r for r in requests if (r[1].endpoint, r[3], r[4]) in HQ_EXPECTED_CHANGES]
    before = {c.code: _snapshot(c.id) for c in companies}

    for victim, _rule, url, method, username in [r for r in requests if r not in expected]:
        response = _request(clients[username], victim, url, method)
        assert response.status_code < 500, f"{username} {method} {url}: {response.status_code}"

    db.session.expire_all()
    for company in companies:
        after = _snapshot(company.id)
        changed = sorted(t for t in after if after[t] != before[company.code][t])
        assert not changed, f"HQ requests changed {company.code} rows in {changed}"

    for victim, rule, url, method, username in expected:
        before = {c.code: _snapshot(c.id) for c in companies}
        response = _request(clients[username], victim, url, method)
        assert response.status_code < 500, f"{username} {method} {url}: {response.status_code}"
        db.session.expire_all()
        for company in companies:
            after = _snapshot(company.id)
            changed = {t for t in after if after[t] != before[company.code][t]}
            permitted = HQ_EXPECTED_CHANGES[(rule.endpoint, method, username)] if company is victim else set()
            assert changed <= permitted, f"{username} {method} {url} changed {company.code} rows in {sorted(changed)}"
    assert len(requests) > 100
