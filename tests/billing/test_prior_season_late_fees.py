"""Late fees keep accruing on a prior season's unpaid fee, each season under its own rule.

TJ bills 25.00 per m² in 2025-2026 and, in these tests, again in 2026-2027. Both
seasons charge 2‰ a day from the day after 12-31. An account of 87.35 m² owes 2183.75
per season. As of 2027-01-31:
- 2025-2026 has accrued from 2026-01-01: 396 days × 2183.75 × 0.002 = 1729.53;
- 2026-2027 has accrued from 2027-01-01: 31 days × 2183.75 × 0.002 = 135.3925 → 135.39.
An account of 100.00 m² owes 2500.00 per season, 1980.00 and 155.00 in late fees.
"""

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

import app.billing.late_fees as late_fees
from app.billing.invariants import find_invariant_breaks
from app.billing.late_fees import late_fees_as_of, late_fee_seasons, late_fee_total
from app.billing.models import LedgerEntry
from app.billing.proration import season_tariffs
from app.billing.services import run_billing
from app.extensions import db
from app.payments.services import amount_owed, collect_payment
from app.org.models import User
from app.tariffs.editing import TariffEditError, parse_tariff_form
from app.tariffs.models import ChargeAreaRule, Season, Tariff, TariffPrice
from app.tariffs.services import get_season
from app.tasks.billing import post_late_fees_all_task

D = Decimal
OLD, NEW = "2025-2026", "2026-2027"
AS_OF = "2027-01-31"


def _add_season(company, name, start, end, late_fee_starts_after):
    """Add a TJ season with the 2025-2026 prices and a 2‰ late fee."""
    season = Season(company_id=company.id, name=name, start_on=start, end_on=end, statutory_days=(end - start).days + 1)
    db.session.add(season)
    db.session.flush()
    tariff = Tariff(
        company_id=company.id, season_id=season.id, effective_from=start, suspension_ratio=D("0.20"),
        late_fee_starts_after=late_fee_starts_after, late_fee_rate_per_day=D("0.002"),
    )
    db.session.add(tariff)
    db.session.flush()
    for category, price in (("residential", D("25.00")), ("non_residential", D("40.00"))):
        db.session.add(TariffPrice(company_id=company.id, tariff_id=tariff.id, category=category, heat_source_kind="", unit_price=price))
        db.session.add(ChargeAreaRule(company_id=company.id, tariff_id=tariff.id, category=category, basis="building_area", factor=D(1)))
    db.session.commit()
    return season


@pytest.fixture
def two_seasons(add_account, demo):
    """Two TJ accounts billed for 2025-2026 and 2026-2027, nothing paid; returns (accounts, old, new)."""
    accounts = [add_account("TJ", "87.35"), add_account("TJ", "100.00")]
    _add_season(demo["TJ"], NEW, date(2026, 11, 15), date(2027, 3, 15), date(2026, 12, 31))
    run_billing("TJ", OLD)
    run_billing("TJ", NEW)
    company_id = demo["TJ"].id
    return accounts, get_season(company_id, OLD), get_season(company_id, NEW)


def _late_fee_lines(account, season):
    return db.session.scalars(
        sa.select(LedgerEntry.amount).filter_by(account_id=account.id, season_id=season.id, kind="late_fee").order_by(LedgerEntry.id)
    ).all()


def _assert_no_breaks(*seasons):
    for season in seasons:
        assert find_invariant_breaks(season.company_id, season.id) == [], season.name


def test_nightly_posts_prior_season_on_its_own(two_seasons):
    (small, large), old, new = two_seasons
    _assert_no_breaks(old, new)

    first = post_late_fees_all_task(AS_OF)
    db.session.expire_all()

    assert first == {"TJ": 4}  # two accounts in each of two seasons
    assert _late_fee_lines(small, old) == [D("1729.53")]
    assert _late_fee_lines(small, new) == [D("135.39")]
    assert _late_fee_lines(large, old) == [D("1980.00")]
    assert _late_fee_lines(large, new) == [D("155.00")]
    _assert_no_breaks(old, new)

    again = post_late_fees_all_task(AS_OF)
    db.session.expire_all()

    assert again == first
    assert _late_fee_lines(small, old) == [D("1729.53")]
    assert _late_fee_lines(large, new) == [D("155.00")]
    _assert_no_breaks(old, new)

    # The next night adds one day on each season: 2183.75 × 0.002 = 4.3675.
    post_late_fees_all_task("2027-02-01")
    db.session.expire_all()

    assert late_fee_total(small.id, old.id) == D("1733.90")  # 397 days: 1733.8975
    assert late_fee_total(small.id, new.id) == D("139.76")  # 32 days
    _assert_no_breaks(old, new)


def test_payment_settles_both_seasons_late_fees(two_seasons):
    (small, _large), old, new = two_seasons
    post_late_fees_all_task(AS_OF)
    db.session.expire_all()
    owed = amount_owed(small)
    # 2 × 2183.75 + 1729.53 + 135.39
    assert owed.total == D("6232.42")

    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    collect_payment(small, "6232.42", "cash", cashier)
    db.session.expire_all()

    assert amount_owed(small).total == D("0.00")
    paid_late_fees = dict(
        db.session.execute(
            sa.select(LedgerEntry.season_id, LedgerEntry.amount).filter_by(account_id=small.id, kind="late_fee_payment")
        ).all()
    )
    assert paid_late_fees == {old.id: D("-1729.53"), new.id: D("-135.39")}
    _assert_no_breaks(old, new)

    post_late_fees_all_task(AS_OF)
    db.session.expire_all()

    assert _late_fee_lines(small, old) == [D("1729.53")]
    _assert_no_breaks(old, new)


def test_crash_midway_resumes_without_double_lines(two_seasons, monkeypatch):
    (small, large), old, new = two_seasons
    real_page = late_fees.post_late_fees_page
    calls = []

    def failing_page(*args, **kwargs):
        calls.append(args[1].name)
        # The second page of 2025-2026 loses its connection before it commits.
        if len(calls) == 2:
            raise sa.exc.OperationalError("UPDATE", {}, Exception("server closed the connection unexpectedly"))
        return real_page(*args, **kwargs)

    monkeypatch.setattr(late_fees, "post_late_fees_page", failing_page)
    with pytest.raises(sa.exc.OperationalError):
        post_late_fees_all_task(AS_OF, page_size=1)
    db.session.expire_all()

    assert calls == [OLD, OLD]
    assert _late_fee_lines(small, old) == [D("1729.53")]  # the first page committed
    assert _late_fee_lines(large, old) == []
    assert _late_fee_lines(small, new) == []
    _assert_no_breaks(old, new)

    monkeypatch.setattr(late_fees, "post_late_fees_page", real_page)
    resumed = post_late_fees_all_task(AS_OF, page_size=1)
    db.session.expire_all()

    assert resumed == {"TJ": 4}
    assert _late_fee_lines(small, old) == [D("1729.53")]
    assert _late_fee_lines(large, old) == [D("1980.00")]
    assert _late_fee_lines(small, new) == [D("135.39")]
    assert _late_fee_lines(large, new) == [D("155.00")]
    _assert_no_breaks(old, new)


def test_late_fees_as_of_covers_every_season(two_seasons):
    (small, _large), old, new = two_seasons

    assert late_fees_as_of(small, date(2027, 1, 31)) == {old: D("1729.53"), new: D("135.39")}
    # Before 2026-2027 accrues anything, only 2025-2026 is listed.
    assert late_fees_as_of(small, date(2026, 12, 31)) == {old: D("1594.14")}  # 365 days: 1594.1375


def test_prior_season_payment_lowers_base(two_seasons):
    # 1000.00 paid on 2026-06-30 local time. 2026-01-01..06-30 accrue on 2183.75 for 181 days:
    # 790.5175. 2026-07-01..2027-01-31 accrue on 1183.75 for 215 days: 509.0125. Total 1299.53.
    (small, _large), old, new = two_seasons
    db.session.add(
        LedgerEntry(
            company_id=small.company_id, account_id=small.id, season_id=old.id, kind="payment", amount=D("-1000.00"),
            cause_type="payment", idempotency_key="test-prior-season-payment",
            created_at=datetime(2026, 6, 30, 2, 0, tzinfo=timezone.utc),
        )
    )
    db.session.commit()

    assert late_fees_as_of(small, date(2027, 1, 31))[old] == D("1299.53")


def test_stop_date_ends_accrual(two_seasons):
    # Stopped after 2026-06-30: 181 days × 2183.75 × 0.002 = 790.5175 → 790.52, then nothing.
    (small, _large), old, new = two_seasons
    [tariff] = season_tariffs(old)
    tariff.late_fee_stops_after = date(2026, 6, 30)
    db.session.commit()

    assert late_fees_as_of(small, date(2026, 6, 30))[old] == D("790.52")
    assert late_fees_as_of(small, date(2027, 1, 31)) == {old: D("790.52"), new: D("135.39")}

    post_late_fees_all_task(AS_OF)
    db.session.expire_all()

    assert _late_fee_lines(small, old) == [D("790.52")]
    assert _late_fee_lines(small, new) == [D("135.39")]
    _assert_no_breaks(old, new)


def test_seasons_without_rule_left_out(two_seasons, demo):
    (_small, _large), old, new = two_seasons

    assert late_fee_seasons(demo["TJ"].id, date(2026, 12, 31)) == [old]
    assert late_fee_seasons(demo["TJ"].id, date(2027, 1, 1)) == [old, new]
    assert late_fee_seasons(demo["SJZ"].id, date(2027, 1, 1)) == []


def _tariff_form(**late_fee):
    form = {"suspension_ratio": "0.20", "late_fee_rate_per_day": "0.002"}
    for category in ("residential", "non_residential"):
        form[f"price_{category}"] = "25.00"
        form[f"factor_{category}"] = "1"
    form.update(late_fee)
    return form


def test_tariff_form_stop_date(app_ctx):
    values = parse_tariff_form(_tariff_form(late_fee_starts_after="2025-12-31", late_fee_stops_after="2026-06-30"))
    assert values["late_fee_stops_after"] == date(2026, 6, 30)
    assert parse_tariff_form(_tariff_form(late_fee_starts_after="2025-12-31"))["late_fee_stops_after"] is None

    with pytest.raises(TariffEditError, match="滞纳金截止日 2025-12-31 须晚于滞纳金起算日"):
        parse_tariff_form(_tariff_form(late_fee_starts_after="2025-12-31", late_fee_stops_after="2025-12-31"))
    with pytest.raises(TariffEditError, match="滞纳金截止日「2026-13-01」不是有效日期"):
        parse_tariff_form(_tariff_form(late_fee_starts_after="2025-12-31", late_fee_stops_after="2026-13-01"))
