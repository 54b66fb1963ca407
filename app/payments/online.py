"""Online payments through WeChat Pay: placing orders and applying payment notifications.

A notification is routed to a company by its sub_mchid only, never by fields the payer can
influence (attach, description). Within the company it is matched to an order by
out_trade_no and posted exactly once per transaction_id. Every notification, accepted or
not, leaves one PaymentNotification row with its outcome and reason.
"""

import functools
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app.billing.models import LedgerEntry
from app.clock import local_time
from app.extensions import db
from app.integrations import wechatpay
from app.locking import lock_row
from app.network.models import Account
from app.org.models import Company
from app.payments.models import OnlineOrder, Payment, PaymentNotification, WechatMerchant, utcnow
from app.payments.services import allocate_payment, allocation_order, amount_owed, next_receipt_no
from app.tenancy import SYSTEM_SCOPE, company_scope, scoped

logger = logging.getLogger(__name__)
CHANNEL = "wechat"
ORDER_VALIDITY = timedelta(hours=2)


class OnlinePaymentError(ValueError):
    """An online order that cannot be placed; the message names the cause."""


@dataclass(frozen=True)
class NotificationResult:
    """Outcome of one notification: whether to acknowledge it, and the logged outcome and reason."""

    accepted: bool
    outcome: str
    reason: str


def _config(name):
    value = current_app.config.get(name)
    if not value:
        raise OnlinePaymentError(f"WeChat Pay is not configured: set {name}.")
    return value


@functools.lru_cache(maxsize=32)
def _load_key_file(loader, path, modified_ns):
    # Parsing an RSA private key runs a slow consistency check, so each file is parsed once
    # per modification time. A replaced key file is read again.
    return loader(path)


def _key_from_file(loader, path):
    return _load_key_file(loader, path, os.stat(path).st_mtime_ns)


def merchant_credentials():
    """Load the service provider's credentials from the files named in the app configuration."""
    return wechatpay.MerchantCredentials(
        mchid=_config("WECHATPAY_SP_MCHID"),
        serial_no=_config("WECHATPAY_MERCHANT_SERIAL"),
        private_key=_key_from_file(wechatpay.load_private_key, _config("WECHATPAY_MERCHANT_KEY_FILE")),
        apiv3_key=apiv3_key(),
    )


def apiv3_key():
    """Read the APIv3 key from the file named in WECHATPAY_APIV3_KEY_FILE."""
    return _key_from_file(wechatpay.load_apiv3_key, _config("WECHATPAY_APIV3_KEY_FILE"))


def platform_keys():
    """Load the platform public keys by serial from the files named in WECHATPAY_PLATFORM_KEY_FILES."""
    files = _config("WECHATPAY_PLATFORM_KEY_FILES")
    return {serial: _key_from_file(wechatpay.load_public_key, path) for serial, path in files.items()}


def yuan_to_fen(amount):
    """Convert a Decimal yuan amount to int fen, rejecting fractions of a fen."""
    fen = Decimal(amount).scaleb(2)
    if fen != fen.to_integral_value():
        raise OnlinePaymentError(f"Amount {amount} has fractions of a fen.")
    return int(fen)


def fen_to_yuan(fen):
    return Decimal(int(fen)).scaleb(-2).quantize(Decimal("0.01"))


def _new_out_trade_no(company):
    # Company code, local date and 16 random hex digits: at most 32 characters, unique in practice,
    # and the unique constraint catches the rest.
    return f"{company.code}{local_time(utcnow()):%Y%m%d}{secrets.token_hex(8)}"


def create_wechat_order(account, amount=None):
    """Place a Native order for an account with the channel and store it as a pending OnlineOrder.

    `amount` defaults to what the account owes. Raises OnlinePaymentError when the company
    has no sub-merchant, nothing is owed, or the channel rejects the order.
    """
    company = db.session.get(Company, account.company_id)
    merchant = db.session.scalar(sa.select(WechatMerchant).filter_by(company_id=company.id, active=True))
    if merchant is None:
        raise OnlinePaymentError(f"Company {company.code} has no active WeChat Pay sub-merchant.")
    owed = amount_owed(account).total
    amount = owed if amount is None else Decimal(amount)
    if amount <= 0:
        raise OnlinePaymentError(f"Account {account.account_no} owes nothing; no order was placed.")
    credentials = merchant_credentials()
    out_trade_no = _new_out_trade_no(company)
    body = wechatpay.native_order_body(
        sp_appid=current_app.config.get("WECHATPAY_SP_APPID", ""),
        sp_mchid=credentials.mchid,
        sub_mchid=merchant.sub_mchid,
        out_trade_no=out_trade_no,
        total_fen=yuan_to_fen(amount),
        description=f"{company.name} 热费 {account.account_no}"[: wechatpay.DESCRIPTION_MAX],
        notify_url=_config("WECHATPAY_NOTIFY_URL"),
        attach=account.account_no,
        time_expire=local_time(utcnow() + ORDER_VALIDITY),
    )
    try:
        _, reply, _ = wechatpay.send_request(
            _config("WECHATPAY_API_BASE"), credentials, "POST", wechatpay.NATIVE_ORDER_PATH, body
        )
    except wechatpay.WechatPayError as error:
        logger.error("WeChat Pay order %s for account %s failed: %s", out_trade_no, account.id, error)
        raise OnlinePaymentError(str(error)) from None
    order = OnlineOrder(
        company_id=company.id, account_id=account.id, channel=CHANNEL, out_trade_no=out_trade_no, amount=amount,
        status="pending", sub_mchid=merchant.sub_mchid, code_url=(reply or {}).get("code_url", ""),
    )
    db.session.add(order)
    db.session.commit()
    logger.info("WeChat Pay order %s of %s yuan placed for account %s", out_trade_no, amount, account.id)
    return order


def handle_wechat_notification(headers, raw_body, now=None):
    """Verify, route and apply one WeChat Pay notification; return what to reply.

    Runs under the system scope to find the company by sub_mchid, then under that company's
    scope only. The caller's transaction state is not used: every outcome is committed here.
    """
    log = PaymentNotification(channel=CHANNEL, body_sha256=hashlib.sha256(raw_body).hexdigest(), received_at=utcnow())
    try:
        keys, decryption_key = platform_keys(), apiv3_key()
    except (OnlinePaymentError, wechatpay.WechatPayError, OSError, ValueError) as error:
        # Without keys nothing can be verified. The channel retries a rejected notification,
        # so it is delivered again once the configuration is fixed.
        logger.error("WeChat Pay keys could not be loaded: %s", error)
        keys = decryption_key = None
        config_error = f"WeChat Pay keys could not be loaded: {error}"
    try:
        if keys is None:
            raise wechatpay.NotificationRejected(config_error)
        with scoped(SYSTEM_SCOPE):
            notification = wechatpay.verify_notification(headers, raw_body, keys, decryption_key, now=now)
            _fill_log(log, notification)
            result = _apply(notification, log)
    except wechatpay.NotificationRejected as error:
        db.session.rollback()
        result = NotificationResult(False, "rejected", error.reason)
    log.outcome = result.outcome
    log.reason = result.reason[:255]
    _store_log(log)
    if result.outcome == "rejected":
        logger.warning(
            "WeChat Pay notification rejected: %s (transaction %s, sub_mchid %s, body sha256 %s)",
            result.reason, log.transaction_id, log.sub_mchid, log.body_sha256,
        )
    else:
        logger.info("WeChat Pay notification %s: transaction %s of company %s %s",
                    result.outcome, log.transaction_id, log.company_id, result.reason)
    return result


def _fill_log(log, notification):
    resource = notification.resource
    amount = resource.get("amount") if isinstance(resource.get("amount"), dict) else {}
    log.notification_id = notification.id[:64]
    log.event_type = notification.event_type[:64]
    log.transaction_id = str(resource.get("transaction_id", ""))[:64] or None
    log.out_trade_no = str(resource.get("out_trade_no", ""))[:64] or None
    log.sub_mchid = str(resource.get("sub_mchid", ""))[:32] or None
    total = amount.get("total")
    log.amount = fen_to_yuan(total) if isinstance(total, int) and not isinstance(total, bool) and abs(total) < 10**12 else None


def _store_log(log):
    with scoped(SYSTEM_SCOPE):
        db.session.add(log)
        db.session.commit()


def _apply(notification, log):
    if notification.event_type != "TRANSACTION.SUCCESS" or notification.original_type != "transaction":
        # Refund and other events are acknowledged so the channel stops retrying.
        # TODO: apply REFUND.* events once online refunds exist.
        return NotificationResult(True, "ignored", f"event {notification.event_type} is not handled")
    resource = notification.resource
    if resource.get("trade_state") != "SUCCESS":
        return NotificationResult(True, "ignored", f"trade_state {resource.get('trade_state')} is not SUCCESS")
    sp_mchid = current_app.config.get("WECHATPAY_SP_MCHID")
    if resource.get("sp_mchid") != sp_mchid:
        raise wechatpay.NotificationRejected(f"sp_mchid {str(resource.get('sp_mchid'))[:32]!r} is not this service provider")
    if not log.transaction_id or not log.out_trade_no:
        raise wechatpay.NotificationRejected("transaction_id or out_trade_no is missing")
    amount = resource.get("amount") or {}
    if log.amount is None or amount.get("currency", "CNY") != "CNY":
        raise wechatpay.NotificationRejected("amount.total is missing or invalid, or currency is not CNY")

    merchant = db.session.scalar(sa.select(WechatMerchant).filter_by(sub_mchid=log.sub_mchid))
    if merchant is None:
        raise wechatpay.NotificationRejected(f"unknown sub_mchid {log.sub_mchid!r}")
    log.company_id = merchant.company_id
    with scoped(company_scope(merchant.company_id, label=f"wechatpay:{merchant.sub_mchid}")):
        return _apply_to_company(merchant.company_id, log, resource)


def _apply_to_company(company_id, log, resource):
    order_id = db.session.scalar(sa.select(OnlineOrder.id).filter_by(company_id=company_id, out_trade_no=log.out_trade_no))
    if order_id is None:
        raise wechatpay.NotificationRejected(f"order {log.out_trade_no!r} not found for sub_mchid {log.sub_mchid!r}")
    # The order row lock serializes notifications of one order, so the duplicate check below
    # sees the payment a concurrent notification of the same transaction committed.
    order = lock_row(OnlineOrder, order_id)
    log.online_order_id = order.id
    existing = _payment_for_transaction(company_id, log.transaction_id)
    if existing is not None:
        log.payment_id = existing.id
        return NotificationResult(True, "duplicate", f"transaction already posted as payment {existing.id}")
    if order.transaction_id == log.transaction_id and order.status == "held":
        return NotificationResult(True, "duplicate", "transaction already held for review")
    if order.status in ("paid", "held"):
        reason = f"order {order.out_trade_no} is already {order.status} by transaction {order.transaction_id}"
        # A second transaction on one order is money received without a matching bill: hold it.
        return NotificationResult(True, "held", reason)
    notified = log.amount
    if notified != order.amount:
        order.status = "held"
        order.transaction_id = log.transaction_id
        order.review_reason = f"notified amount {notified} differs from order amount {order.amount}"
        db.session.flush()
        return NotificationResult(True, "held", order.review_reason)

    try:
        payment = _post_online_payment(order, log.transaction_id, _success_time(resource))
        log.payment_id = payment.id
        db.session.flush()
    except IntegrityError:
        # A conflict on the unique transaction id means another notification of the same
        # transaction committed first. Its payment is kept and this one is a duplicate.
        db.session.rollback()
        existing = _payment_for_transaction(company_id, log.transaction_id)
        if existing is None:
            raise
        log.company_id = company_id
        log.online_order_id = order_id
        log.payment_id = existing.id
        return NotificationResult(True, "duplicate", f"transaction already posted as payment {existing.id}")
    return NotificationResult(True, "accepted", f"posted as payment {payment.id}")


def _payment_for_transaction(company_id, transaction_id):
    return db.session.scalar(
        sa.select(Payment).filter_by(company_id=company_id, channel=CHANNEL, channel_transaction_id=transaction_id)
    )


def _success_time(resource):
    try:
        return datetime.fromisoformat(resource["success_time"])
    except (KeyError, TypeError, ValueError):
        return utcnow()


def _post_online_payment(order, transaction_id, paid_at):
    """Post a payment for a paid order: receivables in the company's allocation order, any rest as a `credit` line."""
    account = lock_row(Account, order.account_id)
    owed = amount_owed(account)
    company = db.session.get(Company, order.company_id)
    payment = Payment(
        company_id=order.company_id, account_id=account.id, amount=order.amount, method=CHANNEL, channel=CHANNEL,
        season_id=owed.current.season.id if owed.current else None, cashier_id=None, paid_at=paid_at,
        receipt_no=next_receipt_no(company, paid_at), payer_name=account.customer_name.strip(),
        note=f"微信支付 {order.out_trade_no}", channel_transaction_id=transaction_id,
    )
    db.session.add(payment)
    db.session.flush()

    parts = allocate_payment(owed, order.amount, allocation_order(order.company_id))
    for season, part in parts:
        _add_line(payment, season.id if season else None, "payment", part, season.id if season else "arrears")
    # A bill already paid elsewhere (at the counter, or through another order) leaves money
    # that pays no receivable. It is kept as a `credit` line, which amount_owed ignores,
    # so the ledger balance shows it until finance refunds it or carries it forward.
    rest = order.amount - sum((part for _, part in parts), Decimal("0"))
    if rest > 0:
        _add_line(payment, None, "credit", rest, "credit")
    order.status = "paid"
    order.paid_at = paid_at
    order.transaction_id = transaction_id
    order.payment_id = payment.id
    return payment


def _add_line(payment, season_id, kind, amount, key_suffix):
    db.session.add(
        LedgerEntry(
            company_id=payment.company_id, account_id=payment.account_id, season_id=season_id, kind=kind,
            amount=-amount, cause_type="payment", cause_id=payment.id,
            idempotency_key=f"wechat:{payment.channel_transaction_id}:{key_suffix}",
            memo=f"收据 {payment.receipt_no}", created_by_id=None,
        )
    )
