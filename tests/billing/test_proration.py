"""Proration by days: mid-season connections and mid-season tariff versions, worked by hand."""

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.proration import days_inclusive, season_charge_lines, season_tariffs, tariff_periods
from app.billing.services import rerate_account, run_billing, season_receivable
from app.extensions import db
from app.tariffs.models import ChargeAreaRule, Tariff, TariffPrice
from app.tariffs.services import get_season

SEASON = "2025-2026"


def _charge_lines(account):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(account_id=account.id, kind="charge").order_by(LedgerEntry.id)
    ).all()


def _add_tariff_version(season, effective_from, residential_price):
    """Copy the season's first tariff into a new version from `effective_from` with another residential price."""
    first = season_tariffs(season)[0]
    version = Tariff(
        company_id=season.company_id, season_id=season.id, effective_from=effective_from,
        suspension_ratio=first.suspension_ratio,
    )
    db.session.add(version)
    db.session.flush()
    for price in first.prices:
        value = Decimal(residential_price) if price.category == "residential" else price.unit_price
        db.session.add(TariffPrice(company_id=season.company_id, tariff_id=version.id, category=price.category,
                                   heat_source_kind=price.heat_source_kind, unit_price=value))
    for rule in first.area_rules:
        db.session.add(ChargeAreaRule(company_id=season.company_id, tariff_id=version.id, category=rule.category,
                                      basis=rule.basis, factor=rule.factor, lift_factor=rule.lift_factor,
                                      fallback_factor=rule.fallback_factor))
    db.session.commit()
    return version


def test_days_count_both_ends():
    assert days_inclusive(date(2026, 1, 10), date(2026, 3, 15)) == 65
    assert days_inclusive(date(2025, 11, 15), date(2026, 3, 15)) == 121
    assert days_inclusive(date(2026, 1, 10), date(2026, 1, 10)) == 1


def test_connection_mid_season_prorated(add_account):
    # BJ 80 m² at 24.00, connected 2026-01-10: 1920 × 65 / 121 = 1031.404… → 1031.40.
    account = add_account("BJ", "80", connected_on=date(2026, 1, 10))

    run_billing("BJ", SEASON)

    lines = _charge_lines(account)
    assert [line.amount for line in lines] == [Decimal("1031.40")]
    assert "65天" in lines[0].memo
    assert lines[0].unit_price == Decimal("24.000000")


def test_connection_rounds_only_once():
    # Rounding the daily rate first gives 15.87 × 65 = 1031.55, which the rule forbids.
    daily_first = (Decimal(1920) / 121).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) * 65
    once = (Decimal(1920) * 65 / 121).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    assert daily_first == Decimal("1031.55")
    assert once == Decimal("1031.40")


def test_connection_at_season_start_bills_full_fee(add_account):
    account = add_account("BJ", "80", connected_on=date(2025, 11, 15))

    run_billing("BJ", SEASON)

    assert [line.amount for line in _charge_lines(account)] == [Decimal("1920.00")]
    assert _charge_lines(account)[0].memo == ""


def test_connection_after_season_posts_nothing(add_account):
    account = add_account("BJ", "80", connected_on=date(2026, 3, 16))

    run = run_billing("BJ", SEASON)

    assert _charge_lines(account) == []
    assert run.accounts_billed == 0


def test_last_day_connection_bills_one_day(add_account):
    # 1920 × 1 / 121 = 15.867… → 15.87.
    account = add_account("BJ", "80", connected_on=date(2026, 3, 15))

    run_billing("BJ", SEASON)

    assert [line.amount for line in _charge_lines(account)] == [Decimal("15.87")]


def test_tariff_change_bills_each_version_by_its_days(add_account, demo):
    # QD season 2025-11-16 .. 2026-04-05, 141 statutory days. Price 24.00 until 2025-12-31
    # (46 days), 26.40 from 2026-01-01 (95 days). 100 m² usable area:
    #   100 × 24.00 × 46 / 141 = 110400 / 141 = 782.978… → 782.98
    #   100 × 26.40 × 95 / 141 = 250800 / 141 = 1778.723… → 1778.72
    # Two lines, each rounded once, sum to 2561.70. The reported figure is the same when
    # computed as one exact sum: 361200 / 141 = 2561.702… → 2561.70.
    season = get_season(demo["QD"].id, SEASON)
    first = season_tariffs(season)[0]
    next(p for p in first.prices if p.category == "residential").unit_price = Decimal("24.00")
    db.session.commit()
    _add_tariff_version(season, date(2026, 1, 1), "26.40")
    account = add_account("QD", "120", usable_area="100")

    run_billing("QD", SEASON)

    lines = _charge_lines(account)
    assert [line.amount for line in lines] == [Decimal("782.98"), Decimal("1778.72")]
    assert [line.unit_price for line in lines] == [Decimal("24.000000"), Decimal("26.400000")]
    assert season_receivable(account.id, season.id) == Decimal("2561.70")
    assert (Decimal(361200) / 141).quantize(Decimal("0.01")) == Decimal("2561.70")


def test_tariff_periods_share_no_day(demo):
    season = get_season(demo["QD"].id, SEASON)
    _add_tariff_version(season, date(2026, 1, 1), "26.40")

    periods = tariff_periods(season, season_tariffs(season), season.start_on, season.end_on)

    assert [(first, last) for _, first, last in periods] == [
        (date(2025, 11, 16), date(2025, 12, 31)),
        (date(2026, 1, 1), date(2026, 4, 5)),
    ]
    assert sum(days_inclusive(first, last) for _, first, last in periods) == 141


def test_billing_rerun_with_two_versions_posts_nothing(add_account, demo):
    season = get_season(demo["QD"].id, SEASON)
    _add_tariff_version(season, date(2026, 1, 1), "26.40")
    account = add_account("QD", "120", usable_area="100")

    first = run_billing("QD", SEASON)
    second = run_billing("QD", SEASON)

    assert first.accounts_billed == 1
    assert second.accounts_billed == 0
    assert len(_charge_lines(account)) == 2


def test_rerate_keeps_proration(add_account):
    # Suspending the account connected 2026-01-10: 80 × 24 × 0.30 × 65 / 121 = 309.421… → 309.42,
    # so the difference line is 309.42 − 1031.40 = −721.98.
    account = add_account("BJ", "80", connected_on=date(2026, 1, 10))
    run_billing("BJ", SEASON)
    season = get_season(account.company_id, SEASON)

    line = rerate_account(account, season, "suspended", "process_instance", 1, key="suspension:proration")
    db.session.commit()

    assert line.amount == Decimal("-721.98")
    assert season_receivable(account.id, season.id) == Decimal("309.42")


def test_not_connected_status_owes_nothing(add_account, demo):
    account = add_account("BJ", "80", status="not_connected", connected_on=date(2026, 1, 10))
    season = get_season(demo["BJ"].id, SEASON)

    lines = season_charge_lines(account, season, season_tariffs(season), False, "")

    assert lines is None
