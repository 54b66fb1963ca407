"""Findings of a break test: each test fails while its bug is present.

Run with: bin/test tests/security/test_break_findings.py
"""

import io
import threading
import time
import zipfile

import openpyxl
import pytest
import sqlalchemy as sa

import app.payments.services as payment_services
from app.extensions import db
from app.network.models import Account
from app.payments.models import Payment

LEDGER_HEADER = ["原用户编号", "户主姓名", "联系电话", "小区名称", "楼号", "单元", "房号", "建筑面积", "用户类型", "供热状态", "换热站", "热源", "往年欠费", "备注"]


def _ledger_row(n, name="张三", area="95.32"):
    return [f"TJ-9{n:06d}", name, "13800000000", "柳林里", "15号楼", 4, str(600 + n), area, "住宅", "正常", "咸水沽站", "津南热电厂", None, ""]


def _workbook_bytes(sheets):
    """sheets: list of (title, rows); the first becomes the active sheet."""
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets:
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _billed_tj(import_fixture):
    from app.billing.services import run_billing

    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    db.session.commit()


def _account(legacy_no):
    return db.session.scalar(sa.select(Account).filter_by(legacy_no=legacy_no))


def _post_in_threads(app, posts, late):
    """Send (name, client, path, data) posts from threads, starting `late` 0.2 s before the others."""
    results = {}

    def worker(name, client, path, data):
        with app.app_context():
            results[name] = client.post(path, data=data).status_code

    threads = [threading.Thread(target=worker, name=name, args=(name, client, path, data)) for name, client, path, data in posts]
    for thread in threads:
        thread.start()
        if thread.name == late:
            time.sleep(0.2)
    for thread in threads:
        thread.join(60)
    return results


def _slow_for_late_thread(function, seconds=1.0):
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        if threading.current_thread().name == "late":
            time.sleep(seconds)
        return result

    return wrapper


# --- Session ---------------------------------------------------------------------------


def test_login_next_with_tab_is_no_open_redirect(demo, client):
    # "/\t/evil.example" passes the startswith("/") and not startswith("//") check; the tab is
    # dropped on the way out and the browser receives Location: //evil.example.
    response = client.post("/login?next=/%09/evil.example", data={"username": "tj_clerk", "password": "heatflow-demo"})

    location = response.headers.get("Location", "")
    assert response.status_code == 302
    assert not location.replace("\t", "").startswith("//"), f"login redirects off-site to {location!r}"


# --- NUL bytes: 500 on PostgreSQL ------------------------------------------------------


def test_nul_byte_in_login_username_is_not_500(demo, client):
    response = client.post("/login", data={"username": "tj_\x00clerk", "password": "x"})

    assert response.status_code in (400, 401), f"NUL in the login name gave HTTP {response.status_code}"


def test_nul_byte_in_account_search_is_not_500(demo, login):
    response = login("tj_clerk").get("/accounts/?q=%00abc")

    assert response.status_code in (200, 400), f"NUL in the search query gave HTTP {response.status_code}"


def test_nul_byte_in_payer_name_is_not_500(import_fixture, login):
    _billed_tj(import_fixture)
    account = _account("TJ-0001001")

    response = login("tj_cashier").post(
        f"/payments/accounts/{account.id}",
        data={"amount": "1.00", "method": "cash", "payer_name": "张\x00三", "request_token": "nul-payer"},
    )

    assert response.status_code in (302, 400), f"NUL in the payer name gave HTTP {response.status_code}"


# --- Concurrent counter payments (SQLite, the default configuration) -------------------


def test_concurrent_payments_cannot_overpay_account(app_ctx, import_fixture, login, monkeypatch):
    _billed_tj(import_fixture)
    account = _account("TJ-0001001")
    owed = payment_services.amount_owed(account).total
    amount = str((owed * 6 / 10).quantize(payment_services.CENT))
    # Widen the window between reading what is owed and posting the payment.
    monkeypatch.setattr(payment_services, "amount_owed", _slow_for_late_thread(payment_services.amount_owed))
    path = f"/payments/accounts/{account.id}"

    results = _post_in_threads(app_ctx, [
        ("late", login("tj_cashier"), path, {"amount": amount, "method": "cash", "request_token": "late"}),
        ("early", login("tj_cashier"), path, {"amount": amount, "method": "cash", "request_token": "early"}),
    ], late="late")

    db.session.expire_all()
    collected = db.session.scalar(sa.select(sa.func.sum(Payment.amount)).filter_by(account_id=account.id))
    assert collected <= owed, f"two concurrent payments ({results}) collected {collected} on an account owing {owed}"


def test_concurrent_payments_on_two_accounts_both_succeed(app_ctx, import_fixture, login, monkeypatch):
    _billed_tj(import_fixture)
    one, two = _account("TJ-0001001"), _account("TJ-0001002")
    first = login("tj_cashier").post(f"/payments/accounts/{two.id}", data={"amount": "1.00", "method": "cash", "request_token": "first"})
    assert first.status_code == 302
    # The late thread keeps the receipt counter row locked for a second after taking its number.
    monkeypatch.setattr(payment_services, "_take_counter_number", _slow_for_late_thread(payment_services._take_counter_number))

    results = _post_in_threads(app_ctx, [
        ("late", login("tj_cashier"), f"/payments/accounts/{one.id}", {"amount": "1.00", "method": "cash", "request_token": "late"}),
        ("early", login("tj_cashier"), f"/payments/accounts/{two.id}", {"amount": "1.00", "method": "cash", "request_token": "early"}),
    ], late="late")

    assert results == {"late": 302, "early": 302}, f"two cashiers paying two accounts at once got {results}"


# --- Ledger import -----------------------------------------------------------------------


def test_ledger_max_rows_setting_is_honoured(demo, app_ctx, monkeypatch):
    from app.ledger.services import import_ledger

    monkeypatch.setitem(app_ctx.config, "LEDGER_MAX_ROWS", 5)
    content = _workbook_bytes([("用户台账", [LEDGER_HEADER] + [_ledger_row(n) for n in range(1, 41)])])

    result = import_ledger(demo["TJ"], content, "big.xlsx")

    assert not result.ok, f"LEDGER_MAX_ROWS=5 but a 40-row ledger was imported: {result.summary()}"


def test_ledger_row_cap_covers_every_sheet():
    from app.ledger.parser import LedgerFileError, parse_ledger

    content = _workbook_bytes([
        ("用户台账", [LEDGER_HEADER, _ledger_row(1)]),
        ("换热站", [["换热站名称", "热源名称"]] + [[f"站{n}", "津南热电厂"] for n in range(200)]),
    ])

    with pytest.raises(LedgerFileError):
        parse_ledger(content, max_rows=50)
        pytest.fail("a 200-row sheet after the ledger sheet was read in full despite max_rows=50")


def test_ledger_overlong_customer_name_is_a_row_error(demo):
    from app.ledger.services import import_ledger

    content = _workbook_bytes([("用户台账", [LEDGER_HEADER, _ledger_row(1, name="张" * 101)])])

    try:
        result = import_ledger(demo["TJ"], content, "long-name.xlsx")
    except Exception as error:  # PostgreSQL: value too long for character varying(100)
        pytest.fail(f"a 101-character 户主姓名 crashed the import instead of being reported: {error!r}"[:300])
    assert not result.ok and result.errors, "a 101-character 户主姓名 (column is 100) was imported without a row error"


def test_ledger_rejects_workbook_that_expands_enormously(demo):
    from app.ledger.services import import_ledger

    content = _workbook_bytes([("用户台账", [LEDGER_HEADER, _ledger_row(1)])])
    source = zipfile.ZipFile(io.BytesIO(content))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                big = b'<row r="9"><c r="N9" t="inlineStr"><is><t>' + b"A" * (48 * 1024 * 1024) + b"</t></is></c></row>"
                data = data.replace(b"</sheetData>", big + b"</sheetData>")
            bomb.writestr(item.filename, data)
    assert len(buffer.getvalue()) < 1024 * 1024

    result = import_ledger(demo["TJ"], buffer.getvalue(), "bomb.xlsx")

    assert result.file_error, "a <1 MB upload that inflates to 48 MB of sheet XML was read in full and imported"


def test_error_report_marks_cell_on_ledger_sheet_when_it_is_not_first():
    from app.ledger.parser import parse_ledger
    from app.ledger.report import marked_workbook

    bad = _ledger_row(1, area="abc")
    content = _workbook_bytes([("热源", [["热源名称", "热源类型"], ["津南热电厂", "热电联产"]]), ("用户台账", [LEDGER_HEADER, bad])])
    parsed = parse_ledger(content)
    errors = [{"excel_row": e.excel_row, "column": e.column, "value": e.value, "reason": e.reason} for e in parsed.errors]
    assert errors, "the bad area should be a row error"

    report = openpyxl.load_workbook(io.BytesIO(marked_workbook(content, errors)))

    cell = report["用户台账"]["H2"]
    assert cell.comment is not None, "the report does not mark the bad 建筑面积 cell because it marks the first sheet (热源)"


HUGE_ID = "99999999999999999999999"


def _user_id(username):
    return db.session.scalar(sa.text('select id from "user" where username = :name'), {"name": username})


@pytest.mark.parametrize("value", ["²", HUGE_ID])
def test_odd_ids_in_admin_forms_are_not_500(demo, login, value):
    admin = login("tj_admin")
    clerk_id = _user_id("tj_clerk")

    roles = admin.post(f"/admin/users/{clerk_id}/roles", data={"role_ids": value})
    role = admin.post("/admin/roles", data={"role_id": value, "code": "x", "name": "x"})
    company = login("hq_admin").post("/admin/companies", data={"company_id": value, "functions": "billing"})

    assert roles.status_code == 302
    assert role.status_code in (302, 404)
    assert company.status_code == 404


@pytest.mark.parametrize("value", ["²", HUGE_ID])
def test_odd_form_ids_rejected(demo, login, value):
    admin = login("tj_admin")

    account = admin.post("/field/inspections", data={"account_id": value, "field_user_id": str(_user_id("tj_field"))})
    field_user = admin.post("/field/inspections", data={"account_id": "1", "field_user_id": value})
    delegate = login("tj_approver").post("/processes/tasks/1/delegate", data={"user_id": value, "comment": "x"})

    assert account.status_code in (303, 400)
    assert field_user.status_code in (303, 400)
    assert delegate.status_code in (303, 404)
