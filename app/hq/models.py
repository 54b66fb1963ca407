"""Daily totals of the ledger for the HQ dashboards, kept current as ledger lines are posted.

A ledger line adds its amount and one entry to two rows: the community row keyed by
(company, season, community, category, local day, kind) and the company row without the
community. Reading a view as of a date sums the rows up to that day, so every figure is
exact for the end of the chosen day while reading a few thousand rows instead of the
ledger. `season_id` is 0 for lines that belong to no season (prior arrears taken over at
import). `category` is the account's user type when the line was posted. Completed human
tasks are counted the same way, per process step and local day of completion.
"""

import sqlalchemy as sa

from app.extensions import db
from app.money import Money
from app.tenancy import CompanyOwned

NO_SEASON = 0


class CommunityDailyTotal(CompanyOwned, db.Model):
    """Sum and count of one kind of ledger line per community, user type and local day."""

    __tablename__ = "hq_community_daily_total"
    __table_args__ = (
        sa.UniqueConstraint("company_id", "season_id", "community_id", "category", "day", "kind"),
        # Covering on PostgreSQL, so a company's drill-down is an index-only scan.
        sa.Index("ix_hq_community_daily_total_company_day", "company_id", "day",
                 postgresql_include=["community_id", "season_id", "kind", "amount", "entries"]),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    season_id = sa.Column(sa.Integer, nullable=False)
    community_id = sa.Column(sa.Integer, sa.ForeignKey("community.id"), nullable=False)
    category = sa.Column(sa.String(16), nullable=False)
    day = sa.Column(sa.Date, nullable=False)
    kind = sa.Column(sa.String(16), nullable=False)
    amount = sa.Column(Money(), nullable=False, default=0)
    entries = sa.Column(sa.Integer, nullable=False, default=0)


class CompanyDailyTotal(CompanyOwned, db.Model):
    """Sum and count of one kind of ledger line per company, user type and local day."""

    __tablename__ = "hq_company_daily_total"
    __table_args__ = (sa.UniqueConstraint("company_id", "season_id", "category", "day", "kind"),)

    id = sa.Column(sa.Integer, primary_key=True)
    season_id = sa.Column(sa.Integer, nullable=False)
    category = sa.Column(sa.String(16), nullable=False)
    day = sa.Column(sa.Date, nullable=False)
    kind = sa.Column(sa.String(16), nullable=False)
    amount = sa.Column(Money(), nullable=False, default=0)
    entries = sa.Column(sa.Integer, nullable=False, default=0)


class StepDailyTotal(CompanyOwned, db.Model):
    """Human tasks of one process step completed on one local day, and the sum of their waits."""

    __tablename__ = "hq_step_daily_total"
    __table_args__ = (sa.UniqueConstraint("company_id", "process_type", "task_spec_name", "day"),)

    id = sa.Column(sa.Integer, primary_key=True)
    process_type = sa.Column(sa.String(32), nullable=False)
    task_spec_name = sa.Column(sa.String(64), nullable=False)
    # The step's title as last completed, for display.
    title = sa.Column(sa.String(100), nullable=False)
    day = sa.Column(sa.Date, nullable=False)
    completed = sa.Column(sa.Integer, nullable=False, default=0)
    # Seconds from each task's creation to its completion, summed.
    wait_seconds = sa.Column(sa.BigInteger, nullable=False, default=0)


class AccountSeasonBalance(CompanyOwned, db.Model):
    """One account's receivable and received of one season, summed over its ledger lines.

    Receivable sums the RECEIVABLE_KINDS lines and received is minus the sum of the
    RECEIVED_KINDS lines, so a payment raises it. Lines without a season are not counted.
    The row exists so that a new line can change the season's capped received total by
    the difference it makes to this one account (see CompanySeasonTotal).

    The billing run writes one row per billed account, so the table keeps only the key it
    upserts on and has no foreign keys. Every row is written in the statement or flush that
    inserts its ledger lines, and those lines' foreign keys check the same company, season
    and account. A row whose ledger lines were deleted outside the app stays until
    `rebuild_season_totals` derives the table from the ledger again.
    """

    __tablename__ = "hq_account_season_balance"

    company_id = sa.Column(sa.Integer, primary_key=True)
    season_id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, primary_key=True)
    receivable = sa.Column(Money(), nullable=False, default=0)
    received = sa.Column(Money(), nullable=False, default=0)


class CompanySeasonTotal(CompanyOwned, db.Model):
    """A company's receivable and collected money of one season, for the HQ collection page.

    `receivable` is the sum of the accounts' receivable. `received` sums each account's
    received capped at its receivable, and counts nothing for an account whose receivable
    is zero or less: money paid beyond what an account owes is credit, not collection.
    """

    __tablename__ = "hq_company_season_total"
    __table_args__ = (sa.UniqueConstraint("company_id", "season_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"), nullable=False)
    receivable = sa.Column(Money(), nullable=False, default=0)
    received = sa.Column(Money(), nullable=False, default=0)


class CompanyAccountCount(CompanyOwned, db.Model):
    """Number of accounts of a company, for the HQ collection page; accounts are never deleted."""

    __tablename__ = "hq_company_account_count"
    __table_args__ = (sa.UniqueConstraint("company_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    accounts = sa.Column(sa.Integer, nullable=False, default=0)
