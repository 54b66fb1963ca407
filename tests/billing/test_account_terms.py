"""Effective-dated areas and user types: a mid-season change bills each part by its days."""

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import AccountTerms
from app.network.terms import BEGINNING, TermsError, record_terms_change, terms_periods

SEASON = "2025-2026"


def _charges(account):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(account_id=account.id, kind="charge").order_by(LedgerEntry.id)
    ).all()


def test_area_change_mid_season_splits_charge(add_account):
    # TJ 25.00/m², Nov 15 .. Mar 15 = 121 days. 87.35 m² until Dec 31 (47 days), 100 m² from Jan 1 (74 days).
    # 87.35 × 25 × 47 / 121 = 848.2334 → 848.23; 100 × 25 × 74 / 121 = 1528.9256 → 1528.93.
    account = add_account("TJ", "87.35")
    record_terms_change(account, date(2026, 1, 1), building_area=Decimal("100.00"), memo="测绘更正")
    db.session.commit()

    run_billing("TJ", SEASON)

    lines = _charges(account)
    assert [line.amount for line in lines] == [Decimal("848.23"), Decimal("1528.93")]
    assert [line.charge_area for line in lines] == [Decimal("87.3500"), Decimal("100.0000")]
    assert "2025-11-15至2025-12-31 共47天/法定121天" in lines[0].memo
    assert "2026-01-01至2026-03-15 共74天/法定121天" in lines[1].memo
    assert account.building_area == Decimal("100.0000")


def test_user_type_change_uses_new_price(add_account):
    # From Jan 1 non-residential at 40.00: 87.35 × 40 × 74 / 121 = 2136.8264 → 2136.83.
    account = add_account("TJ", "87.35")
    record_terms_change(account, date(2026, 1, 1), user_type="non_residential")
    db.session.commit()

    run_billing("TJ", SEASON)

    assert [line.amount for line in _charges(account)] == [Decimal("848.23"), Decimal("2136.83")]
    assert [line.unit_price for line in _charges(account)] == [Decimal("25.000000"), Decimal("40.000000")]


def test_change_before_season_bills_whole_season(add_account):
    # A change effective before the season start bills the whole season at the new area: 100 × 25 = 2500.00.
    account = add_account("TJ", "87.35")
    record_terms_change(account, date(2025, 6, 1), building_area=Decimal("100"))
    db.session.commit()

    run_billing("TJ", SEASON)

    assert [(line.amount, line.memo) for line in _charges(account)] == [(Decimal("2500.00"), "")]


def test_first_change_keeps_earlier_terms(add_account):
    account = add_account("TJ", "87.35")

    record_terms_change(account, date(2026, 1, 1), building_area=Decimal("100"))
    record_terms_change(account, date(2026, 2, 1), user_type="non_residential")
    db.session.commit()

    rows = db.session.scalars(sa.select(AccountTerms).filter_by(account_id=account.id).order_by(AccountTerms.effective_from)).all()
    assert [(r.effective_from, r.building_area, r.user_type) for r in rows] == [
        (BEGINNING, Decimal("87.3500"), "residential"),
        (date(2026, 1, 1), Decimal("100.0000"), "residential"),
        (date(2026, 2, 1), Decimal("100.0000"), "non_residential"),
    ]
    periods = terms_periods(account, date(2025, 11, 15), date(2026, 3, 15))
    assert [(first, last) for _, first, last in periods] == [
        (date(2025, 11, 15), date(2025, 12, 31)), (date(2026, 1, 1), date(2026, 1, 31)), (date(2026, 2, 1), date(2026, 3, 15)),
    ]


def test_tariff_and_area_changes_share_no_day(add_account):
    # Area 100 from Jan 1 and a 22.00 tariff version from Feb 1: Nov 15–Dec 31 47 d at 87.35 × 25,
    # Jan 1–31 31 d at 100 × 25, Feb 1–Mar 15 43 d at 100 × 22.
    # 848.23; 2500 × 31 / 121 = 640.4959 → 640.50; 2200 × 43 / 121 = 781.8182 → 781.82.
    from app.tariffs.models import Season, Tariff, TariffPrice

    account = add_account("TJ", "87.35")
    season = db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name=SEASON))
    first = db.session.scalar(sa.select(Tariff).filter_by(season_id=season.id))
    later = Tariff(company_id=account.company_id, season_id=season.id, effective_from=date(2026, 2, 1),
                   suspension_ratio=first.suspension_ratio)
    db.session.add(later)
    db.session.flush()
    db.session.add_all([
        TariffPrice(company_id=account.company_id, tariff_id=later.id, category="residential", unit_price=Decimal("22")),
        TariffPrice(company_id=account.company_id, tariff_id=later.id, category="non_residential", unit_price=Decimal("40")),
    ])
    record_terms_change(account, date(2026, 1, 1), building_area=Decimal("100"))
    db.session.commit()

    run_billing("TJ", SEASON)

    lines = _charges(account)
    assert [line.amount for line in lines] == [Decimal("848.23"), Decimal("640.50"), Decimal("781.82")]
    assert sum(line.amount for line in lines) == Decimal("2270.55")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"building_area": "-5"}, "面积「-5」无效"),
        ({"building_area": 80.5}, "浮点数"),
        ({"user_type": "vip"}, "用户类型「vip」无效"),
        ({"room": "102"}, "不能按生效日期修改「room」"),
        ({}, "没有要修改的项目"),
    ],
)
def test_invalid_terms_change_rejected(add_account, changes, message):
    account = add_account("TJ", "87.35")

    with pytest.raises(TermsError, match=message):
        record_terms_change(account, date(2026, 1, 1), **changes)
