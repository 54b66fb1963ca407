"""Late fees on TJ's tariff: 0.002 per day on the unpaid area fee from 2026-01-01, worked by hand."""

from collections import Counter
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

import app.billing.late_fees as late_fees
from app.billing.late_fees import LateFeeError, late_fee_as_of, late_fee_total, post_late_fee, post_late_fees
from app.billing.models import LedgerEntry
from app.billing.services import run_billing, season_receivable
from app.extensions import db
from app.tariffs.services import get_season
from app.tasks.billing import post_late_fees_task

SEASON = "2025-2026"


@pytest.fixture
def tj_unpaid(add_account):
    """A TJ account of 87.35 m² billed 2183.75 and nothing paid; returns (account, season)."""
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    return account, get_season(account.company_id, SEASON)


def _pay(account, season, amount, created_at):
    db.session.add(
        LedgerEntry(
            company_id=account.company_id, account_id=account.id, season_id=season.id, kind="payment",
            amount=-Decimal(amount), cause_type="payment", idempotency_key=f"test-payment:{created_at.isoformat()}",
            created_at=created_at,
        )
    )
    db.session.commit()


@pytest.mark.parametrize(
    "on_date, expected",
    [
        (date(2025, 12, 31), "0.00"),  # the start date itself accrues nothing
        (date(2026, 1, 1), "4.37"),  # 2183.75 × 0.002 = 4.3675
        (date(2026, 1, 31), "135.39"),  # 2183.75 × 0.002 × 31 = 135.3925
        (date(2026, 2, 1), "139.76"),  # 2183.75 × 0.002 × 32 = 139.76
    ],
)
def test_late_fee_worked_examples(tj_unpaid, on_date, expected):
    account, season = tj_unpaid

    assert late_fee_as_of(account, season, on_date) == Decimal(expected)


def test_late_fee_rounds_once():
    # Rounding each day to 4.37 first would give 135.47 for January.
    assert Decimal("4.37") * 31 == Decimal("135.47")


def test_forced_off_stops_accrual(tj_unpaid):
    account, season = tj_unpaid
    account.billing_status = "forced_off"
    account.forced_off_on = date(2026, 2, 1)
    db.session.commit()

    assert late_fee_as_of(account, season, date(2026, 1, 31)) == Decimal("135.39")
    assert late_fee_as_of(account, season, date(2026, 2, 1)) == Decimal("135.39")
    assert late_fee_as_of(account, season, date(2026, 3, 15)) == Decimal("135.39")


def test_payment_lowers_base_from_next_day(tj_unpaid):
    # 1000.00 paid on 2026-01-10 local time (17:30 UTC the day before). Jan 1–10 accrue on
    # 2183.75: 43.675. Jan 11–31 accrue on 1183.75: 1183.75 × 0.002 × 21 = 49.7175.
    # Total 93.3925 → 93.39.
    account, season = tj_unpaid
    _pay(account, season, "1000.00", datetime(2026, 1, 9, 17, 30, tzinfo=timezone.utc))

    assert late_fee_as_of(account, season, date(2026, 1, 10)) == Decimal("43.68")  # 43.675
    assert late_fee_as_of(account, season, date(2026, 1, 31)) == Decimal("93.39")


def test_paid_in_full_stops_accrual(tj_unpaid):
    # Paid on 2026-01-05: five days of 4.3675 = 21.8375 → 21.84, then a base of zero.
    account, season = tj_unpaid
    _pay(account, season, "2183.75", datetime(2026, 1, 5, 3, 0, tzinfo=timezone.utc))

    assert late_fee_as_of(account, season, date(2026, 3, 1)) == Decimal("21.84")


def test_no_late_fee_without_rule(add_account):
    account = add_account("SJZ", "96.73")
    run_billing("SJZ", SEASON)
    season = get_season(account.company_id, SEASON)

    assert late_fee_as_of(account, season, date(2026, 3, 1)) == Decimal("0.00")


def test_posting_is_idempotent_and_never_compounds(tj_unpaid):
    # The Feb 1 line adds 4.37 (139.76 − 135.39). A compounding base of 2183.75 + 135.39
    # would have added 4.64 instead.
    account, season = tj_unpaid

    first = post_late_fee(account, season, date(2026, 1, 31))
    again = post_late_fee(account, season, date(2026, 1, 31))
    next_day = post_late_fee(account, season, date(2026, 2, 1))
    db.session.commit()

    assert first.amount == Decimal("135.39")
    assert again is None
    assert next_day.amount == Decimal("4.37")
    assert late_fee_total(account.id, season.id) == Decimal("139.76")
    assert season_receivable(account.id, season.id) == Decimal("2183.75")


def test_nothing_posted_before_start(tj_unpaid):
    account, season = tj_unpaid

    line = post_late_fee(account, season, date(2025, 12, 31))

    assert line is None
    assert late_fee_total(account.id, season.id) == Decimal("0.00")


def test_datetime_rejected(tj_unpaid):
    account, season = tj_unpaid

    with pytest.raises(LateFeeError, match="不要带时间"):
        late_fee_as_of(account, season, datetime(2026, 1, 31, 8, 0))


def test_page_size_must_be_positive(tj_unpaid):
    account, season = tj_unpaid

    with pytest.raises(LateFeeError, match="每批户数 0 无效"):
        post_late_fees(account.company_id, season.id, date(2026, 1, 31), page_size=0)


@pytest.mark.xdist_group("late_fee_batch")
def test_batch_processes_each_account_once(add_many_accounts, demo, monkeypatch):
    company = demo["TJ"]
    ids = add_many_accounts("TJ", 2500)
    run_billing("TJ", SEASON)
    season = get_season(company.id, SEASON)
    pages = []
    real_page = late_fees.post_late_fees_page

    def recording_page(*args, **kwargs):
        processed = real_page(*args, **kwargs)
        pages.append(processed)
        return processed

    monkeypatch.setattr(late_fees, "post_late_fees_page", recording_page)

    count = post_late_fees_task(company.id, season.id, "2026-01-31", page_size=1000)
    rerun = post_late_fees_task(company.id, season.id, "2026-01-31", page_size=1000)

    seen = Counter(account_id for page in pages for account_id in page)
    amounts = db.session.scalars(
        sa.select(LedgerEntry.amount).where(LedgerEntry.company_id == company.id, LedgerEntry.kind == "late_fee")
    ).all()
    assert count == 2500
    assert rerun == 2500
    assert [len(page) for page in pages] == [1000, 1000, 500, 0, 1000, 1000, 500, 0]
    assert sorted(seen) == ids
    assert set(seen.values()) == {2}  # once per run, two runs
    assert len(amounts) == 2500  # the re-run posted nothing
    assert set(amounts) == {Decimal("135.39")}


def test_statement_labels_new_kinds(tj_unpaid, login):
    account, season = tj_unpaid
    post_late_fee(account, season, date(2026, 1, 31))
    db.session.commit()

    page = login("tj_clerk").get(f"/accounts/{account.id}").get_data(as_text=True)

    assert "应收热费" in page
    assert "滞纳金" in page
    assert "135.39" in page
