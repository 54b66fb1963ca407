"""Ledger entries: every change of money on an account is a dated line with its cause."""

from datetime import datetime, timezone

import sqlalchemy as sa

from app.extensions import db
from app.money import Area, Money, Rate
from app.tenancy import CompanyOwned

# Entry kinds. Charges and adjustments are positive when they raise what is owed;
# payments are negative.
ENTRY_KINDS = {
    "charge": "应收热费",
    "rerate": "调整应收",
    "waiver": "减免",
    "prior_arrears": "往年欠费",
    "payment": "实收",
    "settlement": "计量结算",
    "late_fee": "滞纳金",
    # Money received beyond what the account owed (e.g. a bill paid twice); negative, and not
    # offset against later receivables automatically.
    "credit": "多缴款",
    # A payment paid back (positive, undoing part of a payment line); linked to its Refund.
    "refund": "退费",
    # A payment the collecting bank cancelled the same day (positive, undoing the payment line).
    "reversal": "冲正",
}
# Kinds that make up a season's receivable (应收). Late fees are owed on top of it and
# stay out of the collection rate.
RECEIVABLE_KINDS = ("charge", "rerate", "waiver", "settlement")
# Kinds that make up what was received (实收): payments, less refunds and reversals.
RECEIVED_KINDS = ("payment", "refund", "reversal")


def utcnow():
    return datetime.now(timezone.utc)


class LedgerEntry(CompanyOwned, db.Model):
    """One line of an account's ledger. Lines are never edited; corrections are new lines."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "idempotency_key"),
        sa.Index("ix_ledger_entry_company_season_kind", "company_id", "season_id", "kind"),
        sa.Index("ix_ledger_entry_company_account", "company_id", "account_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    # NULL for arrears carried from before the first season on the platform.
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"))
    kind = sa.Column(sa.String(16), nullable=False)
    amount = sa.Column(Money(), nullable=False)
    # Inputs of a computed line, kept so that a statement can show how it was derived.
    charge_area = sa.Column(Area())
    unit_price = sa.Column(Rate())
    ratio = sa.Column(Rate())
    # What caused the line: billing_run, process_instance, payment or ledger_import, and its id.
    cause_type = sa.Column(sa.String(32), nullable=False)
    cause_id = sa.Column(sa.Integer)
    # A line is posted at most once per key, so re-runs and retries never post twice.
    idempotency_key = sa.Column(sa.String(120), nullable=False)
    memo = sa.Column(sa.String(255), nullable=False, default="")
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class BillingRun(CompanyOwned, db.Model):
    """One billing run of a company and season, with what it posted."""

    id = sa.Column(sa.Integer, primary_key=True)
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"), nullable=False)
    started_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at = sa.Column(sa.DateTime(timezone=True))
    accounts_billed = sa.Column(sa.Integer, nullable=False, default=0)
    amount_posted = sa.Column(Money(), nullable=False, default=0)
    started_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
