"""Ledger entries: every change of money on an account is a dated line with its cause."""

from datetime import datetime, timezone

import sqlalchemy as sa
from flask_babel import force_locale

from app.extensions import db
from app.i18n import DEFAULT_LOCALE, NC_, N_, stored_message
from app.money import Area, Money, Rate, ScaledDecimal
from app.tenancy import CompanyOwned

# Entry kinds -> Chinese label (translated where shown). Charges and adjustments are
# positive when they raise what is owed; payments are negative.
ENTRY_KINDS = {
    "charge": N_("应收热费"),
    "rerate": N_("调整应收"),
    "waiver": N_("减免"),
    "prior_arrears": N_("往年欠费"),
    "payment": N_("实收"),
    "settlement": N_("计量结算"),
    "late_fee": N_("滞纳金"),
    # The part of a payment that paid a season's posted late fees (negative). It stays out of
    # the late-fee base, which only payments of the receivable lower.
    "late_fee_payment": N_("实收滞纳金"),
    # Part of a payment's late-fee lines paid back by a refund or a bank reversal (positive),
    # linked to its Refund. It raises the season's unpaid late fee again.
    "late_fee_refund": N_("退滞纳金"),
    # An approved waiver of a season's posted late fees (negative). The nightly late-fee job
    # compares accruals with `late_fee` lines only, so it never posts the waived amount again.
    "late_fee_waiver": N_("滞纳金减免"),
    # Money received beyond what the account owed (e.g. a bill paid twice); negative, and not
    # offset against later receivables automatically.
    "credit": N_("多缴款"),
    # A payment paid back (positive, undoing part of a payment line); linked to its Refund.
    "refund": NC_("refund kind", "退费"),
    # A payment the collecting bank cancelled the same day (positive, undoing the payment line).
    "reversal": N_("冲正"),
    # Outstanding receivable taken off the books as uncollectable (核销); negative, with a reason.
    "write_off": N_("核销"),
}
# Kinds that make up a season's net receivable (应收). Late fees are owed on top of it and
# stay out of the collection rate. A write-off lowers what is still to be collected.
RECEIVABLE_KINDS = ("charge", "rerate", "waiver", "settlement", "write_off")
# Kinds that make up what was received (实收): payments, less refunds and reversals.
RECEIVED_KINDS = ("payment", "refund", "reversal")
# Kinds that make up a season's late fees owed, before payments (滞纳金应收).
LATE_FEE_OWED_KINDS = ("late_fee", "late_fee_waiver")
# Kinds that make up the late fees received: payments less refunds and reversals.
LATE_FEE_RECEIVED_KINDS = ("late_fee_payment", "late_fee_refund")


def utcnow():
    return datetime.now(timezone.utc)


class LedgerEntry(CompanyOwned, db.Model):
    """One line of an account's ledger. Lines are never edited; corrections are new lines."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "idempotency_key"),
        sa.Index("ix_ledger_entry_company_season_kind", "company_id", "season_id", "kind"),
        sa.Index("ix_ledger_entry_company_account", "company_id", "account_id"),
        # One key checks both the account and that it belongs to the line's company, which
        # the account's own foreign key ties to an existing company. A separate foreign key to
        # company would lock that one company row once per line, and batches posted side by
        # side then share the lock through a MultiXact on every line.
        sa.ForeignKeyConstraint(["company_id", "account_id"], ["account.company_id", "account.id"]),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, nullable=False)
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
    # The memo in Chinese, whatever the language of the request that posted the line.
    memo = sa.Column(sa.String(255), nullable=False, default="")
    # The memo's msgid and values (Message.as_data()), from which pages show it in the
    # reader's language. NULL for lines whose memo is data or was stored as text only.
    memo_message = sa.Column(sa.JSON)
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # No index of its own, because the unique key and both indexes above lead with company_id.
    company_id = sa.Column(sa.Integer, nullable=False)

    @property
    def shown_memo(self):
        """The memo in the reader's language.

        A line stored with its msgid is translated from it. An older line without one is
        translated when its text matches a memo msgid (app.billing.memos), else shown as stored.
        """
        if self.memo_message:
            return stored_message(self.memo_message, self.memo)
        from app.billing.memos import shown_old_memo

        return shown_old_memo(self.memo)


def memo_columns(message):
    """Return the `memo` and `memo_message` values of a ledger line for a Message.

    `memo` is the Chinese text, cut to the column's 255 characters, whatever the language
    of the request that posts the line.
    """
    with force_locale(DEFAULT_LOCALE):
        text = str(message)
    return {"memo": text[:255], "memo_message": message.as_data()}


class BillingRun(CompanyOwned, db.Model):
    """One billing run of a company and season, with what it posted."""

    id = sa.Column(sa.Integer, primary_key=True)
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"), nullable=False)
    started_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at = sa.Column(sa.DateTime(timezone=True))
    accounts_billed = sa.Column(sa.Integer, nullable=False, default=0)
    amount_posted = sa.Column(Money(), nullable=False, default=0)
    started_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))


# Orders in which a payment pays an account's outstanding receivables (labels translated where shown).
ALLOCATION_ORDERS = {
    "oldest_first": N_("先还最早欠费（往年在前）"),
    "current_first": N_("先还本季，再从最早欠费还起"),
}


class AllocationPolicy(CompanyOwned, db.Model):
    """How a company's payments are split over an account's outstanding seasons.

    A company without a row uses `oldest_first`. Counter and channel payments both apply
    it through app/payments/services.allocate_payment. Each season's posted late fees are
    paid right after its receivable, or with `late_fees_last` only once every receivable
    is paid.
    """

    __table_args__ = (sa.UniqueConstraint("company_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    order = sa.Column(sa.String(24), nullable=False, default="oldest_first")
    late_fees_last = sa.Column(sa.Boolean, nullable=False, default=False)
    updated_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class CollectionTask(CompanyOwned, db.Model):
    """An account in arrears assigned to a collector (清欠); one open task per account."""

    __table_args__ = (sa.UniqueConstraint("company_id", "account_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    collector_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=False)
    assigned_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    assigned_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # Outstanding receivable when the task was assigned, in yuan.
    amount_at_assignment = sa.Column(Money(), nullable=False)
    note = sa.Column(sa.String(255), nullable=False, default="")

    collector = db.relationship("User", foreign_keys=[collector_id])


# Status of a retroactive change and its difference lines.
RERATE_STATUSES = {"pending": N_("待审批"), "posted": N_("已过账"), "rejected": N_("已驳回")}
RERATE_CHANGE_KINDS = {"account_terms": N_("面积或用户类型变更"), "status": N_("供暖状态变更"), "tariff": N_("收费标准变更")}


class RerateChange(CompanyOwned, db.Model):
    """A retroactive change (area, user type, status or tariff) whose difference lines await approval."""

    id = sa.Column(sa.Integer, primary_key=True)
    kind = sa.Column(sa.String(24), nullable=False)
    # The account the change concerns; NULL for a tariff change, which concerns every billed account.
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"))
    # First day the change applies; every season ending on or after it is re-rated.
    effective_from = sa.Column(sa.Date, nullable=False)
    # For a status change: the status the account has for `season_id`.
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"))
    billing_status = sa.Column(sa.String(16))
    # For an area or user-type change: the terms from `effective_from` on; NULL keeps that term.
    # They are recorded on the account only when the change is posted.
    new_building_area = sa.Column(Area())
    new_usable_area = sa.Column(Area())
    new_user_type = sa.Column(sa.String(16))
    # For a tariff change: the pending tariff version it bills, made active when the change is
    # posted and withdrawn when it is rejected. NULL re-rates with the active versions only.
    tariff_id = sa.Column(sa.Integer, sa.ForeignKey("tariff.id"))
    description = sa.Column(sa.String(255), nullable=False, default="")
    status = sa.Column(sa.String(16), nullable=False, default="pending")
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    decided_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    decided_at = sa.Column(sa.DateTime(timezone=True))

    proposals = db.relationship("RerateProposal", order_by="RerateProposal.id", cascade="all, delete-orphan")


class RerateProposal(CompanyOwned, db.Model):
    """One difference line of a RerateChange: what was billed, what is due now, and the gap."""

    __table_args__ = (sa.UniqueConstraint("company_id", "change_id", "account_id", "season_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    change_id = sa.Column(sa.Integer, sa.ForeignKey("rerate_change.id"), nullable=False)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"), nullable=False)
    billed = sa.Column(Money(), nullable=False)
    expected = sa.Column(Money(), nullable=False)
    difference = sa.Column(Money(), nullable=False)
    # The new charge lines in words (periods, areas, prices), shown on the approval page.
    detail = sa.Column(sa.String(500), nullable=False, default="")
    ledger_entry_id = sa.Column(sa.Integer, sa.ForeignKey("ledger_entry.id"))


class SeasonMeterReading(CompanyOwned, db.Model):
    """A season's heat-meter readings of one metered account, as imported from Excel, and the heat it used.

    Readings sent one by one by the metering system are app.messaging.models.MeterReading.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "account_id", "season_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"), nullable=False)
    # Meter readings in GJ at the start and end of the season, to 0.001 GJ.
    start_reading = sa.Column(ScaledDecimal(3), nullable=False)
    end_reading = sa.Column(ScaledDecimal(3), nullable=False)
    heat_gj = sa.Column(ScaledDecimal(3), nullable=False)
    filename = sa.Column(sa.String(255), nullable=False, default="")
    excel_row = sa.Column(sa.Integer)
    imported_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    imported_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class InvariantFinding(CompanyOwned, db.Model):
    """A ledger invariant break found by the nightly check, open until a later check no longer finds it.

    Headquarters lists the open findings of every company at /hq/invariants.
    """

    __table_args__ = (
        sa.UniqueConstraint("company_id", "fingerprint"),
        sa.Index("ix_invariant_finding_company_resolved", "company_id", "resolved_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    # NULL for a break of a check that covers the whole company, not one season (hq_account_count).
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"))
    # NULL for a break of the company total.
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"))
    # Which check failed: identity, payment_allocation, sign, company_total, hq_totals or hq_account_count.
    check_name = sa.Column(sa.String(32), nullable=False)
    detail = sa.Column(sa.String(500), nullable=False)
    # sha256 of season, account, check and detail, so a break found again updates its row.
    fingerprint = sa.Column(sa.String(64), nullable=False)
    first_found_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    last_found_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    times_found = sa.Column(sa.Integer, nullable=False, default=1)
    resolved_at = sa.Column(sa.DateTime(timezone=True))
