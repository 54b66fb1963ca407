"""Late fees (滞纳金): a daily rate on the unpaid area-based principal of a season.

Accrual starts the day after the tariff's `late_fee_starts_after` and runs, past the end
of the season too, until the fee is paid or through the tariff's `late_fee_stops_after`
when that is set. The base of a day is the season's charge, rerate and waiver lines minus
the payments applied to the season before that day, so a payment posted on day D lowers
the base from D+1. Late fees are never part of the base. The daily amounts are summed
exactly and rounded once.
"""

import logging
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LATE_FEE_OWED_KINDS, RECEIVED_KINDS, LedgerEntry, memo_columns
from app.billing.precision import company_money_rule
from app.billing.proration import season_tariffs
from app.extensions import db
from app.i18n import M_
from app.money import ZERO, round_money
from app.network.models import Account
from app.payments.services import local_time
from app.tariffs.models import Season

logger = logging.getLogger(__name__)

ONE_DAY = timedelta(days=1)
# Lines whose sum is the area-based principal a late fee accrues on. A write-off takes its
# amount out of the principal from the start of the season, as a waiver does.
PRINCIPAL_KINDS = ("charge", "rerate", "waiver", "write_off")
# Accounts per transaction of the nightly posting job.
LATE_FEE_PAGE_SIZE = 1000


class LateFeeError(ValueError):
    """A late-fee request that cannot be carried out as given."""


def _check_date(on_date):
    if isinstance(on_date, datetime) or not isinstance(on_date, date):
        raise LateFeeError(f"计算日期 {on_date!r} 无效；请传入日期（如 2026-01-31），不要带时间。")


def accrue_late_fee(principal, payments, tariffs, on_date, forced_off_on=None):
    """Return the exact late fee accrued up to `on_date`, unrounded.

    `payments` is a list of (local date posted, amount paid) applied to the season.
    Each day uses the late-fee rule of the tariff version in force on it; the season's last
    version stays in force after the season ends. Days after a version's
    `late_fee_stops_after` and days from `forced_off_on` on accrue nothing.
    """
    total = ZERO
    for index, tariff in enumerate(tariffs):
        if tariff.late_fee_starts_after is None or not tariff.late_fee_rate_per_day:
            continue
        first = max(tariff.effective_from, tariff.late_fee_starts_after + ONE_DAY)
        last = on_date
        if index + 1 < len(tariffs):
            last = min(last, tariffs[index + 1].effective_from - ONE_DAY)
        if tariff.late_fee_stops_after is not None:
            last = min(last, tariff.late_fee_stops_after)
        if forced_off_on is not None:
            last = min(last, forced_off_on - ONE_DAY)
        if first > last:
            continue
        # The base is constant between payment days, so each stretch is base × rate × days.
        changes = sorted({paid_on + ONE_DAY for paid_on, _ in payments if first < paid_on + ONE_DAY <= last})
        cursor = first
        for boundary in changes + [last + ONE_DAY]:
            paid = sum((amount for paid_on, amount in payments if paid_on < cursor), ZERO)
            base = max(principal - paid, ZERO)
            total += base * tariff.late_fee_rate_per_day * (boundary - cursor).days
            cursor = boundary
    return total


def _season_lines(account_ids, season_id):
    """Return {account_id: (principal, [(date paid, amount)], late fees posted)} for a season."""
    facts = defaultdict(lambda: [ZERO, [], ZERO])
    rows = db.session.execute(
        sa.select(LedgerEntry.account_id, LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.created_at).where(
            LedgerEntry.account_id.in_(account_ids),
            LedgerEntry.season_id == season_id,
            LedgerEntry.kind.in_(PRINCIPAL_KINDS + RECEIVED_KINDS + ("late_fee",)),
        )
    )
    for account_id, kind, amount, created_at in rows:
        entry = facts[account_id]
        if kind in PRINCIPAL_KINDS:
            entry[0] += amount
        elif kind in RECEIVED_KINDS:
            # A refund or reversal is a negative payment on the day it was posted.
            entry[1].append((local_time(created_at).date(), -amount))
        else:
            entry[2] += amount
    return facts


def late_fee_as_of(account, season, on_date):
    """Return the late fee an account owes for a season up to and including `on_date`, rounded once."""
    _check_date(on_date)
    with company_money_rule(account.company_id):
        principal, payments, _posted = _season_lines([account.id], season.id)[account.id]
        # NOTE: only the current 强停 is stored. Clearing `forced_off_on` after 复热 makes the
        # days of that 强停 accrue again unless their late fee was posted before.
        exact = accrue_late_fee(principal, payments, season_tariffs(season), on_date, account.forced_off_on)
        return round_money(exact)


def charges_late_fees_by(tariffs, on_date):
    """Tell whether any of a season's tariff versions accrues a late fee on a day up to `on_date`."""
    return any(
        tariff.late_fee_rate_per_day and tariff.late_fee_starts_after is not None and tariff.late_fee_starts_after < on_date
        for tariff in tariffs
    )


def late_fee_seasons(company_id, on_date):
    """Return the company's seasons whose tariff charges late fees by `on_date`, earliest first.

    Prior seasons count too: their unpaid fee keeps accruing under their own rule.
    """
    seasons = db.session.scalars(
        sa.select(Season).where(Season.company_id == company_id, Season.start_on <= on_date).order_by(Season.start_on)
    ).all()
    return [season for season in seasons if charges_late_fees_by(season_tariffs(season), on_date)]


def late_fees_as_of(account, on_date):
    """Return {season: late fee up to and including `on_date`} for every season that charges one, rounded once each.

    Seasons whose accrual is zero are left out.
    """
    _check_date(on_date)
    owed = {}
    for season in late_fee_seasons(account.company_id, on_date):
        amount = late_fee_as_of(account, season, on_date)
        if amount:
            owed[season] = amount
    return owed


def late_fee_key(account_id, season_id, on_date):
    return f"late_fee:{season_id}:{account_id}:{on_date.isoformat()}"


def _late_fee_entry(account, season, on_date, total, posted, user_id):
    difference = total - posted
    if difference == 0:
        return None
    return LedgerEntry(
        company_id=account.company_id, account_id=account.id, season_id=season.id, kind="late_fee",
        amount=difference, cause_type="late_fee_run", idempotency_key=late_fee_key(account.id, season.id, on_date),
        **memo_columns(M_("截至 %(date)s 累计滞纳金 %(total)s 元", date=on_date.isoformat(), total=total)), created_by_id=user_id,
    )


def post_late_fee(account, season, on_date, user_id=None):
    """Add a `late_fee` line raising the account's posted late fee to its accrual as of `on_date`.

    Returns the new line, or None when this date was posted before or nothing changed. A
    lower accrual (after a waiver of the charge, say) posts a negative correction. A
    late-fee waiver is a `late_fee_waiver` line, which this comparison leaves out, so the
    waived amount is not posted again. The caller commits.
    """
    _check_date(on_date)
    key = late_fee_key(account.id, season.id, on_date)
    posted_keys = set(
        db.session.scalars(
            sa.select(LedgerEntry.idempotency_key).where(
                LedgerEntry.company_id == account.company_id, LedgerEntry.idempotency_key == key
            )
        )
    )
    facts = _season_lines([account.id], season.id)[account.id]
    with company_money_rule(account.company_id):
        entry = _post_late_fee(account, season, on_date, season_tariffs(season), facts, posted_keys, user_id)
    db.session.flush()
    return entry


def _post_late_fee(account, season, on_date, tariffs, facts, posted_keys, user_id):
    if late_fee_key(account.id, season.id, on_date) in posted_keys:
        return None
    principal, payments, posted = facts
    exact = accrue_late_fee(principal, payments, tariffs, on_date, account.forced_off_on)
    entry = _late_fee_entry(account, season, on_date, round_money(exact), posted, user_id)
    if entry is not None:
        db.session.add(entry)
    return entry


def post_late_fees_page(company_id, season, on_date, after_id, page_size, user_id=None):
    """Post late fees for the next `page_size` accounts with id above `after_id` and lines on the season.

    An account without lines on the season owes it nothing, so it is skipped. Returns the
    ids of the accounts processed, in order. The caller commits.
    """
    on_season = sa.select(LedgerEntry.id).where(
        LedgerEntry.company_id == company_id, LedgerEntry.account_id == Account.id, LedgerEntry.season_id == season.id
    )
    accounts = db.session.scalars(
        sa.select(Account)
        .where(Account.company_id == company_id, Account.id > after_id, on_season.exists())
        .order_by(Account.id)
        .limit(page_size)
    ).all()
    if not accounts:
        return []
    ids = [account.id for account in accounts]
    tariffs = season_tariffs(season)
    facts = _season_lines(ids, season.id)
    keys = [late_fee_key(account_id, season.id, on_date) for account_id in ids]
    posted_keys = set(
        db.session.scalars(
            sa.select(LedgerEntry.idempotency_key).where(
                LedgerEntry.company_id == company_id, LedgerEntry.idempotency_key.in_(keys)
            )
        )
    )
    for account in accounts:
        _post_late_fee(account, season, on_date, tariffs, facts[account.id], posted_keys, user_id)
    return ids


def post_late_fees(company_id, season_id, on_date, page_size=LATE_FEE_PAGE_SIZE, user_id=None):
    """Post late fees as of `on_date` for every account of a company, one transaction per page.

    Pages follow account ids, so each account is processed once per run. A re-run after a
    failure skips the keys already posted. Returns the number of accounts processed.
    """
    _check_date(on_date)
    if page_size < 1:
        raise LateFeeError(f"每批户数 {page_size} 无效；请填写大于 0 的整数，如 1000。")
    season = db.session.get(Season, season_id)
    if season is None or season.company_id != company_id:
        raise LateFeeError(f"公司 {company_id} 没有编号为 {season_id} 的供暖季；请检查供暖季。")
    processed = 0
    after_id = 0
    with company_money_rule(company_id):
        while True:
            try:
                ids = post_late_fees_page(company_id, season, on_date, after_id, page_size, user_id)
                db.session.commit()
            except Exception:
                db.session.rollback()
                logger.exception("Late fees of company %s season %s failed after account %s", company_id, season_id, after_id)
                raise
            if not ids:
                break
            processed += len(ids)
            after_id = ids[-1]
            logger.info("Late fees of company %s as of %s: %s accounts processed", company_id, on_date, processed)
    return processed


def late_fee_receivable(account_id, season_id):
    """Sum the late fees an account owes for a season before payments: posted late fees less waivers."""
    amount = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.season_id == season_id,
            LedgerEntry.kind.in_(LATE_FEE_OWED_KINDS),
        )
    )
    return amount if amount is not None else Decimal("0.00")


def late_fee_total(account_id, season_id):
    """Sum the late fees posted on an account for a season."""
    amount = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.season_id == season_id, LedgerEntry.kind == "late_fee"
        )
    )
    return amount if amount is not None else Decimal("0.00")
