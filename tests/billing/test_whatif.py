"""What-if: a draft tariff against a billed season, per company, category and household, writing nothing."""

import io
from decimal import Decimal

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from app.billing.services import run_billing
from app.billing.whatif import draft_from_form, export_what_if, read_only_transaction, run_what_if
from app.extensions import db
from app.network.models import Community
from app.tariffs.editing import TariffEditError
from app.tariffs.services import get_season

DRAFT = {
    "suspension_ratio": "0.30", "price_residential": "26", "price_non_residential": "42",
    "basis_residential": "building_area", "factor_residential": "1",
    "basis_non_residential": "building_area", "factor_non_residential": "1",
}


def _snapshot():
    """Row count and full contents of every table."""
    snapshot = {}
    for table in db.metadata.sorted_tables:
        rows = db.session.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
        snapshot[table.name] = [tuple(row) for row in rows]
    return snapshot


@pytest.fixture
def billed(add_account):
    """TJ: 87.35 m² residential (2183.75), 60 m² non-residential (2400.00), 50 m² 报停 (50 × 25 × 0.20 = 250.00)."""
    accounts = [
        add_account("TJ", "87.35"),
        add_account("TJ", "60", user_type="non_residential"),
        add_account("TJ", "50", status="suspended"),
    ]
    run_billing("TJ", "2025-2026")
    return accounts


def test_draft_differences_per_household_and_category(billed):
    # Draft 26.00 / 42.00 and ratio 0.30: 87.35 × 26 = 2271.10 (+87.35), 60 × 42 = 2520.00 (+120.00),
    # 50 × 26 × 0.30 = 390.00 (+140.00). Residential 2 accounts 2433.75 → 2661.10 (+227.35).
    company_id = billed[0].company_id
    season = get_season(company_id, "2025-2026")

    result = run_what_if(company_id, season, draft_from_form(season, DRAFT))

    rows = {row.account_no: (row.billed, row.draft, row.difference) for row in result.households}
    assert rows == {
        billed[0].account_no: (Decimal("2183.75"), Decimal("2271.10"), Decimal("87.35")),
        billed[1].account_no: (Decimal("2400.00"), Decimal("2520.00"), Decimal("120.00")),
        billed[2].account_no: (Decimal("250.00"), Decimal("390.00"), Decimal("140.00")),
    }
    assert result.by_category() == {
        "residential": [2, Decimal("2433.75"), Decimal("2661.10"), Decimal("227.35")],
        "non_residential": [1, Decimal("2400.00"), Decimal("2520.00"), Decimal("120.00")],
    }
    assert result.total() == [3, Decimal("4833.75"), Decimal("5181.10"), Decimal("347.35")]


def test_what_if_changes_no_table(billed):
    company_id = billed[0].company_id
    season = get_season(company_id, "2025-2026")
    before = _snapshot()

    run_what_if(company_id, season, draft_from_form(season, DRAFT))

    assert _snapshot() == before


def test_read_only_transaction_rejects_writes(billed):
    with pytest.raises(sa.exc.DBAPIError), read_only_transaction():
        db.session.add(Community(company_id=billed[0].company_id, code="0999", name="不应写入"))
        db.session.flush()

    assert db.session.scalar(sa.select(sa.func.count()).select_from(Community).filter_by(code="0999")) == 0


def test_export_has_three_sheets(billed):
    company_id = billed[0].company_id
    season = get_season(company_id, "2025-2026")
    result = run_what_if(company_id, season, draft_from_form(season, DRAFT))

    workbook = load_workbook(io.BytesIO(export_what_if(result, "天津分公司")))

    assert workbook.sheetnames == ["公司汇总", "按类别", "按户"]
    company_row = list(workbook["公司汇总"].iter_rows(min_row=2, values_only=True))[0]
    assert company_row[:3] == ("天津分公司", "2025-2026", 3)
    assert Decimal(str(company_row[5])) == Decimal("347.35")
    assert len(list(workbook["按户"].iter_rows(min_row=2))) == 3


def test_invalid_draft_names_field(billed):
    season = get_season(billed[0].company_id, "2025-2026")

    with pytest.raises(TariffEditError, match="居民单价「abc」不是数字"):
        draft_from_form(season, {**DRAFT, "price_residential": "abc"})
