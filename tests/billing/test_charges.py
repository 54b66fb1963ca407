"""Season charges worked by hand from each company's tariff."""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.services import rerate_account, run_billing, season_receivable
from app.extensions import db
from app.network.models import Account, Building, Community, HeatSource, Station, Unit
from app.tariffs.services import compute_charge, get_season, tariff_in_force


@pytest.fixture
def make_account(demo):
    """Create one account of a company with the given areas and attributes."""
    counter = {"room": 100}

    def _make(code, building_area, user_type="residential", status="normal", usable_area=None, lift=False, heat_source_kind=""):
        company = demo[code]
        community = db.session.scalar(sa.select(Community).filter_by(company_id=company.id, code="0001"))
        if community is None:
            community = Community(company_id=company.id, code="0001", name="测试小区")
            db.session.add(community)
            db.session.flush()
        building = Building(company_id=company.id, community_id=community.id, code=f"{counter['room']:03d}", has_lift=lift)
        db.session.add(building)
        db.session.flush()
        unit = Unit(company_id=company.id, building_id=building.id, code="01")
        source = HeatSource(company_id=company.id, name=f"热源{counter['room']}", kind=heat_source_kind)
        station = Station(company_id=company.id, name=f"站{counter['room']}", heat_source=source)
        db.session.add_all([unit, source, station])
        db.session.flush()
        counter["room"] += 1
        account = Account(
            company_id=company.id, account_no=f"{company.number}0001{building.code}010101", unit=unit, room="101",
            station=station, building_area=Decimal(building_area),
            usable_area=Decimal(usable_area) if usable_area else None, user_type=user_type, billing_status=status,
        )
        db.session.add(account)
        db.session.commit()
        return account

    return _make


def _charge(code, account):
    season = get_season(account.company_id, "2025-2026")
    building = account.unit.building
    kind = account.station.heat_source.kind if account.station else ""
    return compute_charge(tariff_in_force(season), account, building.has_lift, kind)


@pytest.mark.parametrize(
    "code, area, kwargs, expected",
    [
        ("TJ", "87.35", {}, "2183.75"),  # 87.35 × 25.00
        ("TJ", "87.35", {"status": "suspended"}, "436.75"),  # 87.35 × 25 × 0.20
        ("TJ", "100.00", {"user_type": "non_residential"}, "4000.00"),
        ("TJ", "100.00", {"user_type": "low_income"}, "2500.00"),  # priced as residential
        ("QD", "92.17", {}, "2101.48"),  # 92.17 × 0.75 × 30.40 = 2101.476, area not rounded first
        ("QD", "92.17", {"usable_area": "70.00"}, "2128.00"),  # 70 × 30.40
        ("QD", "100.00", {"user_type": "non_residential", "usable_area": "70"}, "3306.00"),  # building area
        ("SJZ", "96.73", {"lift": True}, "1808.85"),  # 96.73 × 0.85 × 22 = 1808.851
        ("SJZ", "96.73", {}, "1915.25"),  # 96.73 × 0.90 × 22 = 1915.254
        ("SJZ", "96.73", {"status": "suspended"}, "0.00"),  # ratio 0.00, line still exists
        ("BJ", "80", {"heat_source_kind": "燃气锅炉"}, "2400.00"),
        ("BJ", "80", {"heat_source_kind": "燃气锅炉", "status": "suspended"}, "720.00"),
        ("BJ", "80", {}, "1920.00"),
        ("BJ", "80", {"user_type": "non_residential", "heat_source_kind": "燃气锅炉"}, "3600.00"),
    ],
)
def test_charge_worked_examples(make_account, code, area, kwargs, expected):
    account = make_account(code, area, **kwargs)

    assert _charge(code, account).amount == Decimal(expected)


def test_not_connected_owes_nothing(make_account):
    account = make_account("TJ", "87.35", status="not_connected")

    assert _charge("TJ", account) is None


def test_billing_rerun_posts_nothing_twice(make_account):
    account = make_account("TJ", "87.35")

    first = run_billing("TJ", "2025-2026")
    second = run_billing("TJ", "2025-2026")

    season = get_season(account.company_id, "2025-2026")
    assert first.accounts_billed == 1
    assert second.accounts_billed == 0
    assert season_receivable(account.id, season.id) == Decimal("2183.75")


def test_rerate_to_suspension_posts_difference_once(make_account):
    account = make_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    season = get_season(account.company_id, "2025-2026")

    line = rerate_account(account, season, "suspended", "process_instance", 1, key="suspension:1")
    again = rerate_account(account, season, "suspended", "process_instance", 1, key="suspension:1")
    db.session.commit()

    assert line.amount == Decimal("-1747.00")
    assert again is None
    assert season_receivable(account.id, season.id) == Decimal("436.75")
    assert account.billing_status == "suspended"


def test_gas_boiler_named_source_without_sheet(demo):
    import io

    import openpyxl

    from app.ledger.services import import_ledger

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["原户号", "小区名称", "楼栋", "单元", "户室号", "建筑面积", "用户类型", "供热状态", "换热站", "热源"])
    sheet.append(["JX9", "金顶街", 1, 1, "101", "80", "居民", "正常", "西山站", "西山燃气锅炉房"])
    buffer = io.BytesIO()
    workbook.save(buffer)

    result = import_ledger(demo["BJ"], buffer.getvalue(), "bj.xlsx")
    run_billing("BJ", "2025-2026")

    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="JX9"))
    season = get_season(account.company_id, "2025-2026")
    assert result.ok
    assert season_receivable(account.id, season.id) == Decimal("2400.00")  # 80 × 30.00
