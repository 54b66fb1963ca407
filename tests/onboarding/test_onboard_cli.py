"""`flask heat onboard`: an acquired company from nothing to its first bills."""

from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.ledger.models import LedgerValueMap
from app.network.models import Account
from app.org.models import Company, Role, User
from app.processes.models import PROCESS_TYPES, ProcessModel
from tests.onboarding.legacy import SMALL_LEDGER, ledger_bytes, spec_toml


def _write(tmp_path, spec_text, rows=SMALL_LEDGER):
    spec = tmp_path / "zz.toml"
    spec.write_text(spec_text, encoding="utf-8")
    ledger = tmp_path / "zz.xlsx"
    ledger.write_bytes(ledger_bytes(rows))
    return spec, ledger


def test_onboard_creates_imports_and_bills(demo, tmp_path, app_ctx):
    spec, ledger = _write(tmp_path, spec_toml())
    runner = app_ctx.test_cli_runner()

    result = runner.invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger)])

    assert result.exit_code == 0, result.output
    company = db.session.scalar(sa.select(Company).filter_by(code="ZZ"))
    assert company.number == "21"
    assert company.group_id == demo["TJ"].group_id
    roles = db.session.scalars(sa.select(Role.code).filter_by(company_id=company.id)).all()
    assert sorted(roles) == sorted(["company_admin", "clerk", "company_approver", "cashier", "field_staff", "finance"])
    models = db.session.scalars(sa.select(ProcessModel.process_type).filter_by(company_id=company.id)).all()
    assert set(models) == set(PROCESS_TYPES)
    accounts = db.session.scalars(sa.select(Account).filter_by(company_id=company.id).order_by(Account.legacy_no)).all()
    assert [a.legacy_no for a in accounts] == [row[0] for row in SMALL_LEDGER]
    assert all(a.account_no.startswith("21") and len(a.account_no) == 15 for a in accounts)
    assert [a.billing_status for a in accounts] == ["normal", "suspended", "normal", "normal", "not_connected"]
    assert [a.user_type for a in accounts] == ["residential", "residential", "non_residential", "low_income", "residential"]
    charges = dict(db.session.execute(
        sa.select(Account.legacy_no, sa.func.sum(LedgerEntry.amount))
        .join(LedgerEntry, LedgerEntry.account_id == Account.id)
        .where(Account.company_id == company.id, LedgerEntry.kind == "charge")
        .group_by(Account.legacy_no)
    ).all())
    # 80 m² × 20.00; 100 m² × 20.00 × 0.30 suspended; 200.5 m² × 30.00; 60.25 m² × 20.00 (low income
    # pays the residential price); the unconnected home owes nothing.
    assert charges == {
        "ZZ-000101": Decimal("1600.00"),
        "ZZ-000102": Decimal("600.00"),
        "ZZ-000103": Decimal("6015.00"),
        "ZZ-000104": Decimal("1205.00"),
    }
    assert "4 accounts billed, 9420.00 yuan posted" in result.output


def test_onboard_admin_logs_in_with_printed_password(demo, tmp_path, app_ctx):
    spec, ledger = _write(tmp_path, spec_toml())
    result = app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger)])
    password = result.output.split("one-time password: ", 1)[1].split()[0]

    client = app_ctx.test_client()
    response = client.post("/login", data={"username": "zz_admin", "password": password})

    assert response.status_code == 302
    admin = db.session.scalar(sa.select(User).filter_by(username="zz_admin"))
    assert admin.user_no == "210001"
    assert password not in admin.password_hash


def test_unmapped_legacy_wording_stores_nothing(demo, tmp_path, app_ctx):
    spec, ledger = _write(tmp_path, spec_toml(legacy=False))

    result = app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger)])

    assert result.exit_code == 1
    assert 'the value "停暖" in column billing_status is not recognised (1 rows, first in row 4)' in result.output
    assert 'under [legacy_values.billing_status] in the specification file, e.g. "停暖" = "normal"' in result.output
    assert '"困难户"' in result.output
    assert db.session.scalar(sa.select(Company).filter_by(code="ZZ")) is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User).filter_by(username="zz_admin")) == 0


def test_check_flag_writes_nothing(demo, tmp_path, app_ctx):
    spec, ledger = _write(tmp_path, spec_toml())

    result = app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger), "--check"])

    assert result.exit_code == 0, result.output
    assert "specification and 1 ledgers are valid; nothing was stored" in result.output
    assert db.session.scalar(sa.select(Company).filter_by(code="ZZ")) is None


@pytest.mark.parametrize("spec_text, expected", [
    (spec_toml(code="TJ", number="22"), "Company code TJ is already in use"),
    (spec_toml(number="11"), "Company number 11 is already used by TJ"),
    (spec_toml(username="tj_admin"), "Username tj_admin is already in use"),
])
def test_check_flag_reports_taken_names(demo, tmp_path, app_ctx, spec_text, expected):
    spec, ledger = _write(tmp_path, spec_text)

    result = app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger), "--check"])

    assert result.exit_code == 1
    assert expected in result.output
    assert "nothing was stored" not in result.output


def test_spec_not_utf8_named(demo, tmp_path, app_ctx):
    spec, ledger = _write(tmp_path, spec_toml())
    spec.write_bytes(spec_toml().encode("gb18030"))

    result = app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger)])

    assert result.exit_code == 1
    assert f"{spec}: not UTF-8 text" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert db.session.scalar(sa.select(Company).filter_by(code="ZZ")) is None


def test_taken_number_rejected(demo, tmp_path, app_ctx):
    spec, ledger = _write(tmp_path, spec_toml(number="11"))

    result = app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger)])

    assert result.exit_code == 1
    assert "Company number 11 is already used by TJ" in result.output
    assert db.session.scalar(sa.select(Company).filter_by(code="ZZ")) is None


def test_later_upload_uses_company_wording(demo, tmp_path, app_ctx):
    spec, ledger = _write(tmp_path, spec_toml())
    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger)])
    more = tmp_path / "zz-more.xlsx"
    more.write_bytes(ledger_bytes([("ZZ-000201", "企业", "停暖", "150.00")], first=200))

    zz_import = runner.invoke(args=["heat", "import-ledger", "--company", "ZZ", str(more)])
    tj_import = runner.invoke(args=["heat", "import-ledger", "--company", "TJ", str(more)])

    assert zz_import.exit_code == 0, zz_import.output
    assert tj_import.exit_code == 1
    assert '"停暖"' in tj_import.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LedgerValueMap).filter_by(company_id=demo["TJ"].id)) == 0


def test_company_staff_cannot_see_new_company(demo, tmp_path, app_ctx, login):
    spec, ledger = _write(tmp_path, spec_toml())
    app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger)])

    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="ZZ-000101"))

    page = login("tj_clerk").get("/accounts/?q=ZZ-000101")
    detail = login("tj_clerk").get(f"/accounts/{account.id}")

    assert page.status_code == 200
    assert "金水花园" not in page.get_data(as_text=True)
    assert account.account_no not in page.get_data(as_text=True)
    assert detail.status_code == 404



def _onboard(app_ctx, spec, ledger):
    return app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", str(ledger), "--check"])


def test_onboard_ledger_directory_named(demo, tmp_path, app_ctx):
    spec, _ledger = _write(tmp_path, spec_toml())
    folder = tmp_path / "ledgers"
    folder.mkdir()

    result = _onboard(app_ctx, spec, folder)

    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "is a directory" in result.output
    assert "Traceback" not in result.output


def test_onboard_ledger_not_xlsx_named(demo, tmp_path, app_ctx):
    spec, _ledger = _write(tmp_path, spec_toml())
    text = tmp_path / "zz.csv"
    text.write_text("户号,姓名\n1,张三\n", encoding="utf-8")

    result = _onboard(app_ctx, spec, text)

    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "zz.csv: The file is not an Excel .xlsx workbook" in result.output


def test_onboard_ledger_unreadable_named(demo, tmp_path, app_ctx):
    """/proc/self/mem exists but fails to read at offset 0 (EIO), even for root."""
    spec, _ledger = _write(tmp_path, spec_toml())
    unreadable = Path("/proc/self/mem")
    if not unreadable.exists():
        pytest.skip("needs Linux /proc")

    result = _onboard(app_ctx, spec, unreadable)

    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Ledger /proc/self/mem cannot be read: Input/output error" in result.output
    assert db.session.scalar(sa.select(Company).filter_by(code="ZZ")) is None
