"""The receivable identity of the ledger, checked per account, company and season.

For every account and season, receivable = received + waived + written off + outstanding
− credit. Receivable is the billed total (charge, rerate and settlement lines) before
waivers. Outstanding is the amount the counter collects (app/payments amount_owed), and credit
is the part paid beyond the receivable after a later reduction. Late fees are owed on
top of the receivable and obey the same identity: posted late fees = late fees received +
late fees waived + late fees outstanding − late-fee credit. The checked gap is the sum
of both.

The check also compares the HQ season totals (app/hq/totals.py) with the ledger: each
account's season balance and the company's season total with its capped received.
`find_company_breaks` compares the HQ account count of a company with its accounts,
once per company because the count covers every season.
"""

import hashlib
import logging
from dataclasses import asdict, dataclass, fields
from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import (
    LATE_FEE_RECEIVED_KINDS, RECEIVABLE_KINDS, RECEIVED_KINDS, InvariantFinding, LedgerEntry, utcnow,
)
from app.billing.services import receivables_report
from app.extensions import db
from app.hq.models import AccountSeasonBalance, CompanyAccountCount, CompanySeasonTotal
from app.hq.totals import capped_received
from app.money import ZERO, format_money
from app.network.models import Account
from app.org.models import Company
from app.payments.models import Payment, Refund
from app.payments.services import amount_owed
from app.tariffs.models import Season

logger = logging.getLogger(__name__)

BILLED_KINDS = ("charge", "rerate", "settlement")
WRITE_OFF_KINDS = ("write_off",)
# Kinds whose lines must not raise what is owed. The `sign` check reports a positive one.
NON_POSITIVE_KINDS = ("payment", "late_fee_payment", "waiver", "late_fee_waiver", "write_off")
# Lines a payment or refund posts: receivables paid, late fees paid, and money beyond what was owed.
PAYMENT_LINE_KINDS = RECEIVED_KINDS + LATE_FEE_RECEIVED_KINDS + ("credit",)


class InvariantError(LookupError):
    """An invariant check asked for a company or season that does not exist."""


@dataclass(frozen=True)
class SeasonFigures:
    """Receivable and how it was settled, for one account or a whole company and season."""

    receivable: Decimal = ZERO
    received: Decimal = ZERO
    waived: Decimal = ZERO
    written_off: Decimal = ZERO
    outstanding: Decimal = ZERO
    credit: Decimal = ZERO
    # Posted late fees (`late_fee` lines) and how they were settled, in the same roles.
    late_fee: Decimal = ZERO
    late_fee_received: Decimal = ZERO
    late_fee_waived: Decimal = ZERO
    late_fee_outstanding: Decimal = ZERO
    late_fee_credit: Decimal = ZERO

    @property
    def late_fee_gap(self):
        """Posted late fees left unexplained by their settlement; 0.00 when that identity holds."""
        settled = self.late_fee_received + self.late_fee_waived + self.late_fee_outstanding - self.late_fee_credit
        return self.late_fee - settled

    @property
    def gap(self):
        """Receivable and late fees left unexplained by the other figures; 0.00 when the identity holds."""
        settled = self.received + self.waived + self.written_off + self.outstanding - self.credit
        return self.receivable - settled + self.late_fee_gap

    def __add__(self, other):
        return SeasonFigures(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(SeasonFigures)))


@dataclass(frozen=True)
class InvariantBreak:
    """One failed check: where it failed, which rule, and the figures involved."""

    company_id: int
    # None for a check that covers the whole company.
    season_id: int | None
    account_id: int | None
    check: str
    detail: str

    def as_dict(self):
        return asdict(self)


def _ledger_sums(company_id, season_id):
    """Return {account_id: {kind: sum}} of a company's lines for a season."""
    sums = {}
    rows = db.session.execute(
        sa.select(LedgerEntry.account_id, LedgerEntry.kind, sa.func.sum(LedgerEntry.amount))
        .where(LedgerEntry.company_id == company_id, LedgerEntry.season_id == season_id)
        .group_by(LedgerEntry.account_id, LedgerEntry.kind)
    )
    for account_id, kind, amount in rows:
        sums.setdefault(account_id, {})[kind] = amount
    return sums


def account_figures(account, season_id, sums=None):
    """Return the SeasonFigures of one account and season."""
    if sums is None:
        sums = _ledger_sums(account.company_id, season_id).get(account.id, {})

    def total(kinds):
        return sum((sums.get(kind, ZERO) for kind in kinds), ZERO)

    owed = amount_owed(account)
    season_owed = next((s for s in owed.seasons if s.season.id == season_id), None)
    receivable = total(BILLED_KINDS)
    received = -total(RECEIVED_KINDS)
    waived = -sums.get("waiver", ZERO)
    written_off = -total(WRITE_OFF_KINDS)
    late_fee = sums.get("late_fee", ZERO)
    late_fee_received = -total(LATE_FEE_RECEIVED_KINDS)
    late_fee_waived = -sums.get("late_fee_waiver", ZERO)
    return SeasonFigures(
        receivable=receivable,
        received=received,
        waived=waived,
        written_off=written_off,
        outstanding=season_owed.outstanding if season_owed else ZERO,
        credit=max(received + waived + written_off - receivable, ZERO),
        late_fee=late_fee,
        late_fee_received=late_fee_received,
        late_fee_waived=late_fee_waived,
        late_fee_outstanding=season_owed.late_fee_outstanding if season_owed else ZERO,
        late_fee_credit=max(late_fee_received + late_fee_waived - late_fee, ZERO),
    )


def _payment_breaks(company_id, season_id, account_ids):
    """Find accounts whose payments less refunds are not fully posted to the ledger, across all seasons.

    A payment posts `payment` and `late_fee_payment` lines and, for money beyond what was owed, a `credit` line; a
    refund posts `refund` or `reversal` lines and a positive `credit` line for the part of the
    credit it pays back.
    """
    if not account_ids:
        return []
    paid = dict(
        db.session.execute(
            sa.select(Payment.account_id, sa.func.sum(Payment.amount))
            .where(Payment.company_id == company_id, Payment.account_id.in_(account_ids))
            .group_by(Payment.account_id)
        ).all()
    )
    refunded = dict(
        db.session.execute(
            sa.select(Refund.account_id, sa.func.sum(Refund.amount))
            .where(Refund.company_id == company_id, Refund.status == "succeeded", Refund.account_id.in_(account_ids))
            .group_by(Refund.account_id)
        ).all()
    )
    posted = dict(
        db.session.execute(
            sa.select(LedgerEntry.account_id, sa.func.sum(LedgerEntry.amount))
            .where(
                LedgerEntry.company_id == company_id,
                LedgerEntry.kind.in_(PAYMENT_LINE_KINDS),
                LedgerEntry.account_id.in_(account_ids),
            )
            .group_by(LedgerEntry.account_id)
        ).all()
    )
    breaks = []
    for account_id in account_ids:
        collected = (paid.get(account_id) or ZERO) - (refunded.get(account_id) or ZERO)
        allocated = -(posted.get(account_id) or ZERO)
        if collected != allocated:
            detail = f"payments {format_money(collected)} but payment lines {format_money(allocated)}"
            breaks.append(InvariantBreak(company_id, season_id, account_id, "payment_allocation", detail))
    return breaks


def _sign_breaks(company_id, season_id):
    rows = db.session.execute(
        sa.select(LedgerEntry.id, LedgerEntry.account_id, LedgerEntry.kind, LedgerEntry.amount).where(
            LedgerEntry.company_id == company_id,
            LedgerEntry.season_id == season_id,
            LedgerEntry.kind.in_(NON_POSITIVE_KINDS),
            LedgerEntry.amount > 0,
        )
    )
    return [
        InvariantBreak(company_id, season_id, account_id, "sign", f"{kind} line {line_id} is positive: {format_money(amount)}")
        for line_id, account_id, kind, amount in rows
    ]


def _season_total_breaks(company_id, season_id, sums):
    """Compare the HQ account balances and company total of a season with `sums`, the ledger's {account_id: {kind: sum}}."""
    expected = {}
    for account_id, kinds in sums.items():
        if not any(kind in kinds for kind in RECEIVABLE_KINDS + RECEIVED_KINDS):
            continue
        receivable = sum((kinds.get(kind, ZERO) for kind in RECEIVABLE_KINDS), ZERO)
        received = -sum((kinds.get(kind, ZERO) for kind in RECEIVED_KINDS), ZERO)
        expected[account_id] = (receivable, received)
    stored = {
        account_id: (receivable, received)
        for account_id, receivable, received in db.session.execute(
            sa.select(AccountSeasonBalance.account_id, AccountSeasonBalance.receivable, AccountSeasonBalance.received)
            .where(AccountSeasonBalance.company_id == company_id, AccountSeasonBalance.season_id == season_id)
        )
    }
    breaks = []
    for account_id in sorted(set(expected) | set(stored)):
        if stored.get(account_id) != expected.get(account_id):
            detail = f"HQ season balance {_pair(stored.get(account_id))} but ledger {_pair(expected.get(account_id))}"
            breaks.append(InvariantBreak(company_id, season_id, account_id, "hq_totals", detail))
    total = db.session.execute(
        sa.select(CompanySeasonTotal.receivable, CompanySeasonTotal.received)
        .where(CompanySeasonTotal.company_id == company_id, CompanySeasonTotal.season_id == season_id)
    ).one_or_none()
    ledger_total = None
    if expected:
        ledger_total = (
            sum((receivable for receivable, _ in expected.values()), ZERO),
            sum((capped_received(receivable, received) for receivable, received in expected.values()), ZERO),
        )
    if (tuple(total) if total is not None else None) != ledger_total:
        detail = f"HQ season total {_pair(total)} but ledger {_pair(ledger_total)}"
        breaks.append(InvariantBreak(company_id, season_id, None, "hq_totals", detail))
    return breaks


def _pair(figures):
    """Describe (receivable, received) for a finding, or `none` when there is no row."""
    if figures is None:
        return "none"
    receivable, received = figures
    return f"receivable {format_money(receivable)} received {format_money(received)}"


def find_invariant_breaks(company_id, season_id):
    """Check every account of a company with lines in a season, then the company total.

    Returns a list of InvariantBreak, empty when the ledger is consistent.
    """
    company = db.session.get(Company, company_id)
    season = db.session.get(Season, season_id)
    if company is None or season is None or season.company_id != company_id:
        raise InvariantError(f"公司 {company_id} 没有编号为 {season_id} 的供暖季；请检查公司和供暖季。")
    sums = _ledger_sums(company_id, season_id)
    accounts = db.session.scalars(sa.select(Account).where(Account.id.in_(sums)).order_by(Account.id)).all()

    breaks = _sign_breaks(company_id, season_id)
    total = SeasonFigures()
    for account in accounts:
        figures = account_figures(account, season_id, sums[account.id])
        total += figures
        if figures.gap != 0:
            breaks.append(InvariantBreak(company_id, season_id, account.id, "identity", _describe(figures)))
    breaks += _payment_breaks(company_id, season_id, [account.id for account in accounts])
    breaks += _season_total_breaks(company_id, season_id, sums)

    # The receivables report sums the same lines by another query; it must agree with the accounts.
    report_total = receivables_report(company.code, season.name)["receivable_total"]
    net_receivable = format_money(total.receivable - total.waived - total.written_off)
    if report_total != net_receivable:
        detail = f"receivables report {report_total} but accounts sum to {net_receivable}"
        breaks.append(InvariantBreak(company_id, season_id, None, "company_total", detail))
    if total.gap != 0:
        breaks.append(InvariantBreak(company_id, season_id, None, "identity", _describe(total)))
    if breaks:
        logger.warning("Company %s season %s has %s ledger invariant breaks", company_id, season_id, len(breaks))
    return breaks


def find_company_breaks(company_id):
    """Compare the HQ account count of a company with its accounts; returns a list of InvariantBreak."""
    stored = (
        sa.select(CompanyAccountCount.accounts).where(CompanyAccountCount.company_id == company_id).scalar_subquery()
    )
    counted = sa.select(sa.func.count(Account.id)).where(Account.company_id == company_id).scalar_subquery()
    # One statement, so both figures come from the same snapshot while accounts are being added.
    stored_count, account_count = db.session.execute(sa.select(stored, counted)).one()
    # A company without a count row has no accounts counted, as after a rebuild of a company without accounts.
    if (stored_count or 0) == account_count:
        return []
    stored_text = "none" if stored_count is None else stored_count
    detail = f"HQ account count {stored_text} but {account_count} accounts"
    logger.warning("Company %s: %s", company_id, detail)
    return [InvariantBreak(company_id, None, None, "hq_account_count", detail)]


def _describe(figures):
    text = (
        f"receivable {format_money(figures.receivable)} != received {format_money(figures.received)}"
        f" + waived {format_money(figures.waived)} + written off {format_money(figures.written_off)}"
        f" + outstanding {format_money(figures.outstanding)} - credit {format_money(figures.credit)}"
    )
    if figures.late_fee_gap != 0:
        text += (
            f"; late fees {format_money(figures.late_fee)} != received {format_money(figures.late_fee_received)}"
            f" + waived {format_money(figures.late_fee_waived)} + outstanding {format_money(figures.late_fee_outstanding)}"
            f" - credit {format_money(figures.late_fee_credit)}"
        )
    return text


def _fingerprint(found):
    text = f"{found.season_id}|{found.account_id or '-'}|{found.check}|{found.detail}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_findings(company_id, season_id, breaks, now=None):
    """Store the breaks of one check of a company and season as InvariantFinding rows.

    A break found before updates its row and reopens it if it was resolved. An open
    finding of this season that the check no longer reports is marked resolved. Returns
    (new or reopened findings, findings resolved). The caller commits.
    """
    now = now or utcnow()
    stored = {
        finding.fingerprint: finding
        for finding in db.session.scalars(
            sa.select(InvariantFinding).where(InvariantFinding.company_id == company_id, InvariantFinding.season_id == season_id)
        )
    }
    opened = []
    seen = set()
    for found in breaks:
        fingerprint = _fingerprint(found)
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        finding = stored.get(fingerprint)
        if finding is None:
            finding = InvariantFinding(
                company_id=company_id, season_id=season_id, account_id=found.account_id, check_name=found.check,
                detail=found.detail[:500], fingerprint=fingerprint, first_found_at=now, last_found_at=now, times_found=1,
            )
            db.session.add(finding)
            opened.append(finding)
            continue
        if finding.resolved_at is not None:
            finding.resolved_at = None
            opened.append(finding)
        finding.last_found_at = now
        finding.times_found += 1
    resolved = [f for fp, f in stored.items() if fp not in seen and f.resolved_at is None]
    for finding in resolved:
        finding.resolved_at = now
    db.session.flush()
    return opened, resolved


def open_findings():
    """Return the unresolved findings the current scope can see, newest first."""
    return db.session.scalars(
        sa.select(InvariantFinding)
        .where(InvariantFinding.resolved_at.is_(None))
        .order_by(InvariantFinding.last_found_at.desc(), InvariantFinding.id)
    ).all()
