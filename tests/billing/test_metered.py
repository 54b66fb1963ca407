"""Two-part metered settlement on QD's tariff (base 9.00 per m², 41.73 per GJ), worked by hand."""

from decimal import Decimal

import pytest

from app.billing.metered import MeteringError, compute_settlement, parse_heat_gj, settle_metered
from app.billing.services import run_billing, season_receivable
from app.extensions import db
from app.tariffs.services import get_season

SEASON = "2025-2026"


def test_metered_below_area_fee_credits_difference(qd_metered):
    # 69.1275 × 9.00 + 30 × 41.73 = 622.1475 + 1251.90 = 1874.0475 → 1874.05.
    # 1874.05 − 2101.48 = −227.43 credited.
    account, season = qd_metered

    line = settle_metered(account, season, "30")
    db.session.commit()

    assert line.kind == "settlement"
    assert line.amount == Decimal("-227.43")
    assert line.charge_area == Decimal("69.1275")
    assert "1874.05" in line.memo
    assert season_receivable(account.id, season.id) == Decimal("1874.05")


def test_resident_capped_at_area_fee(qd_metered):
    # 622.1475 + 50 × 41.73 = 2708.6475 → 2708.65, capped to the area fee 2101.48.
    account, season = qd_metered

    result = compute_settlement(account, season, "50")
    line = settle_metered(account, season, "50")
    db.session.commit()

    assert result.metered_fee == Decimal("2708.65")
    assert result.capped
    assert result.settled_fee == Decimal("2101.48")
    assert line.amount == Decimal("0.00")
    assert "封顶" in line.memo
    assert season_receivable(account.id, season.id) == Decimal("2101.48")


def test_settlement_posted_once(qd_metered):
    account, season = qd_metered

    first = settle_metered(account, season, "30")
    again = settle_metered(account, season, "30")
    db.session.commit()

    assert first is not None
    assert again is None
    assert season_receivable(account.id, season.id) == Decimal("1874.05")


def test_non_residential_pays_full_metered_fee(add_account, qd_season):
    # Non-residential charge area is the building area: 100 × 33.06 = 3306.00 billed.
    # 100 × 9.00 + 80 × 41.73 = 900 + 3338.40 = 4238.40, so 932.40 more, never capped,
    # even when residents are settled refund-only.
    qd_season("refund_only")
    account = add_account("QD", "100", usable_area="70", user_type="non_residential", billing_method="metered")
    run_billing("QD", SEASON)
    season = get_season(account.company_id, SEASON)

    line = settle_metered(account, season, "80")
    db.session.commit()

    assert line.amount == Decimal("932.40")
    assert season_receivable(account.id, season.id) == Decimal("4238.40")


@pytest.mark.parametrize("mode, expected", [("refund_only", "0.00"), ("refund_and_surcharge", "607.17")])
def test_uncapped_resident_by_settlement_mode(add_account, qd_season, mode, expected):
    # Without the cap: 2708.65 − 2101.48 = 607.17, charged only under refund-and-surcharge.
    qd_season(mode, cap=False)
    account = add_account("QD", "92.17", billing_method="metered")
    run_billing("QD", SEASON)
    season = get_season(account.company_id, SEASON)

    line = settle_metered(account, season, "50")

    assert line.amount == Decimal(expected)


def test_refund_only_still_refunds(add_account, qd_season):
    qd_season("refund_only")
    account = add_account("QD", "92.17", billing_method="metered")
    run_billing("QD", SEASON)
    season = get_season(account.company_id, SEASON)

    assert settle_metered(account, season, "30").amount == Decimal("-227.43")


def test_mode_none_rejected(qd_metered, qd_season):
    account, season = qd_metered
    qd_season("none")

    with pytest.raises(MeteringError, match="不结算"):
        settle_metered(account, season, "30")


def test_area_billed_account_rejected(add_account, qd_season):
    account = add_account("QD", "92.17")
    run_billing("QD", SEASON)
    season = get_season(account.company_id, SEASON)

    with pytest.raises(MeteringError, match="按面积计费"):
        settle_metered(account, season, "30")


@pytest.mark.parametrize(
    "value, message",
    [(30.0, "不是 Decimal"), ("abc", "不是有效数字"), ("-1", "不小于 0"), ("1.0005", "三位小数"), ("NaN", "无效")],
)
def test_heat_quantity_checked(value, message):
    with pytest.raises(MeteringError, match=message):
        parse_heat_gj(value)
