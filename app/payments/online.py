"""Online payments through WeChat Pay and Alipay: placing orders, routing and applying notifications.

A notification is routed to a company by its merchant id only (WeChat sub_mchid, Alipay app
id or authorising app id), never by fields the payer can influence (attach, subject).
Within the company it is matched to an order by out_trade_no and posted exactly once per
channel transaction id. Every notification, accepted or not, leaves one PaymentNotification
row with its outcome and reason. app/payments/inbox.py receives notifications over HTTP and
applies them in Celery; adapter settings and keys are read in app/payments/channels.py.
"""

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta, timezone
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _
from sqlalchemy.orm import joinedload

from app.billing.models import LedgerEntry, memo_columns
from app.clock import local_time
from app.extensions import db
from app.i18n import M_, translate_label
from app.integrations.channel import ChannelError, NotificationRejected, OrderRequest
from app.integrations.channel import fen_to_yuan, yuan_to_fen  # noqa: F401  (used by callers of this module)
from app.locking import lock_matching_row, lock_row
from app.network.models import Account, Unit
from app.org.models import Company
from app.payments import channels
from app.payments.models import PAYMENT_CHANNELS, AlipayApp, OnlineOrder, Payment, WechatMerchant, utcnow
from app.payments.refunds import apply_refund_event
from app.payments.services import (
    allocate_payment, allocation_rule, amount_owed, emit_payment_posted, next_receipt_no, payment_line_key,
)
from app.tenancy import SYSTEM_SCOPE, company_scope, scoped

logger = logging.getLogger(__name__)
ORDER_VALIDITY = timedelta(hours=2)


class OnlinePaymentError(ValueError):
    """An online order that cannot be placed; the message names the cause."""


class PostingError(RuntimeError):
    """A channel payment that cannot be posted until its data is fixed; the message names the missing row."""


@dataclass(frozen=True)
class NotificationResult:
    """Outcome of one notification: whether to acknowledge it, and the logged outcome and reason.

    `issues_e_invoice` is set when the notification posted a payment of a company that
    issues e-invoices, so invoicing starts after the commit.
    """

    accepted: bool
    outcome: str
    reason: str
    issues_e_invoice: bool = False


@dataclass(frozen=True)
class MerchantRoute:
    """The company a notification belongs to, found by merchant id, and the label of its scope."""

    company_id: int
    label: str


def _new_out_trade_no(company):
    # Company code, local date and 16 random hex digits: at most 32 characters, unique in practice,
    # and the unique constraint catches the rest.
    return f"{company.code}{local_time(utcnow()):%Y%m%d}{secrets.token_hex(8)}"


def create_online_order(account, channel_code, amount=None):
    """Place a QR-code order for an account with a channel and store it as a pending OnlineOrder.

    `amount` defaults to what the account owes. Raises OnlinePaymentError when the company
    has no merchant on the channel, nothing is owed, or the channel rejects the order.
    """
    company = db.session.get(Company, account.company_id)
    label = translate_label(PAYMENT_CHANNELS.get(channel_code, channel_code))
    try:
        merchant_id, auth_token = channels.order_merchant(company.id, channel_code)
    except ChannelError as error:
        raise OnlinePaymentError(str(error)) from None
    if merchant_id is None:
        raise OnlinePaymentError(_("公司 %(code)s 没有开通%(channel)s收款商户，请联系集团配置。", code=company.code, channel=label))
    owed = amount_owed(account).total
    amount = owed if amount is None else Decimal(amount)
    if amount <= 0:
        raise OnlinePaymentError(_("用户 %(number)s 当前没有欠费，无需下单。", number=account.account_no))
    out_trade_no = _new_out_trade_no(company)
    notify_setting = {"wechat": "WECHATPAY_NOTIFY_URL", "alipay": "ALIPAY_NOTIFY_URL"}[channel_code]
    try:
        adapter = channels.channel_for(channel_code)
        placed = adapter.create_order(
            OrderRequest(
                merchant_id=merchant_id, out_trade_no=out_trade_no, amount=amount,
                subject=f"{company.name} 热费 {account.account_no}", notify_url=channels.config_value(notify_setting),
                attach=account.account_no, expires_at=local_time(utcnow() + ORDER_VALIDITY), auth_token=auth_token,
            )
        )
    except ChannelError as error:
        logger.error("%s order %s for account %s failed: %s", channel_code, out_trade_no, account.id, error)
        raise OnlinePaymentError(_("%(channel)s下单失败：%(error)s", channel=label, error=error)) from None
    order = OnlineOrder(
        company_id=company.id, account_id=account.id, channel=channel_code, out_trade_no=out_trade_no, amount=amount,
        status="pending", sub_mchid=merchant_id, code_url=placed.code_url,
    )
    db.session.add(order)
    db.session.commit()
    logger.info("%s order %s of %s yuan placed for account %s", channel_code, out_trade_no, amount, account.id)
    return order


def create_wechat_order(account, amount=None):
    """Place a WeChat Pay Native order; see create_online_order."""
    return create_online_order(account, "wechat", amount)


def refresh_order(order):
    """Ask the channel for a pending order's state and close it when the channel closed it.

    A paid order is posted only by its verified notification, so a query never posts money.
    Returns the channel's TradeState, or None when the channel could not be asked.
    """
    if order.status != "pending":
        return None
    try:
        auth_token = channels.order_merchant(order.company_id, order.channel)[1]
        state = channels.channel_for(order.channel).query(order.sub_mchid, order.out_trade_no, auth_token)
    except ChannelError as error:
        logger.warning("Query of %s order %s failed: %s", order.channel, order.out_trade_no, error)
        return None
    if state.state == "closed":
        locked = lock_row(OnlineOrder, order.id)
        if locked.status == "pending":
            locked.status = "closed"
        db.session.commit()
    return state


def _fill_log(log, event):
    log.notification_id = event.notification_id[:64] or None
    log.event_type = event.event_type[:64]
    log.transaction_id = event.channel_txn_id[:64] or None
    log.out_trade_no = event.out_trade_no[:64] or None
    log.sub_mchid = event.merchant_id[:32] or None
    log.amount = event.amount


def store_notification_log(log):
    """Commit a PaymentNotification with the rest of the transaction and detach it with every value loaded.

    A routed notification is written under its company's scope, the scope its posting ran
    under, so no other tenant settings are sent. One without a company needs the system
    scope, because row-level security lets only that scope write a NULL company_id.
    The row is detached before the commit, so the commit does not expire it and the caller
    reads its values without a query, under whatever scope it goes on with.
    """
    scope = SYSTEM_SCOPE if log.company_id is None else company_scope(log.company_id)
    with scoped(scope):
        db.session.add(log)
        db.session.flush()
        db.session.expunge(log)
        db.session.commit()


@dataclass(frozen=True)
class MerchantRecord:
    """The settings of one channel merchant that routing reads: WeChat sub-merchant or Alipay app."""

    company_id: int
    merchant_id: str
    mode: str = "direct"
    seller_id: str | None = None


def merchant_records(channel_code, merchant_id):
    """Read the merchants configured under `merchant_id` on a channel, in every company visible to the scope."""
    if channel_code == "wechat":
        rows = db.session.execute(sa.select(WechatMerchant.company_id, WechatMerchant.sub_mchid).filter_by(sub_mchid=merchant_id))
        return tuple(MerchantRecord(company_id, sub_mchid) for company_id, sub_mchid in rows)
    rows = db.session.execute(
        sa.select(AlipayApp.company_id, AlipayApp.app_id, AlipayApp.mode, AlipayApp.seller_id).filter_by(app_id=merchant_id)
    )
    return tuple(MerchantRecord(company_id, app_id, mode, seller_id) for company_id, app_id, mode, seller_id in rows)


def route_event(channel_code, event, lookup=merchant_records):
    """Find the company of a verified event by its merchant id alone; raise NotificationRejected.

    `lookup(channel_code, merchant_id)` returns the MerchantRecords of that merchant id.
    """
    records = lookup(channel_code, event.merchant_id)
    if channel_code == "wechat":
        sp_mchid = current_app.config.get("WECHATPAY_SP_MCHID")
        if event.extra.get("sp_mchid") != sp_mchid:
            raise NotificationRejected(f"sp_mchid {str(event.extra.get('sp_mchid'))[:32]!r} is not this service provider")
        if not records:
            raise NotificationRejected(f"unknown sub_mchid {event.merchant_id!r}")
        return MerchantRoute(records[0].company_id, f"wechatpay:{records[0].merchant_id}")
    if len(records) != 1:
        raise NotificationRejected(f"app id {event.merchant_id!r} is {'unknown' if not records else 'configured for several companies'}")
    app = records[0]
    app_id, auth_app_id = event.extra.get("app_id"), event.extra.get("auth_app_id")
    if app.mode == "isv":
        isv_app_id = current_app.config.get("ALIPAY_ISV_APP_ID")
        if app_id != isv_app_id or auth_app_id != app.merchant_id:
            raise NotificationRejected(
                f"app_id {app_id!r} / auth_app_id {auth_app_id!r} do not match the ISV authorisation of {app.merchant_id}"
            )
    elif app_id != app.merchant_id or auth_app_id not in (None, "", app.merchant_id):
        raise NotificationRejected(
            f"app_id {app_id!r} / auth_app_id {auth_app_id!r} do not match the company's own app {app.merchant_id}"
        )
    if app.seller_id and event.extra.get("seller_id") and event.extra["seller_id"] != app.seller_id:
        raise NotificationRejected(f"seller_id {event.extra['seller_id'][:32]!r} is not the company's Alipay account")
    return MerchantRoute(app.company_id, f"alipay:{app.merchant_id}")


def check_event(event):
    """Reject a payment, refund or close event that lacks its transaction fields, amount or CNY currency."""
    if not event.channel_txn_id or not event.out_trade_no:
        raise NotificationRejected("transaction id or out_trade_no is missing")
    if event.kind in ("payment", "refund") and (event.amount is None or event.extra.get("currency", "CNY") != "CNY"):
        raise NotificationRejected("amount is missing or invalid, or currency is not CNY")


def apply_event(channel_code, event, log, receipts=None, lookup=merchant_records, rule=None):
    """Route and apply one verified, stored event in the caller's transaction; return its NotificationResult.

    Routes again by merchant id from the database, under the company scope of `log`, so
    an event stored for a company its merchant no longer belongs to is rejected, never
    posted there. Sets `log.online_order_id` and `log.payment_id`. Raises
    NotificationRejected for an event that cannot be applied. `receipts` is a
    ReceiptNumberBlock of the company for the payment's receipt number. `lookup` reads the
    merchant records as route_event does, and `rule` is the company's AllocationRule, so a
    batch in one transaction reads both once.
    """
    if event.kind == "other":
        return NotificationResult(True, "ignored", f"event {event.event_type} is not handled")
    check_event(event)
    route = route_event(channel_code, event, lookup=lookup)
    if route.company_id != log.company_id:
        raise NotificationRejected(f"merchant {event.merchant_id!r} belongs to company {route.company_id}, not {log.company_id}")
    if event.kind == "refund":
        outcome, reason = apply_refund_event(route.company_id, channel_code, event)
        return NotificationResult(True, outcome, reason)
    order = _locked_order(route.company_id, event, log)
    if event.kind == "closed":
        if order.status == "pending":
            order.status = "closed"
            return NotificationResult(True, "accepted", "order closed unpaid")
        return NotificationResult(True, "ignored", f"order is {order.status}; close not applied")
    return _apply_payment(route.company_id, channel_code, order, event, log, receipts, rule)


def _locked_order(company_id, event, log):
    # The order row lock serializes notifications of one order, so the duplicate check
    # sees the payment a concurrent notification of the same transaction committed.
    order = lock_matching_row(OnlineOrder, OnlineOrder.company_id == company_id, OnlineOrder.out_trade_no == event.out_trade_no)
    if order is None:
        raise NotificationRejected(f"order {event.out_trade_no!r} not found for merchant {event.merchant_id!r}")
    log.online_order_id = order.id
    return order


def _apply_payment(company_id, channel_code, order, event, log, receipts=None, rule=None):
    # Posting a payment marks its order paid in the same transaction, so a transaction
    # already posted for this order shows in the locked order row, and a pending or closed
    # order needs no payment query. A transaction posted on another order makes the
    # payment INSERT below raise IntegrityError, which the apply task logs as a duplicate.
    if order.status in ("paid", "held"):
        existing = payment_for_transaction(company_id, channel_code, event.channel_txn_id)
        if existing is not None:
            log.payment_id = existing.id
            return NotificationResult(True, "duplicate", f"transaction already posted as payment {existing.id}")
    if order.transaction_id == event.channel_txn_id and order.status == "held":
        return NotificationResult(True, "duplicate", "transaction already held for review")
    if order.status in ("paid", "held"):
        reason = f"order {order.out_trade_no} is already {order.status} by transaction {order.transaction_id}"
        # A second transaction on one order is money received without a matching bill: hold it.
        return NotificationResult(True, "held", reason)
    if event.amount != order.amount:
        order.status = "held"
        order.transaction_id = event.channel_txn_id
        order.review_reason = f"notified amount {event.amount} differs from order amount {order.amount}"
        db.session.flush()
        return NotificationResult(True, "held", order.review_reason)

    # Referenced here because the session keeps only weak references to unchanged rows.
    # So post_channel_payment finds it loaded, and the invoice check below needs no query.
    company = db.session.get(Company, company_id)
    # When another transaction posted this transaction id first, the unique key raises
    # IntegrityError here. The apply task then rolls back this event's savepoint and logs a duplicate.
    payment = _post_online_payment(order, event.channel_txn_id, event.occurred_at or utcnow(), receipts, rule)
    log.payment_id = payment.id
    db.session.flush()
    return NotificationResult(
        True, "accepted", f"posted as payment {payment.id}", issues_e_invoice=company.invoice_mode == "e_invoice"
    )


def payment_for_transaction(company_id, channel_code, transaction_id):
    return db.session.scalar(
        sa.select(Payment).filter_by(company_id=company_id, channel=channel_code, channel_transaction_id=transaction_id)
    )


def _post_online_payment(order, transaction_id, paid_at, receipts=None, rule=None):
    payment = post_channel_payment(
        order.company_id, order.account_id, order.channel, order.amount, transaction_id, paid_at,
        note=f"{PAYMENT_CHANNELS.get(order.channel, order.channel)} {order.out_trade_no}", receipts=receipts, rule=rule,
    )
    order.status = "paid"
    order.paid_at = paid_at
    order.transaction_id = transaction_id
    order.payment_id = payment.id
    return payment


def post_channel_payment(company_id, account_id, channel_code, amount, transaction_id, paid_at, note, receipts=None, rule=None):
    """Post a payment that arrived through a channel: receivables in the company's allocation order, any rest as `credit`.

    `receipts` is a ReceiptNumberBlock of the company to take the receipt number from, and
    `rule` its AllocationRule when the caller has read it already.

    Locks the account row, so concurrent payments of one account see each other's lines.
    The ledger lines' idempotency keys carry the channel and transaction id. Everything
    is read before the receipt number is taken, because the company's receipt counter
    stays locked from then until the commit.
    """
    # The unit and building come with the account, so the HQ daily totals need no query for its community.
    account = lock_row(Account, account_id, options=[joinedload(Account.unit).joinedload(Unit.building)])
    if account is None:
        raise PostingError(f"account {account_id} was not found in company {company_id}")
    owed = amount_owed(account)
    # SQLite keeps the wall-clock digits and drops the offset, so times are stored in UTC.
    paid_at = paid_at.astimezone(timezone.utc)
    company = db.session.get(Company, company_id)
    rule = rule or allocation_rule(company_id)
    # A company's payments wait for each other on its receipt counter row from the UPDATE in
    # next_receipt_no to the commit. The notification apply task posts a batch in one
    # transaction with one ReceiptNumberBlock, so the batch waits once.
    payment = Payment(
        company_id=company_id, account_id=account.id, amount=amount, method=channel_code, channel=channel_code,
        season_id=owed.current.season.id if owed.current else None, cashier_id=None, paid_at=paid_at,
        receipt_no=next_receipt_no(company, paid_at, receipts), payer_name=account.customer_name.strip(),
        note=note, channel_transaction_id=transaction_id,
    )
    db.session.add(payment)
    db.session.flush()

    parts = allocate_payment(owed, amount, rule)
    for season, kind, part in parts:
        _add_line(payment, season.id if season else None, kind, part, payment_line_key("", season, kind)[1:])
    # A bill already paid elsewhere (at the counter, or through another order) leaves money
    # that pays no receivable. It is kept as a `credit` line, which amount_owed ignores,
    # so the ledger balance shows it until finance refunds it or carries it forward.
    rest = amount - sum((part for _, _, part in parts), Decimal("0"))
    if rest > 0:
        _add_line(payment, None, "credit", rest, "credit")
    emit_payment_posted(payment, account, parts, credit=max(rest, Decimal("0")))
    # Flushed while `account` is referenced, so the HQ daily totals find its community in the session.
    db.session.flush()
    return payment


def _add_line(payment, season_id, kind, amount, key_suffix):
    db.session.add(
        LedgerEntry(
            company_id=payment.company_id, account_id=payment.account_id, season_id=season_id, kind=kind,
            amount=-amount, cause_type="payment", cause_id=payment.id,
            idempotency_key=f"{payment.channel}:{payment.channel_transaction_id}:{key_suffix}",
            **memo_columns(M_("收据 %(receipt_no)s", receipt_no=payment.receipt_no)), created_by_id=None,
        )
    )
