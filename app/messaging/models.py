"""Outbox events, processed inbound messages, meter readings and their review list, finance vouchers."""

from datetime import datetime, timezone

import sqlalchemy as sa

from app.extensions import db
from app.i18n import N_, translate_label
from app.money import Money, ScaledDecimal
from app.tenancy import CompanyOwned

def utcnow():
    return datetime.now(timezone.utc)


class OutboxEvent(CompanyOwned, db.Model):
    """One event to publish, written in the same transaction as the change it reports.

    `event_id` is the message id on the wire and never changes, so a consumer that sees
    it twice (a retry after a lost confirm, or a replay) applies it once. `key` names the
    business change (e.g. the ledger line) so that the change cannot emit twice.

    `company_id` has no foreign key. Every event is written in the transaction of the change
    it reports, whose own rows check the company. A foreign key to company would lock that
    one row once per event, which is once per billed account in a billing run.
    """

    __table_args__ = (
        sa.UniqueConstraint("company_id", "event_id"),
        sa.UniqueConstraint("company_id", "key"),
        # The relay reads unpublished rows in id order.
        sa.Index("ix_outbox_event_pending", "published_at", "id"),
        sa.Index("ix_outbox_event_company_occurred", "company_id", "occurred_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    event_id = sa.Column(sa.String(36), nullable=False)
    event_type = sa.Column(sa.String(40), nullable=False)
    schema_version = sa.Column(sa.Integer, nullable=False)
    key = sa.Column(sa.String(120), nullable=False)
    # JSON text of the event's `data`: amounts and quantities are strings, never floats.
    payload = sa.Column(sa.Text, nullable=False)
    occurred_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    published_at = sa.Column(sa.DateTime(timezone=True))
    # Publish attempts that failed for this row, and when the relay may try it again.
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    next_attempt_at = sa.Column(sa.DateTime(timezone=True))
    last_error = sa.Column(sa.String(255), nullable=False, default="")
    # Times an operator queued the event again with `flask heat outbox replay`.
    replays = sa.Column(sa.Integer, nullable=False, default=0)
    # No index of its own, because both unique keys and ix_outbox_event_company_occurred lead with company_id.
    company_id = sa.Column(sa.Integer, nullable=False)


class ProcessedMessage(CompanyOwned, db.Model):
    """An inbound message a consumer has handled, stored in the transaction that applied it.

    `outcome` is `applied`, or `rejected` for a well-formed message that could not apply
    (stored with its reason and not retried).
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "consumer", "message_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    consumer = sa.Column(sa.String(32), nullable=False)
    message_id = sa.Column(sa.String(100), nullable=False)
    outcome = sa.Column(sa.String(16), nullable=False)
    reason = sa.Column(sa.String(255), nullable=False, default="")
    processed_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class MeterReading(CompanyOwned, db.Model):
    """A cumulative heat meter reading of a metered account, as the metering system sent it."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "message_id"),
        sa.Index("ix_meter_reading_company_account_read", "company_id", "account_id", "read_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    meter_no = sa.Column(sa.String(32), nullable=False, default="")
    read_at = sa.Column(sa.DateTime(timezone=True), nullable=False)
    # Cumulative heat in GJ to 0.001, stored exactly as an integer of 1/1000 GJ.
    reading_gj = sa.Column(ScaledDecimal(3), nullable=False)
    message_id = sa.Column(sa.String(100), nullable=False)
    received_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


REVIEW_STATUSES = {
    "open": N_("待核对"),
    "corrected": N_("已按更正读数入账"),
    "dismissed": N_("已作废"),
    "superseded": N_("计量系统已重发"),
}


class MeterReadingReview(CompanyOwned, db.Model):
    """A meter reading that was not applied (missing value, unknown account, lower than before).

    Staff close it by entering the corrected reading or by dismissing it with a reason; a
    reading of the same account and time that the metering system sends again closes it
    as superseded.
    """

    __table_args__ = (
        sa.UniqueConstraint("company_id", "message_id"),
        sa.Index("ix_meter_reading_review_company_account", "company_id", "account_no", "status"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    message_id = sa.Column(sa.String(100), nullable=False)
    account_no = sa.Column(sa.String(32), nullable=False, default="")
    read_at = sa.Column(sa.String(40), nullable=False, default="")
    reading = sa.Column(sa.String(40), nullable=False, default="")
    reason = sa.Column(sa.String(255), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="open")
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    resolution = sa.Column(sa.String(255), nullable=False, default="")
    resolved_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    resolved_at = sa.Column(sa.DateTime(timezone=True))
    # The reading stored when the review closed, entered here or resent by the metering system.
    meter_reading_id = sa.Column(sa.Integer, sa.ForeignKey("meter_reading.id"))

    resolved_by = db.relationship("User")
    meter_reading = db.relationship("MeterReading")

    @property
    def status_label(self):
        return translate_label(REVIEW_STATUSES.get(self.status, self.status))


class FinanceVoucher(CompanyOwned, db.Model):
    """The daily summary voucher of one company: debit and credit per account code, as JSON text."""

    __table_args__ = (sa.UniqueConstraint("company_id", "voucher_date"),)

    id = sa.Column(sa.Integer, primary_key=True)
    voucher_date = sa.Column(sa.Date, nullable=False)
    content = sa.Column(sa.Text, nullable=False)
    debit_total = sa.Column(Money(), nullable=False)
    credit_total = sa.Column(Money(), nullable=False)
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
