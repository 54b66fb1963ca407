"""Fixtures of the billing tests: accounts built directly, with the attributes a test sets."""

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.proration import season_tariffs
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account, Building, Community, HeatSource, Station, Unit
from app.tariffs.services import get_season

SEASON = "2025-2026"


def _community(company):
    community = db.session.scalar(sa.select(Community).filter_by(company_id=company.id, code="0002"))
    if community is None:
        community = Community(company_id=company.id, code="0002", name="计费测试小区")
        db.session.add(community)
        db.session.flush()
    return community


def _building(company, code, lift=False, heat_source_kind=""):
    building = Building(company_id=company.id, community_id=_community(company).id, code=code, has_lift=lift)
    db.session.add(building)
    db.session.flush()
    unit = Unit(company_id=company.id, building_id=building.id, code="01")
    source = HeatSource(company_id=company.id, name=f"测试热源{code}", kind=heat_source_kind)
    station = Station(company_id=company.id, name=f"测试站{code}", heat_source=source)
    db.session.add_all([unit, source, station])
    db.session.flush()
    return unit, station


@pytest.fixture
def add_account(demo):
    """Create one account in its own building: add_account('BJ', '80', connected_on=date(...))."""
    counter = {"building": 500}

    def _add(code, building_area, usable_area=None, user_type="residential", status="normal", lift=False,
             heat_source_kind="", **attributes):
        company = demo[code]
        building_code = f"{counter['building']:03d}"
        counter["building"] += 1
        unit, station = _building(company, building_code, lift, heat_source_kind)
        account = Account(
            company_id=company.id, account_no=f"{company.number}0002{building_code}010101", unit=unit, room="101",
            station=station, building_area=Decimal(building_area),
            usable_area=Decimal(usable_area) if usable_area else None, user_type=user_type, billing_status=status,
            **attributes,
        )
        db.session.add(account)
        db.session.commit()
        return account

    return _add


@pytest.fixture
def add_many_accounts(demo):
    """Create `count` identical residential accounts in one building of a company; returns their ids."""

    def _add(code, count, building_area="87.35"):
        company = demo[code]
        unit, station = _building(company, "900")
        rows = [
            {
                "company_id": company.id, "account_no": f"{company.number}0002900{1:02d}{room:04d}", "unit_id": unit.id,
                "room": str(room), "station_id": station.id, "building_area": Decimal(building_area),
                "user_type": "residential", "billing_status": "normal",
            }
            for room in range(1, count + 1)
        ]
        db.session.execute(sa.insert(Account), rows)
        db.session.commit()
        return db.session.scalars(sa.select(Account.id).where(Account.unit_id == unit.id).order_by(Account.id)).all()

    return _add


@pytest.fixture
def add_season(demo):
    """Add a season to a company with one tariff: add_season('TJ', '2024-2025', residential='25.00').

    The season runs Nov 15 to Mar 15 (121 days) and copies the suspension ratio and the
    charge-area rules of the company's 2025-2026 tariff, with the prices given.
    """
    from app.tariffs.models import ChargeAreaRule, Season, Tariff, TariffPrice

    def _add(code, name, residential="25.00", non_residential="40.00"):
        company = demo[code]
        first_year = int(name[:4])
        template = db.session.scalar(sa.select(Tariff).join(Season).where(Season.company_id == company.id, Season.name == "2025-2026"))
        season = Season(company_id=company.id, name=name, start_on=date(first_year, 11, 15),
                        end_on=date(first_year + 1, 3, 15), statutory_days=121)
        db.session.add(season)
        db.session.flush()
        tariff = Tariff(company_id=company.id, season_id=season.id, effective_from=season.start_on,
                        suspension_ratio=template.suspension_ratio)
        db.session.add(tariff)
        db.session.flush()
        for category, price in (("residential", residential), ("non_residential", non_residential)):
            db.session.add(TariffPrice(company_id=company.id, tariff_id=tariff.id, category=category, unit_price=Decimal(price)))
        for rule in template.area_rules:
            db.session.add(ChargeAreaRule(company_id=company.id, tariff_id=tariff.id, category=rule.category, basis=rule.basis,
                                          factor=rule.factor, lift_factor=rule.lift_factor, fallback_factor=rule.fallback_factor))
        db.session.commit()
        return season

    return _add


@pytest.fixture
def qd_season(demo):
    """QD's season with the tariff settling refund and surcharge; returns a function to change the mode."""
    season = get_season(demo["QD"].id, SEASON)

    def _mode(mode, cap=True):
        tariff = season_tariffs(season)[0]
        tariff.metered_settlement = mode
        tariff.metered_cap_residential = cap
        db.session.commit()
        return season

    _mode("refund_and_surcharge")
    return _mode


@pytest.fixture
def qd_metered(add_account, qd_season):
    """A metered QD resident: 92.17 m², usable area blank, so 69.1275 m² and 2101.48 billed."""
    account = add_account("QD", "92.17", billing_method="metered")
    run_billing("QD", SEASON)
    return account, get_season(account.company_id, SEASON)
