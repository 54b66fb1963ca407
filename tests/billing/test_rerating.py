"""Retroactive re-rating: exact difference lines per season and account, approved, posted once."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.billing.invariants import find_invariant_breaks
from app.billing.models import LedgerEntry, RerateChange
from app.billing.rerating import RerateError, create_change, post_change, reject_change
from app.billing.services import run_billing
from app.extensions import db
from app.billing.proration import season_charge_lines, season_charge_total, season_tariffs
from app.network.models import AccountTerms
from app.org.models import User
from app.tariffs.models import Tariff, TariffPrice
from app.tariffs.services import get_season

SEASON = "2025-2026"


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def _rerates(account):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(account_id=account.id, kind="rerate").order_by(LedgerEntry.id)
    ).all()


def _differences(change):
    return [(p.account_id, p.season_id, p.billed, p.expected, p.difference) for p in change.proposals]


def test_area_change_posts_difference_once(add_account):
    # Billed 87.35 × 25 = 2183.75. Area 100 from Jan 1: 848.23 + 1528.93 = 2377.16, so +193.41.
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    season = get_season(account.company_id, SEASON)
    change = create_change(account.company_id, "account_terms", date(2026, 1, 1), _user("tj_clerk"), account=account,
                           description="测绘更正", terms={"building_area": Decimal("100")})
    db.session.commit()

    assert account.building_area == Decimal("87.35")
    assert _differences(change) == [(account.id, season.id, Decimal("2183.75"), Decimal("2377.16"), Decimal("193.41"))]
    assert "100㎡×25×1=1528.93" in change.proposals[0].detail
    assert _rerates(account) == []

    assert post_change(change, _user("tj_approver")) == 1
    db.session.commit()
    assert post_change(change, _user("tj_approver")) == 0
    db.session.commit()

    [line] = _rerates(account)
    assert line.amount == Decimal("193.41")
    assert line.cause_type == "rerate_change"
    assert line.cause_id == change.id
    assert change.status == "posted"
    assert account.building_area == Decimal("100")
    again = create_change(account.company_id, "account_terms", date(2026, 1, 1), _user("tj_clerk"), account=account,
                          terms={"building_area": Decimal("100")})
    assert again.proposals == []
    assert find_invariant_breaks(account.company_id, season.id) == []


def test_area_change_reaches_earlier_season(add_account, add_season):
    # 2024-2025 at 22.00: Nov 15–30 (16 d) 87.35 → 254.11, Dec 1–Mar 15 (105 d) 100 → 1909.09,
    # 2163.20 − 1921.70 = +241.50. 2025-2026 wholly at 100 × 25 = 2500.00 − 2183.75 = +316.25.
    add_season("TJ", "2024-2025", residential="22.00")
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2024-2025")
    run_billing("TJ", SEASON)
    change = create_change(account.company_id, "account_terms", date(2024, 12, 1), _user("tj_clerk"), account=account,
                           terms={"building_area": Decimal("100")})
    post_change(change, _user("tj_approver"))
    db.session.commit()

    assert [(p.season_id, p.difference) for p in change.proposals] == [
        (get_season(account.company_id, "2024-2025").id, Decimal("241.50")),
        (get_season(account.company_id, SEASON).id, Decimal("316.25")),
    ]
    assert [line.amount for line in _rerates(account)] == [Decimal("241.50"), Decimal("316.25")]


def test_tariff_change_rerates_every_billed_account(add_account):
    # A 22.00 version from Jan 1: 87.35 m² → 848.23 + 1175.25 = 2023.48 (−160.27);
    # 40 m² → 388.43 + 538.18 = 926.61 against 1000.00 (−73.39).
    first = add_account("TJ", "87.35")
    second = add_account("TJ", "40")
    run_billing("TJ", SEASON)
    season = get_season(first.company_id, SEASON)
    tariff = db.session.scalar(sa.select(Tariff).filter_by(season_id=season.id))
    later = Tariff(company_id=first.company_id, season_id=season.id, effective_from=date(2026, 1, 1),
                   suspension_ratio=tariff.suspension_ratio)
    db.session.add(later)
    db.session.flush()
    for category, price in (("residential", "22"), ("non_residential", "40")):
        db.session.add(TariffPrice(company_id=first.company_id, tariff_id=later.id, category=category, unit_price=Decimal(price)))
    db.session.commit()

    change = create_change(first.company_id, "tariff", date(2026, 1, 1), _user("tj_admin"), description="1月起降价")
    post_change(change, _user("tj_approver"))
    db.session.commit()

    assert {p.account_id: p.difference for p in change.proposals} == {first.id: Decimal("-160.27"), second.id: Decimal("-73.39")}
    assert [line.amount for line in _rerates(first)] == [Decimal("-160.27")]
    assert find_invariant_breaks(first.company_id, season.id) == []


def test_status_change_sets_status_when_posted(add_account):
    # 报停 for the whole season: 87.35 × 25 × 0.20 = 436.75, so −1747.00.
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    season = get_season(account.company_id, SEASON)

    change = create_change(account.company_id, "status", None, _user("tj_clerk"), account=account, season=season,
                           billing_status="suspended")
    assert account.billing_status == "normal"
    post_change(change, _user("tj_approver"))
    db.session.commit()

    assert [line.amount for line in _rerates(account)] == [Decimal("-1747.00")]
    assert account.billing_status == "suspended"


def test_stale_change_recomputed_before_posting(add_account):
    # Two pending changes of the same day: 100 m² (+193.41) and 90 m². The 90 m² one posts first:
    # 90 × 25 × 74 / 121 = 1376.03; 848.23 + 1376.03 − 2183.75 = +40.51. The 100 m² one then
    # finds 2183.75 + 40.51 = 2224.26 billed, so its difference becomes 2377.16 − 2224.26 = +152.90.
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    change = create_change(account.company_id, "account_terms", date(2026, 1, 1), _user("tj_clerk"), account=account,
                           terms={"building_area": Decimal("100")})
    other = create_change(account.company_id, "account_terms", date(2026, 1, 1), _user("tj_clerk"), account=account,
                          terms={"building_area": Decimal("90")})
    db.session.commit()
    post_change(other, _user("tj_approver"))
    db.session.commit()

    with pytest.raises(RerateError, match="差额已变化"):
        post_change(change, _user("tj_approver"))
    db.session.commit()

    assert [p.difference for p in change.proposals] == [Decimal("152.90")]
    assert [line.amount for line in _rerates(account)] == [Decimal("40.51")]
    assert account.building_area == Decimal("90")
    assert change.status == "pending"


def test_rejected_change_changes_nothing(add_account):
    # Proposed: 100 m² from Jan 1, +193.41. Rejected, the account keeps 87.35 m² with no dated
    # terms, the season still bills 87.35 × 25 = 2183.75, and a later change finds nothing to re-rate.
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    season = get_season(account.company_id, SEASON)
    change = create_change(account.company_id, "account_terms", date(2026, 1, 1), _user("tj_clerk"), account=account,
                           terms={"building_area": Decimal("100")})
    db.session.commit()
    assert [p.difference for p in change.proposals] == [Decimal("193.41")]

    reject_change(change, _user("tj_approver"))
    db.session.commit()

    with pytest.raises(RerateError, match="已驳回"):
        post_change(change, _user("tj_approver"))
    db.session.rollback()
    assert _rerates(account) == []
    assert db.session.scalars(sa.select(AccountTerms).filter_by(account_id=account.id)).all() == []
    assert (account.building_area, account.user_type) == (Decimal("87.35"), "residential")
    assert season_charge_total(season_charge_lines(account, season, season_tariffs(season), False, "")) == Decimal("2183.75")
    assert db.session.get(RerateChange, change.id).status == "rejected"
    later = create_change(account.company_id, "tariff", season.start_on, _user("tj_admin"), season=season)
    assert later.proposals == []


CHANGES = st.lists(
    st.tuples(st.integers(min_value=0, max_value=120), st.integers(min_value=3000, max_value=20000)),
    min_size=1, max_size=3,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=CHANGES)
def test_rerated_season_equals_fresh_bill(add_account, demo, changes):
    # After any sequence of area changes each posted as a change, the season's charge and
    # rerate lines add up to what billing the final history from scratch gives, and a further
    # change finds nothing to post.
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    season = get_season(account.company_id, SEASON)
    for offset, hundredths in changes:
        day = season.start_on + timedelta(days=offset)
        change = create_change(account.company_id, "account_terms", day, _user("tj_clerk"), account=account,
                               terms={"building_area": Decimal(hundredths).scaleb(-2)})
        post_change(change, _user("tj_approver"))
        db.session.commit()

    billed = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == account.id, LedgerEntry.kind.in_(("charge", "rerate"))
        )
    )
    fresh = season_charge_total(season_charge_lines(account, season, season_tariffs(season), False, ""))
    assert billed == fresh
    final = create_change(account.company_id, "tariff", season.start_on, _user("tj_admin"), season=season)
    assert final.proposals == []


def test_posted_status_kept_for_later_changes(add_account, add_season):
    # 2024-2025 set to 报停 afterwards (87.35 × 22 × 0.20 = 384.34, −1537.36). A later area change
    # of that season must re-rate it as 报停: 100 × 22 × 0.20 = 440.00, so +55.66 more.
    add_season("TJ", "2024-2025", residential="22.00")
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2024-2025")
    run_billing("TJ", SEASON)
    earlier = get_season(account.company_id, "2024-2025")
    status = create_change(account.company_id, "status", None, _user("tj_clerk"), account=account, season=earlier,
                           billing_status="suspended")
    post_change(status, _user("tj_approver"))

    change = create_change(account.company_id, "account_terms", date(2024, 11, 1), _user("tj_clerk"), account=account,
                           terms={"building_area": Decimal("100")})

    assert [p.difference for p in status.proposals] == [Decimal("-1537.36")]
    assert account.billing_status == "normal"
    assert [(p.season_id, p.expected, p.difference) for p in change.proposals] == [
        (earlier.id, Decimal("440.00"), Decimal("55.66")),
        (get_season(account.company_id, SEASON).id, Decimal("2500.00"), Decimal("316.25")),
    ]


def test_tariff_change_limited_to_its_season(add_account, add_season):
    # 2024-2025 carries a stray +10.00 rerate line. A tariff change of 2025-2026 leaves it
    # alone; one without a season re-rates it back by −10.00.
    earlier = add_season("TJ", "2024-2025", residential="22.00")
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2024-2025")
    run_billing("TJ", SEASON)
    db.session.add(LedgerEntry(company_id=account.company_id, account_id=account.id, season_id=earlier.id, kind="rerate",
                               amount=Decimal("10.00"), cause_type="test", idempotency_key="test-stray"))
    db.session.commit()
    season = get_season(account.company_id, SEASON)

    scoped = create_change(account.company_id, "tariff", season.start_on, _user("tj_admin"), season=season)
    unscoped = create_change(account.company_id, "tariff", earlier.start_on, _user("tj_admin"))

    assert scoped.proposals == []
    assert [(p.season_id, p.difference) for p in unscoped.proposals] == [(earlier.id, Decimal("-10.00"))]
