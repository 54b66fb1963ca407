"""Counter payments and the per-company receipt number sequence."""

from datetime import datetime, timezone

import sqlalchemy as sa

from app.extensions import db
from app.money import Money
from app.tenancy import CompanyOwned

# Payment method code -> Chinese label.
PAYMENT_METHODS = {"cash": "现金", "card": "银行卡"}
# Channel code -> Chinese label. Only the counter channel exists so far.
PAYMENT_CHANNELS = {"counter": "柜台"}


def utcnow():
    return datetime.now(timezone.utc)


class Payment(CompanyOwned, db.Model):
    """Money received from a customer. Its ledger lines record which receivables it paid."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "receipt_no"),
        sa.UniqueConstraint("company_id", "request_token"),
        sa.Index("ix_payment_company_account", "company_id", "account_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    amount = sa.Column(Money(), nullable=False)
    method = sa.Column(sa.String(8), nullable=False)
    channel = sa.Column(sa.String(16), nullable=False, default="counter")
    # Latest season with a receivable on the account at collection time, shown on the receipt.
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"))
    cashier_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=False)
    paid_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # Company code, year of collection (China Standard Time) and the sequence number, e.g. TJ-2025-000001.
    receipt_no = sa.Column(sa.String(32), nullable=False)
    payer_name = sa.Column(sa.String(100), nullable=False, default="")
    note = sa.Column(sa.String(255), nullable=False, default="")
    # Token of the submitted pay form. A resubmit of the same form returns this payment.
    request_token = sa.Column(sa.String(64))
    # Number of times the receipt PDF was produced. Every print after the first is marked 补打.
    receipt_prints = sa.Column(sa.Integer, nullable=False, default=0)

    account = db.relationship("Account")
    cashier = db.relationship("User")
    season = db.relationship("Season")

    @property
    def method_label(self):
        return PAYMENT_METHODS.get(self.method, self.method)

    @property
    def channel_label(self):
        return PAYMENT_CHANNELS.get(self.channel, self.channel)


class ReceiptCounter(CompanyOwned, db.Model):
    """The next receipt sequence number of one company, taken under a row lock."""

    __table_args__ = (sa.UniqueConstraint("company_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    next_number = sa.Column(sa.Integer, nullable=False, default=1)
