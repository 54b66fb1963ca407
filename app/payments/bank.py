"""Bank collection: answer a bank's query, payment and reversal requests.

A request is verified with its bank's key, routed to a company by (bank code, CompanyId)
alone and answered with a signed reply. Payments and reversals are idempotent by the
bank's (trade date, serial): the first reply is stored and a repeated request gets the
same bytes back without changing anything. A reversal is accepted only on the trade
date of the payment (China Standard Time); after that the payment is refunded at the
counter. Reversing a payment we never booked succeeds with nothing to undo, so a bank
that timed out on a payment can always clean up.
"""

import hashlib
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.integrations import bank as wire
from app.integrations.channel import ChannelError, NotificationRejected, NotificationReply
from app.locking import lock_row
from app.network.models import Account
from app.payments import channels
from app.payments.models import BankAgreement, BankTransaction, Payment, PaymentNotification, Refund, utcnow
from app.payments.online import post_channel_payment, store_notification_log
from app.payments.refunds import RefundError, reverse_payment
from app.payments.services import amount_owed
from app.tenancy import SYSTEM_SCOPE, company_scope, scoped

logger = logging.getLogger(__name__)
CHANNEL = "bank"


@dataclass(frozen=True)
class BankReply:
    """The signed reply to send: status, body and headers."""

    reply: NotificationReply
    headers: dict


def handle_bank_request(headers, raw_body, now=None):
    """Verify, route and answer one bank request; every outcome is committed here."""
    log = PaymentNotification(channel=CHANNEL, body_sha256=hashlib.sha256(raw_body).hexdigest(), received_at=utcnow())
    adapter = None
    try:
        bank_code = wire.peek_inst_id(raw_body)
        try:
            adapter = channels.bank_channel(bank_code)
        except ChannelError as error:
            raise NotificationRejected(f"bank {bank_code!r} has no key: {error}") from None
        with scoped(SYSTEM_SCOPE):
            event = adapter.verify_notification(headers, raw_body, now=now)
            log.event_type, log.transaction_id, log.out_trade_no = event.event_type, event.channel_txn_id, event.out_trade_no[:64]
            log.sub_mchid, log.amount = event.merchant_id, event.amount
            agreement = _agreement(bank_code, event.merchant_id)
            log.company_id = agreement.company_id
            with scoped(company_scope(agreement.company_id, label=f"bank:{bank_code}")):
                code, message, body = _answer(agreement, event)
        log.outcome = "accepted" if code == wire.OK else "ignored"
        log.reason = f"{code} {message}"[:255]
    except NotificationRejected as error:
        db.session.rollback()
        log.outcome, log.reason = "rejected", error.reason[:255]
        body = wire.reply_body(None, wire.SIGNATURE_ERROR if "signature" in error.reason or "window" in error.reason else wire.BAD_REQUEST, error.reason)
    store_notification_log(log)
    logger.info("Bank request %s %s: %s", log.event_type, log.transaction_id, log.reason)
    if adapter is None:
        return BankReply(NotificationReply(400, body, "application/json; charset=utf-8"), {})
    return BankReply(adapter.signed_reply(body), adapter.reply_headers(body))


def _agreement(bank_code, bank_company_id):
    rows = db.session.scalars(sa.select(BankAgreement).filter_by(bank_code=bank_code, bank_company_id=bank_company_id, active=True)).all()
    if len(rows) != 1:
        raise NotificationRejected(f"CompanyId {bank_company_id!r} is {'unknown' if not rows else 'ambiguous'} for bank {bank_code!r}")
    return rows[0]


def _answer(agreement, event):
    """Return (RespCode, RespMessage, reply body) and commit what the request changed."""
    if event.kind == "query":
        return _query(agreement, event)
    stored = _stored(agreement, event)
    if stored is not None:
        return stored.resp_code, "repeated request", stored.reply.encode("utf-8")
    try:
        code, message, body, fields = (_pay if event.kind == "payment" else _reverse)(agreement, event)
        db.session.add(
            BankTransaction(
                company_id=agreement.company_id, bank_code=agreement.bank_code, tran_code=event.event_type,
                tran_date=event.extra["tran_date"], tran_seq=event.channel_txn_id,
                original_tran_seq=event.extra["original_tran_seq"] or None, bill_key=event.out_trade_no,
                amount=event.amount, resp_code=code, reply=body.decode("utf-8"), **fields,
            )
        )
        db.session.commit()
    except IntegrityError:
        # The same serial arrived twice at once, so the first request's reply is kept.
        db.session.rollback()
        stored = _stored(agreement, event)
        if stored is None:
            raise
        return stored.resp_code, "repeated request", stored.reply.encode("utf-8")
    return code, message, body


def _stored(agreement, event):
    return db.session.scalar(
        sa.select(BankTransaction).filter_by(
            company_id=agreement.company_id, bank_code=agreement.bank_code, tran_date=event.extra["tran_date"],
            tran_seq=event.channel_txn_id,
        )
    )


def _account(agreement, bill_key):
    return db.session.scalar(sa.select(Account).filter_by(company_id=agreement.company_id, account_no=bill_key))


def _mask(name):
    name = (name or "").strip()
    return name[:1] + "*" * max(len(name) - 1, 1) if name else ""


def _query(agreement, event):
    account = _account(agreement, event.out_trade_no)
    if account is None:
        message = f"户号 {event.out_trade_no} 不存在"
        return wire.NO_RECORD, message, wire.reply_body(event, wire.NO_RECORD, message)
    owed = amount_owed(account)
    # Each season lists its unpaid receivable and its unpaid posted late fees. TotalDue is
    # Arrears plus both columns, and a payment must be that whole amount.
    seasons = [
        {"Season": s.season.name, "Amount": f"{s.outstanding:.2f}", "LateFee": f"{s.late_fee_outstanding:.2f}"}
        for s in owed.seasons if s.outstanding > 0 or s.late_fee_outstanding > 0
    ]
    body = wire.reply_body(
        event, wire.OK, "成功", BillKey=account.account_no, CustomerName=_mask(account.customer_name),
        Arrears=f"{owed.arrears_outstanding:.2f}", Seasons=seasons, LateFeeTotal=f"{owed.late_fees_outstanding:.2f}",
        TotalDue=f"{owed.total:.2f}",
    )
    return wire.OK, "成功", body


def _pay(agreement, event):
    if _reversed_before_arrival(agreement, event):
        message = f"交易 {event.channel_txn_id} 已由银行冲正，不再入账"
        return wire.ALREADY_REVERSED, message, wire.reply_body(event, wire.ALREADY_REVERSED, message), {}
    account = _account(agreement, event.out_trade_no)
    if account is None:
        message = f"户号 {event.out_trade_no} 不存在"
        return wire.NO_RECORD, message, wire.reply_body(event, wire.NO_RECORD, message), {}
    locked = lock_row(Account, account.id)
    owed = amount_owed(locked).total
    if owed <= 0:
        message = f"户号 {account.account_no} 当前没有欠费"
        return wire.NOTHING_OWED, message, wire.reply_body(event, wire.NOTHING_OWED, message), {}
    if event.amount != owed:
        # Partial payments are not accepted through the bank: the bill is paid whole.
        message = f"缴费金额 {event.amount} 与应缴金额 {owed} 不符"
        return wire.AMOUNT_MISMATCH, message, wire.reply_body(event, wire.AMOUNT_MISMATCH, message, TotalDue=f"{owed:.2f}"), {}
    transaction_id = wire.transaction_id(event.extra["tran_date"], event.channel_txn_id)
    payment = post_channel_payment(
        agreement.company_id, account.id, CHANNEL, event.amount, transaction_id, utcnow(),
        note=f"银行代收 {agreement.bank_code} {event.channel_txn_id}",
    )
    body = wire.reply_body(event, wire.OK, "成功", BillKey=account.account_no, PayAmount=f"{event.amount:.2f}", ReceiptNo=payment.receipt_no)
    return wire.OK, "成功", body, {"payment_id": payment.id}


def _reversed_before_arrival(agreement, event):
    """Return whether the bank reversed this payment's serial before the payment itself reached us.

    A bank that timed out on a payment reverses it. When the delayed payment arrives after
    that reversal, posting it would keep money the bank has given back to the payer.
    """
    return db.session.scalar(
        sa.select(sa.func.count(BankTransaction.id)).filter_by(
            company_id=agreement.company_id, bank_code=agreement.bank_code, tran_code="reverse",
            tran_date=event.extra["tran_date"], original_tran_seq=event.channel_txn_id,
        )
    ) > 0


def _reverse(agreement, event):
    tran_date = event.extra["tran_date"]
    original = db.session.scalar(
        sa.select(BankTransaction).filter_by(
            company_id=agreement.company_id, bank_code=agreement.bank_code, tran_code="pay",
            tran_seq=event.extra["original_tran_seq"], tran_date=tran_date,
        )
    )
    if original is None or original.payment_id is None:
        message = "原交易不存在或未入账，无需冲正"
        return wire.OK, message, wire.reply_body(event, wire.OK, message, OriginalTranSeq=event.extra["original_tran_seq"]), {}
    if tran_date != wire.local_today():
        message = f"原交易日期 {tran_date:%Y%m%d} 已过，不能冲正；请客户到营业厅办理退费"
        return wire.REVERSAL_TOO_LATE, message, wire.reply_body(event, wire.REVERSAL_TOO_LATE, message), {}
    payment = lock_row(Payment, original.payment_id)
    reversed_already = db.session.scalar(sa.select(Refund).filter_by(payment_id=payment.id, kind="reversal", status="succeeded"))
    if reversed_already is not None:
        message = "原交易已冲正，本次未重复处理"
        return wire.OK, message, wire.reply_body(event, wire.OK, message), {}
    try:
        refund = reverse_payment(
            payment, f"BANK{agreement.bank_code}{tran_date:%Y%m%d}{event.channel_txn_id}", f"银行冲正 {event.channel_txn_id}"
        )
    except RefundError as error:
        return wire.AMOUNT_MISMATCH, str(error), wire.reply_body(event, wire.AMOUNT_MISMATCH, str(error)), {}
    body = wire.reply_body(event, wire.OK, "成功", OriginalTranSeq=original.tran_seq, ReceiptNo=payment.receipt_no)
    return wire.OK, "成功", body, {"payment_id": payment.id, "refund_id": refund.id}
