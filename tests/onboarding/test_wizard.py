"""The onboarding pages: a group administrator takes an acquired company to its first bills."""

import io
import re
from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.ledger.models import LedgerImport, LedgerValueMap
from app.network.models import Account
from app.org.models import Company
from tests.onboarding.legacy import SMALL_LEDGER, ledger_bytes

COMPANY_FORM = {
    "code": "ZZ", "number": "21", "name": "中原热力有限公司", "city": "郑州", "invoice_mode": "receipt",
    "admin_username": "zz_admin", "admin_name": "中原管理员", "season_name": "2025-2026",
    "start_on": "2025-11-15", "end_on": "2026-03-15", "suspension_ratio": "0.30",
    "residential_price": "20.00", "non_residential_price": "30.00",
    "late_fee_starts_after": "", "late_fee_rate_per_day": "",
}


def _csrf(client, path):
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)


def _post_company(client, **changes):
    form = {**COMPANY_FORM, **changes, "csrf_token": _csrf(client, "/admin/onboarding/new")}
    return client.post("/admin/onboarding/new", data=form)


def test_only_group_admin_may_onboard(demo, login):
    assert login("hq_admin").get("/admin/onboarding/").status_code == 200
    assert login("tj_admin").get("/admin/onboarding/").status_code == 403
    assert login("hq_auditor").get("/admin/onboarding/new").status_code == 403


def test_invalid_company_form_stores_nothing(demo, login):
    client = login("hq_admin")

    response = _post_company(client, number="11", end_on="2025-11-01")

    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "采暖季结束日期必须晚于开始日期" in body
    assert db.session.scalar(sa.select(Company).filter_by(code="ZZ")) is None


def test_taken_number_named(demo, login):
    response = _post_company(login("hq_admin"), number="12")

    assert "公司编号 12 已被公司 QD 使用" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(Company).filter_by(code="ZZ")) is None


def test_wizard_from_nothing_to_first_bills(demo, login, app_ctx):
    client = login("hq_admin")

    created = _post_company(client)
    password = re.search(r'<code id="admin-password">([^<]+)</code>', created.get_data(as_text=True)).group(1)
    company = db.session.scalar(sa.select(Company).filter_by(code="ZZ"))
    upload = client.post(
        "/admin/onboarding/ZZ/ledgers",
        data={"csrf_token": _csrf(client, "/admin/onboarding/ZZ"), "file": (io.BytesIO(ledger_bytes(SMALL_LEDGER)), "zz.xlsx")},
        content_type="multipart/form-data",
    )
    held = db.session.scalar(sa.select(LedgerImport).filter_by(company_id=company.id))
    mapping_page = client.get("/admin/onboarding/ZZ").get_data(as_text=True)

    assert upload.status_code == 302
    assert held.status == "held"
    for text in ("在供", "停暖", "未接入", "民用", "企业", "困难户"):
        assert f'name="billing_status::{text}"' in mapping_page or f'name="user_type::{text}"' in mapping_page

    partial = client.post(f"/admin/onboarding/ZZ/ledgers/{held.id}/mapping", data={
        "csrf_token": _csrf(client, "/admin/onboarding/ZZ"), "billing_status::在供": "normal",
    })
    db.session.expire_all()
    assert partial.status_code == 302
    assert db.session.get(LedgerImport, held.id).status == "held"

    mapped = client.post(f"/admin/onboarding/ZZ/ledgers/{held.id}/mapping", data={
        "csrf_token": _csrf(client, "/admin/onboarding/ZZ"),
        "billing_status::停暖": "suspended", "billing_status::未接入": "not_connected",
        "user_type::民用": "residential", "user_type::企业": "non_residential", "user_type::困难户": "low_income",
    })
    db.session.expire_all()
    assert mapped.status_code == 302
    assert db.session.get(LedgerImport, held.id).status == "succeeded"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LedgerValueMap).filter_by(company_id=company.id)) == 6

    billed = client.post("/admin/onboarding/ZZ/bill", data={"csrf_token": _csrf(client, "/admin/onboarding/ZZ"), "season": "2025-2026"})
    summary = client.get("/admin/onboarding/ZZ").get_data(as_text=True)

    assert billed.status_code == 302
    total = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).join(Account, LedgerEntry.account_id == Account.id)
        .where(Account.company_id == company.id, LedgerEntry.kind == "charge")
    )
    # 1600.00 + 600.00 (30 % while suspended) + 6015.00 + 1205.00; the unconnected home owes nothing.
    assert total == Decimal("9420.00")
    assert "5 户，应收合计 9,420.00 元" in summary or "5 户，应收合计 9420.00 元" in summary
    fresh = app_ctx.test_client()
    assert fresh.post("/login", data={"username": "zz_admin", "password": password}).status_code == 302


def test_mapping_rejects_unknown_code(demo, login):
    client = login("hq_admin")
    _post_company(client)
    client.post(
        "/admin/onboarding/ZZ/ledgers",
        data={"csrf_token": _csrf(client, "/admin/onboarding/ZZ"), "file": (io.BytesIO(ledger_bytes(SMALL_LEDGER)), "zz.xlsx")},
        content_type="multipart/form-data",
    )
    held = db.session.scalar(sa.select(LedgerImport).filter_by(status="held"))

    response = client.post(f"/admin/onboarding/ZZ/ledgers/{held.id}/mapping", data={
        "csrf_token": _csrf(client, "/admin/onboarding/ZZ"), "billing_status::在供": "heated",
    }, follow_redirects=True)

    assert "「在供」映射到的编码 heated 无效" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LedgerValueMap)) == 0
