"""Payments (counter and online), the receipt number sequence, online orders and channel notifications."""

from datetime import datetime, timezone

import sqlalchemy as sa

from app.extensions import db
from app.i18n import NC_, N_, stored_message
from app.money import Money
from app.tenancy import CompanyOwned

# Payment method code -> Chinese label of the methods a cashier can pick at the counter.
PAYMENT_METHODS = {"cash": N_("现金"), "card": N_("银行卡")}
# Methods of payments that arrive through a payment channel, not through the counter form.
ONLINE_PAYMENT_METHODS = {"wechat": N_("微信支付"), "alipay": N_("支付宝"), "bank": N_("银行代收")}
# Channel code -> Chinese label.
PAYMENT_CHANNELS = {"counter": N_("柜台"), "wechat": N_("微信支付"), "alipay": N_("支付宝"), "bank": N_("银行代收")}
# Channels that take online orders placed from the order page.
ORDER_CHANNELS = {"wechat": N_("微信支付（扫码）"), "alipay": N_("支付宝（扫码）")}
# Online order status -> Chinese label. `held`: the channel reported a paid amount that differs
# from the order, so nothing was posted and finance must review it.
ONLINE_ORDER_STATUSES = {"pending": N_("待支付"), "paid": N_("已支付"), "held": N_("待核对"), "closed": N_("已关闭")}
# Outcome of a received channel notification.
# Refund status -> Chinese label. `pending_approval` waits for a user with payment.refund_approve;
# `processing` was sent to the channel, which has not confirmed it yet; only `succeeded` posts ledger lines.
REFUND_STATUSES = {
    "pending_approval": N_("待审批"), "processing": N_("退款中"), "succeeded": N_("已退款"), "failed": N_("退款失败"), "rejected": N_("已驳回"),
}
# Refunds in these statuses count against what is left refundable on a payment.
REFUND_OPEN_OR_DONE = ("pending_approval", "processing", "succeeded")
# Refund kind -> Chinese label: a refund we started, or a reversal the collecting bank sent.
# 退费 is one refund here; the page of all refunds keeps the plain msgid ("Refunds").
REFUND_KINDS = {"refund": NC_("refund kind", "退费"), "reversal": N_("冲正")}
# Outcome of a received channel notification. `pending`: verified and stored, waiting for the
# apply task; `failed`: the apply task raised an unexpected error, named in the reason.
NOTIFICATION_OUTCOMES = {
    "pending": N_("待入账"), "accepted": N_("已入账"), "duplicate": N_("重复通知"), "held": N_("待核对"),
    "ignored": N_("未处理事件"), "rejected": N_("已拒绝"), "failed": N_("入账失败"),
}


def utcnow():
    return datetime.now(timezone.utc)


class Payment(CompanyOwned, db.Model):
    """Money received from a customer. Its ledger lines record which receivables it paid."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "receipt_no"),
        sa.UniqueConstraint("company_id", "request_token"),
        # One payment per channel transaction: a repeated notification can never post twice.
        sa.UniqueConstraint("company_id", "channel", "channel_transaction_id"),
        sa.Index("ix_payment_company_account", "company_id", "account_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    amount = sa.Column(Money(), nullable=False)
    method = sa.Column(sa.String(8), nullable=False)
    channel = sa.Column(sa.String(16), nullable=False, default="counter")
    # Latest season with a receivable on the account at collection time, shown on the receipt.
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"))
    # The cashier of a counter payment; None for a payment that arrived through a channel.
    cashier_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    paid_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # Company code, year of collection (China Standard Time) and the sequence number, e.g. TJ-2025-000001.
    receipt_no = sa.Column(sa.String(32), nullable=False)
    payer_name = sa.Column(sa.String(100), nullable=False, default="")
    note = sa.Column(sa.String(255), nullable=False, default="")
    # Token of the submitted pay form. A resubmit of the same form returns this payment.
    request_token = sa.Column(sa.String(64))
    # Number of times the receipt PDF was produced. Every print after the first is marked 补打.
    receipt_prints = sa.Column(sa.Integer, nullable=False, default=0)
    # The channel's id of the transaction (WeChat transaction_id); None at the counter.
    channel_transaction_id = sa.Column(sa.String(64))

    account = db.relationship("Account")
    cashier = db.relationship("User")
    season = db.relationship("Season")

    @property
    def method_label(self):
        return PAYMENT_METHODS.get(self.method) or ONLINE_PAYMENT_METHODS.get(self.method, self.method)

    @property
    def collector_name(self):
        """Name shown as 收款人: the cashier, or the channel for an online payment."""
        return self.cashier.name if self.cashier is not None else self.channel_label

    @property
    def channel_label(self):
        return PAYMENT_CHANNELS.get(self.channel, self.channel)


class ReceiptCounter(CompanyOwned, db.Model):
    """The next receipt sequence number of one company, taken under a row lock."""

    __table_args__ = (sa.UniqueConstraint("company_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    next_number = sa.Column(sa.Integer, nullable=False, default=1)


class WechatMerchant(CompanyOwned, db.Model):
    """A company's WeChat Pay sub-merchant under the group's service provider account.

    Notifications are routed to a company by `sub_mchid` alone. The provider's merchant id
    and all keys come from the app configuration, never from this table.
    """

    __table_args__ = (sa.UniqueConstraint("company_id"), sa.UniqueConstraint("sub_mchid"))

    id = sa.Column(sa.Integer, primary_key=True)
    sub_mchid = sa.Column(sa.String(32), nullable=False)
    # The company's own official account, when payers reach it there; None uses the group's.
    sub_appid = sa.Column(sa.String(32))
    active = sa.Column(sa.Boolean, nullable=False, default=True)


class OnlineOrder(CompanyOwned, db.Model):
    """An order placed with a payment channel for one account, and what the channel reported on it."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "out_trade_no"),
        sa.Index("ix_online_order_company_account", "company_id", "account_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    channel = sa.Column(sa.String(16), nullable=False, default="wechat")
    # Order number sent to the channel, unique per company (the sub-merchant).
    out_trade_no = sa.Column(sa.String(32), nullable=False)
    # Amount in yuan; the Money type stores it as integer fen, the channel's unit.
    amount = sa.Column(Money(), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="pending")
    sub_mchid = sa.Column(sa.String(32), nullable=False)
    # Payment link of a Native order, drawn as a QR code for the payer.
    code_url = sa.Column(sa.String(255), nullable=False, default="")
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    paid_at = sa.Column(sa.DateTime(timezone=True))
    # The channel transaction that paid (or, when held, claimed to pay) the order.
    transaction_id = sa.Column(sa.String(64))
    payment_id = sa.Column(sa.Integer, sa.ForeignKey("payment.id"))
    # Why the order is held for review, e.g. the notified and ordered amounts.
    review_reason = sa.Column(sa.String(255), nullable=False, default="")

    account = db.relationship("Account")
    payment = db.relationship("Payment")


class PaymentNotification(db.Model):
    """One notification received from a payment channel and what was done with it.

    Not CompanyOwned: `company_id` stays None until the notification is verified and routed
    to a company by its merchant id, so rejected notifications can be logged too.
    NOTE: the tenant read scope therefore does not filter this table; a view of it must
    filter by company itself.

    A verified online-channel notification is stored here as `pending` with its event in
    `payload`; the apply task (app/payments/inbox.py) posts it and sets the outcome.
    `delivery_key` identifies the notification within its company and channel, so a
    repeated delivery finds the stored row. It is None on rows that are only a log entry.

    A row whose application raised an error is `failed` with the error in `reason`. The
    beat sweep sets it back to `pending` at `retry_at`, with a backoff that doubles per
    attempt, until NOTIFICATION_RETRY_LIMIT attempts have failed. An administrator can set
    a failed row back to pending at any time (`flask heat notifications requeue`).
    """

    __table_args__ = (
        sa.Index("ix_payment_notification_company_transaction", "company_id", "transaction_id"),
        sa.UniqueConstraint("company_id", "channel", "delivery_key", name="uq_payment_notification_delivery"),
        # The apply task reads a company's pending rows in id order; the partial index keeps
        # only those, so it stays small however long the log grows.
        sa.Index(
            "ix_payment_notification_pending", "company_id", "id",
            postgresql_where=sa.text("outcome = 'pending'"), sqlite_where=sa.text("outcome = 'pending'"),
        ),
        # The sweep looks for failed rows due for another attempt.
        sa.Index(
            "ix_payment_notification_retry", "retry_at",
            postgresql_where=sa.text("retry_at IS NOT NULL"), sqlite_where=sa.text("retry_at IS NOT NULL"),
        ),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    company_id = sa.Column(sa.Integer, sa.ForeignKey("company.id"), index=True)
    channel = sa.Column(sa.String(16), nullable=False)
    # The notification's own id and the transaction fields it reported, when they could be read.
    notification_id = sa.Column(sa.String(64))
    event_type = sa.Column(sa.String(64))
    transaction_id = sa.Column(sa.String(64))
    out_trade_no = sa.Column(sa.String(64))
    sub_mchid = sa.Column(sa.String(32))
    amount = sa.Column(Money())
    outcome = sa.Column(sa.String(16), nullable=False)
    reason = sa.Column(sa.String(255), nullable=False, default="")
    # SHA-256 of the raw body, to match a log row with a captured request.
    body_sha256 = sa.Column(sa.String(64), nullable=False)
    online_order_id = sa.Column(sa.Integer, sa.ForeignKey("online_order.id"))
    payment_id = sa.Column(sa.Integer, sa.ForeignKey("payment.id"))
    received_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    delivery_key = sa.Column(sa.String(96))
    # The verified ChannelEvent as JSON (amount as a decimal string), read back by the apply task.
    payload = sa.Column(sa.JSON)
    applied_at = sa.Column(sa.DateTime(timezone=True))
    # Applications of this row that ended `failed`, and when the sweep tries it next (None: not again).
    attempts = sa.Column(sa.Integer, nullable=False, default=0, server_default="0")
    retry_at = sa.Column(sa.DateTime(timezone=True))
    # The last time an administrator set the failed row back to pending, and the reason they gave.
    requeued_at = sa.Column(sa.DateTime(timezone=True))
    requeue_reason = sa.Column(sa.String(255))


class AlipayApp(CompanyOwned, db.Model):
    """The Alipay app that collects for a company.

    `mode` "direct": the company's own app, signed with its own key (ALIPAY_APP_KEYS).
    `mode` "isv": the group's third-party app acting for the company, whose authorisation
    `app_id` is the company's app id as Alipay sends it in `auth_app_id`; the app_auth_token
    comes from the file named in ALIPAY_APP_AUTH_TOKEN_FILES, never from this table.
    Notifications are routed to a company by this app id alone.
    """

    __table_args__ = (sa.UniqueConstraint("company_id"), sa.UniqueConstraint("company_id", "app_id"))

    id = sa.Column(sa.Integer, primary_key=True)
    app_id = sa.Column(sa.String(32), nullable=False, index=True)
    mode = sa.Column(sa.String(8), nullable=False, default="direct")
    # Alipay user id of the company's account (seller_id in notifications), when known.
    seller_id = sa.Column(sa.String(32))
    active = sa.Column(sa.Boolean, nullable=False, default=True)


class BankAgreement(CompanyOwned, db.Model):
    """A collection agreement between a company and a bank.

    The bank names the company by `bank_company_id` in every request; requests are routed
    by (bank code, that id) only. The request-signing key comes from BANK_KEY_FILES.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "bank_code"), sa.Index("ix_bank_agreement_route", "bank_code", "bank_company_id"))

    id = sa.Column(sa.Integer, primary_key=True)
    bank_code = sa.Column(sa.String(16), nullable=False)
    bank_company_id = sa.Column(sa.String(32), nullable=False)
    active = sa.Column(sa.Boolean, nullable=False, default=True)


class BankTransaction(CompanyOwned, db.Model):
    """One payment or reversal request from a collecting bank and the reply we sent.

    The bank's (bank code, trade date, serial) identifies it; a repeated request gets the
    stored reply and changes nothing.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "bank_code", "tran_date", "tran_seq"),)

    id = sa.Column(sa.Integer, primary_key=True)
    bank_code = sa.Column(sa.String(16), nullable=False)
    tran_code = sa.Column(sa.String(16), nullable=False)
    tran_date = sa.Column(sa.Date, nullable=False)
    tran_seq = sa.Column(sa.String(40), nullable=False)
    original_tran_seq = sa.Column(sa.String(40))
    bill_key = sa.Column(sa.String(35), nullable=False, default="")
    amount = sa.Column(Money())
    payment_id = sa.Column(sa.Integer, sa.ForeignKey("payment.id"))
    refund_id = sa.Column(sa.Integer, sa.ForeignKey("refund.id"))
    resp_code = sa.Column(sa.String(16), nullable=False)
    # The reply body exactly as first sent, so that a repeated request gets the same bytes.
    reply = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class Refund(CompanyOwned, db.Model):
    """Money paid back on one payment, whole or in part, through the payment's channel.

    The sum of a payment's refunds in REFUND_OPEN_OR_DONE never exceeds the payment; the
    payment row lock serializes the check.
    """

    __table_args__ = (
        sa.UniqueConstraint("company_id", "out_refund_no"),
        sa.UniqueConstraint("company_id", "request_token"),
        sa.Index("ix_refund_company_payment", "company_id", "payment_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    payment_id = sa.Column(sa.Integer, sa.ForeignKey("payment.id"), nullable=False)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    amount = sa.Column(Money(), nullable=False)
    kind = sa.Column(sa.String(16), nullable=False, default="refund")
    # Where the money goes back: the payment's online channel, or "counter" (cash at the counter).
    channel = sa.Column(sa.String(16), nullable=False)
    status = sa.Column(sa.String(16), nullable=False)
    reason = sa.Column(sa.String(255), nullable=False, default="")
    # Our refund number sent to the channel; the channel treats a repeat as the same refund.
    out_refund_no = sa.Column(sa.String(64), nullable=False)
    channel_refund_id = sa.Column(sa.String(64))
    # Receipt number of a counter refund, from the company's receipt sequence.
    receipt_no = sa.Column(sa.String(32))
    # Number of times the refund receipt PDF was produced. Every print after the first is marked 补打.
    receipt_prints = sa.Column(sa.Integer, nullable=False, default=0)
    failure_reason = sa.Column(sa.String(255), nullable=False, default="")
    # failure_reason as Message.as_data() (app.i18n) when it was stored with its msgid; pages translate it.
    failure_message = sa.Column(sa.JSON)
    request_token = sa.Column(sa.String(64))
    requested_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    approved_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    requested_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    decided_at = sa.Column(sa.DateTime(timezone=True))
    # Start of the latest send to the online channel. Once `send_accepted` is set it is the
    # send the channel accepted, which dates the refund in the channel's bill.
    sent_at = sa.Column(sa.DateTime(timezone=True))
    send_accepted = sa.Column(sa.Boolean, nullable=False, default=False)
    completed_at = sa.Column(sa.DateTime(timezone=True))
    # When the red invoices of a succeeded refund were worked out, or found not needed; NULL
    # until then, so the sweep `invoicing.reverse_refunds` finds refunds whose task was lost.
    invoices_reversed_at = sa.Column(sa.DateTime(timezone=True))
    # Why a succeeded refund needed no red invoice, as Message.as_data() (app.i18n); NULL otherwise.
    invoice_reversal_note = sa.Column(sa.JSON)

    payment = db.relationship("Payment")
    requested_by = db.relationship("User", foreign_keys=[requested_by_id])
    approved_by = db.relationship("User", foreign_keys=[approved_by_id])

    @property
    def status_label(self):
        return REFUND_STATUSES.get(self.status, self.status)

    @property
    def kind_label(self):
        return REFUND_KINDS.get(self.kind, self.kind)

    @property
    def shown_failure_reason(self):
        """The failure reason in the reader's language when it was stored with its msgid, else as stored."""
        return stored_message(self.failure_message, self.failure_reason)

    @property
    def shown_invoice_reversal_note(self):
        """Why the refund needed no red invoice, in the reader's language, or an empty string."""
        return stored_message(self.invoice_reversal_note, "")
# Difference between our books and a channel statement -> Chinese label.
RECONCILIATION_DIFFERENCES = {
    "missing_ours": N_("我方无记录（长款）"),
    "missing_theirs": N_("渠道无记录（短款）"),
    "amount_differs": N_("金额不符"),
}
RECONCILIATION_ITEM_STATUSES = {"open": N_("待处理"), "resolved": N_("已处理")}


class ChannelStatement(CompanyOwned, db.Model):
    """A channel's statement file of one merchant and day, as uploaded or downloaded; the latest one counts."""

    __table_args__ = (sa.UniqueConstraint("company_id", "channel", "merchant_id", "day"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # Statement channel name as in app/integrations/statement.py: wechatpay, alipay or bank:<code>.
    channel = sa.Column(sa.String(24), nullable=False)
    merchant_id = sa.Column(sa.String(32), nullable=False)
    # The statement's business day in China Standard Time.
    day = sa.Column(sa.Date, nullable=False)
    filename = sa.Column(sa.String(255), nullable=False, default="")
    content = sa.Column(sa.LargeBinary, nullable=False)
    sha256 = sa.Column(sa.String(64), nullable=False)
    uploaded_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    uploaded_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class ReconciliationRun(CompanyOwned, db.Model):
    """The latest reconciliation of one channel, merchant and day; a re-run updates this row."""

    __table_args__ = (sa.UniqueConstraint("company_id", "channel", "merchant_id", "day"),)

    id = sa.Column(sa.Integer, primary_key=True)
    channel = sa.Column(sa.String(24), nullable=False)
    merchant_id = sa.Column(sa.String(32), nullable=False)
    day = sa.Column(sa.Date, nullable=False)
    statement_sha256 = sa.Column(sa.String(64), nullable=False, default="")
    matched = sa.Column(sa.Integer, nullable=False, default=0)
    differences = sa.Column(sa.Integer, nullable=False, default=0)
    # Totals of the day: our payments minus refunds, and the statement's.
    our_total = sa.Column(Money(), nullable=False, default=0)
    their_total = sa.Column(Money(), nullable=False, default=0)
    runs = sa.Column(sa.Integer, nullable=False, default=0)
    ran_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    items = db.relationship("ReconciliationItem", order_by="ReconciliationItem.id", back_populates="run")


class ReconciliationItem(CompanyOwned, db.Model):
    """One difference between our books and a statement: a work item finance resolves with a reason."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "run_id", "line_kind", "channel_txn_id"),
        sa.Index("ix_reconciliation_item_company_status", "company_id", "status"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    run_id = sa.Column(sa.Integer, sa.ForeignKey("reconciliation_run.id"), nullable=False)
    # payment, refund or reversal, as in StatementLine.kind.
    line_kind = sa.Column(sa.String(12), nullable=False)
    channel_txn_id = sa.Column(sa.String(64), nullable=False)
    out_trade_no = sa.Column(sa.String(64))
    difference = sa.Column(sa.String(16), nullable=False)
    our_amount = sa.Column(Money())
    their_amount = sa.Column(Money())
    payment_id = sa.Column(sa.Integer, sa.ForeignKey("payment.id"))
    status = sa.Column(sa.String(12), nullable=False, default="open")
    resolution = sa.Column(sa.String(255), nullable=False, default="")
    resolved_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    resolved_at = sa.Column(sa.DateTime(timezone=True))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # True when the statement line names another company's order. `out_trade_no` is then
    # None and the number is in a ReconciliationOrderCopy, which only headquarters reads.
    other_company_order = sa.Column(sa.Boolean, nullable=False, default=False)

    run = db.relationship("ReconciliationRun", back_populates="items")
    payment = db.relationship("Payment")
    resolved_by = db.relationship("User")

    @property
    def difference_label(self):
        return RECONCILIATION_DIFFERENCES.get(self.difference, self.difference)

    @property
    def status_label(self):
        return RECONCILIATION_ITEM_STATUSES.get(self.status, self.status)


class ReconciliationOrderCopy(CompanyOwned, db.Model):
    """The order number of a reconciliation difference whose statement line names another company's order.

    The merchant's company keeps its ReconciliationItem without the number. This row has no
    company: row-level security lets only the system and headquarters scopes read or write
    a row whose `company_id` is NULL, and the read scope of a company (`company_id IN (...)`)
    never matches it on SQLite either. It names both companies for headquarters.
    """

    __table_args__ = (sa.UniqueConstraint("item_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # Always NULL; the column exists so that the tenant policies cover the table.
    company_id = sa.Column(sa.Integer, sa.ForeignKey("company.id"), nullable=True, index=True)
    item_id = sa.Column(sa.Integer, sa.ForeignKey("reconciliation_item.id"), nullable=False)
    merchant_company_id = sa.Column(sa.Integer, sa.ForeignKey("company.id"), nullable=False)
    order_company_id = sa.Column(sa.Integer, sa.ForeignKey("company.id"), nullable=False)
    out_trade_no = sa.Column(sa.String(64), nullable=False)
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)

    item = db.relationship("ReconciliationItem")
    merchant_company = db.relationship("Company", foreign_keys=[merchant_company_id])
    order_company = db.relationship("Company", foreign_keys=[order_company_id])
