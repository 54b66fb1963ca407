"""Refunds and reversals: money paid back on one payment, whole or in part.

A refund always names its payment and goes back through the payment's channel: WeChat Pay
and Alipay payments through their refund APIs, counter and bank payments as cash at the
counter with a receipt number. A bank reverses its own payment the same day (app/payments/bank.py).

The payment row lock serializes refunds of one payment, so the refunds in
REFUND_OPEN_OR_DONE never add up to more than the payment. A refund posts its ledger
lines only when it succeeds: first it gives back the payment's `credit` part (money the
account did not owe), then the seasons the payment paid, latest first, each with the late
fees the payment paid on it.
"""

import logging
import secrets
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError

from app.billing.models import LATE_FEE_RECEIVED_KINDS, RECEIVED_KINDS, LedgerEntry, memo_columns
from app.clock import local_time
from app.extensions import db
from app.i18n import DEFAULT_LOCALE, M_, N_, Message, message_of, translate_label
from app.integrations.channel import ChannelError, RefundRequest
from app.locking import lock_row
from app.money import ZERO
from app.org.models import Company
from app.payments import channels
from app.payments.models import REFUND_OPEN_OR_DONE, OnlineOrder, Payment, Refund, utcnow
from app.payments.services import PaymentError, next_receipt_no, parse_amount
from app.tariffs.models import Season
from app.texts import clean_text

logger = logging.getLogger(__name__)
ONLINE_REFUND_CHANNELS = ("wechat", "alipay")
# Ledger kind of the part of a refund or reversal that gives back late fees the payment paid.
LATE_FEE_REFUND = "late_fee_refund"
REASON_MAX = 255


class RefundError(ValueError):
    """A refund that cannot be requested, decided or applied; the message is shown to the user."""


def refunded_amount(payment_id):
    """Sum of a payment's refunds that are waiting, in progress or done."""
    total = db.session.scalar(
        sa.select(sa.func.sum(Refund.amount)).where(Refund.payment_id == payment_id, Refund.status.in_(REFUND_OPEN_OR_DONE))
    )
    return total if total is not None else ZERO


def refundable_amount(payment):
    """What is left to refund on a payment."""
    return payment.amount - refunded_amount(payment.id)


def refund_channel(payment):
    """The channel a payment's refund goes back through: its online channel, else the counter."""
    return payment.channel if payment.channel in ONLINE_REFUND_CHANNELS else "counter"


def _new_out_refund_no(company):
    # Letters and digits only, which both WeChat Pay and Alipay accept; at most 30 characters.
    return f"R{company.code}{local_time(utcnow()):%Y%m%d}{secrets.token_hex(8)}"


def request_refund(payment_id, amount, reason, user, request_token=None):
    """Record a refund request on a payment and, unless the company requires approval, submit it.

    Raises RefundError when the amount is invalid or more than what is left refundable.
    A request already stored under `request_token` (a resubmitted form) is returned as it is.
    """
    try:
        amount = parse_amount(amount, label=_("退费金额"))
    except PaymentError as error:
        raise RefundError(str(error)) from None
    reason = clean_text(reason)
    if not reason:
        raise RefundError(_("请填写退费原因，例如「重复缴费」或「面积核减」。"))
    if len(reason) > REASON_MAX:
        raise RefundError(_("退费原因最长 %(max)s 个字，当前 %(count)s 个字，请删减后重试。", max=REASON_MAX, count=len(reason)))
    request_token = (request_token or "").strip()[:64] or None
    try:
        refund = _record_request(payment_id, amount, reason, user, request_token)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        refund = _refund_for_token(request_token) if request_token else None
        if refund is None or refund.payment_id != payment_id:
            raise
        return refund
    except Exception:
        db.session.rollback()
        raise
    logger.info("Refund %s of %s on payment %s requested by user %s (%s)", refund.id, amount, payment_id, user.id, refund.status)
    if refund.status == "processing":
        submit_refund(refund.id)
    return refund


def _record_request(payment_id, amount, reason, user, request_token):
    # The payment row lock makes concurrent refunds of one payment wait for each other, so
    # each reads the refunds the previous one committed.
    payment = lock_row(Payment, payment_id)
    if payment is None:
        raise RefundError(_("未找到编号为 %(id)s 的收款记录，或该记录不属于您的公司。", id=payment_id))
    if request_token:
        existing = _refund_for_token(request_token)
        if existing is not None:
            if existing.payment_id != payment_id:
                raise RefundError(_("该退费表单已用于另一笔收款，请刷新页面后重新申请。"))
            return existing
    left = refundable_amount(payment)
    if amount > left:
        raise RefundError(_(
            "退费金额 %(amount)s 元超过该笔收款的可退余额 %(left)s 元（收款 %(paid)s 元，"
            "已退或退费中 %(taken)s 元）。请改为不超过 %(left)s 元。",
            amount=amount, left=left, paid=payment.amount, taken=payment.amount - left,
        ))
    company = db.session.get(Company, payment.company_id)
    refund = Refund(
        company_id=payment.company_id, payment_id=payment.id, account_id=payment.account_id, amount=amount,
        kind="refund", channel=refund_channel(payment),
        status="pending_approval" if company.refund_requires_approval else "processing",
        reason=reason, out_refund_no=_new_out_refund_no(company), request_token=request_token, requested_by_id=user.id,
    )
    db.session.add(refund)
    db.session.flush()
    return refund


def _refund_for_token(request_token):
    return db.session.scalar(sa.select(Refund).filter_by(request_token=request_token))


def decide_refund(refund_id, user, approve):
    """Approve or reject a refund waiting for approval; an approved refund is submitted at once."""
    refund = lock_row(Refund, refund_id)
    if refund is None:
        raise RefundError(_("未找到编号为 %(id)s 的退费申请，或该申请不属于您的公司。", id=refund_id))
    if refund.status != "pending_approval":
        db.session.rollback()
        raise RefundError(_(
            "退费申请 %(id)s 当前状态为「%(status)s」，不能再审批。", id=refund_id, status=translate_label(refund.status_label)
        ))
    if refund.requested_by_id == user.id:
        db.session.rollback()
        raise RefundError(_("申请人不能审批自己的退费申请，请由另一位有审批权限的同事处理。"))
    refund.approved_by_id = user.id
    refund.decided_at = utcnow()
    refund.status = "processing" if approve else "rejected"
    db.session.commit()
    logger.info("Refund %s %s by user %s", refund.id, "approved" if approve else "rejected", user.id)
    if approve:
        submit_refund(refund.id)
    return db.session.get(Refund, refund_id)


def submit_refund(refund_id):
    """Pay out a refund in `processing`: cash at the counter, or a call to the online channel.

    The channel is called outside any row lock. A transport failure leaves the refund in
    `processing` with the error noted; submitting again sends the same out_refund_no, which
    the channel treats as the same refund. A refund whose confirmation never arrives is
    settled by check_refund (the stuck-refund sweep on Celery beat).
    """
    refund = db.session.get(Refund, refund_id)
    if refund is None or refund.status != "processing":
        return refund
    if refund.channel == "counter":
        return _pay_at_counter(refund_id)
    sent_at = utcnow()
    try:
        adapter, request = _channel_request(refund)
        result = adapter.refund(request)
    except _NoOnlineOrder as error:
        return _fail(refund_id, message_of(error) or str(error))
    except ChannelError as error:
        # The channel may still have accepted this send, so it dates the refund until a later send does.
        return _note_channel_error(refund_id, N_("提交退款渠道失败，可稍后重试"), error, sent_at=sent_at)
    refund = _apply_channel_result(refund_id, result, sent_at=sent_at)
    logger.info("Refund %s sent to %s: %s", refund_id, refund.channel, refund.status)
    return refund


def check_refund(refund_id):
    """Ask the channel for a refund still `processing` and complete it, fail it or send it again.

    A refund the channel never received (lost on the way) is submitted again under the same
    out_refund_no; one the channel still processes stays as it is. A refund the query finds
    was accepted on the latest send, whose reply was lost, so that send dates it.
    """
    refund = db.session.get(Refund, refund_id)
    if refund is None or refund.status != "processing" or refund.channel not in ONLINE_REFUND_CHANNELS:
        return refund
    try:
        adapter, request = _channel_request(refund)
        result = adapter.query_refund(request)
    except _NoOnlineOrder as error:
        return _fail(refund_id, message_of(error) or str(error))
    except ChannelError as error:
        return _note_channel_error(refund_id, N_("查询退款渠道失败，将稍后再查"), error)
    logger.info("Refund %s queried at %s: %s %s", refund_id, refund.channel, result.status, result.message)
    if result.status == "not_found":
        return submit_refund(refund_id)
    return _apply_channel_result(refund_id, result, accepted=True)


def stuck_refund_ids(older_than_seconds):
    """(refund id, company id) of online refunds still `processing` this long after they were requested or approved."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    return db.session.execute(
        sa.select(Refund.id, Refund.company_id)
        .where(
            Refund.status == "processing", Refund.channel.in_(ONLINE_REFUND_CHANNELS),
            sa.func.coalesce(Refund.decided_at, Refund.requested_at) < cutoff,
        )
        .order_by(Refund.id)
    ).all()


class _NoOnlineOrder(RefundError):
    """A channel refund of a payment that has no online order to refund against."""


def _channel_request(refund):
    """Return (adapter, RefundRequest) of an online refund; raise _NoOnlineOrder or ChannelError."""
    payment = db.session.get(Payment, refund.payment_id)
    order = db.session.scalar(sa.select(OnlineOrder).filter_by(company_id=refund.company_id, payment_id=payment.id))
    if order is None:
        raise _NoOnlineOrder(M_("收款 %(receipt)s 没有对应的线上订单，无法原路退回；请改为柜台退费。", receipt=payment.receipt_no))
    auth_token = channels.order_merchant(refund.company_id, refund.channel)[1]
    adapter = channels.channel_for(refund.channel)
    request = RefundRequest(
        merchant_id=order.sub_mchid, out_trade_no=order.out_trade_no, channel_txn_id=payment.channel_transaction_id,
        out_refund_no=refund.out_refund_no, amount=refund.amount, order_total=payment.amount, reason=refund.reason,
        notify_url=current_app.config.get("WECHATPAY_NOTIFY_URL", "") if refund.channel == "wechat" else "",
        auth_token=auth_token,
    )
    return adapter, request


def _note_channel_error(refund_id, action, error, sent_at=None):
    refund = db.session.get(Refund, refund_id)
    logger.error("Refund %s at %s: %s: %s", refund_id, refund.channel, action, error)
    refund = lock_row(Refund, refund_id)
    _set_failure(refund, M_("%(action)s：%(error)s", action=Message(action), error=message_of(error) or str(error)))
    if sent_at is not None and not refund.send_accepted:
        refund.sent_at = sent_at
    db.session.commit()
    return refund


def _apply_channel_result(refund_id, result, sent_at=None, accepted=False):
    """Complete or fail a refund still `processing` by the channel's reply; "processing" changes nothing. Commits.

    A reply to a send (`sent_at`) or to a query that found the refund (`accepted`) shows
    that the channel accepted it, which fixes the send time that dates the refund.
    """
    refund = lock_row(Refund, refund_id)
    if not refund.send_accepted and (sent_at is not None or accepted):
        refund.sent_at = sent_at or refund.sent_at
        refund.send_accepted = True
    if refund.status == "processing":
        refund.channel_refund_id = result.channel_refund_id or refund.channel_refund_id
        if result.status == "succeeded":
            complete_refund(refund)
        elif result.status == "failed":
            refund.status = "failed"
            _set_failure(refund, M_("退款渠道拒绝：%(message)s", message=result.message))
            refund.completed_at = utcnow()
    db.session.commit()
    return refund


def _pay_at_counter(refund_id):
    refund = lock_row(Refund, refund_id)
    if refund.status != "processing":
        db.session.rollback()
        return refund
    company = db.session.get(Company, refund.company_id)
    # The cashier prints the refund receipt from the payment page (payments.refund_receipt_pdf).
    refund.receipt_no = next_receipt_no(company, utcnow())
    complete_refund(refund)
    db.session.commit()
    logger.info("Refund %s paid at the counter, receipt %s", refund.id, refund.receipt_no)
    return refund


def _fail(refund_id, reason):
    refund = lock_row(Refund, refund_id)
    refund.status = "failed"
    _set_failure(refund, reason)
    refund.completed_at = utcnow()
    db.session.commit()
    return refund


def _set_failure(refund, reason):
    """Store why a refund failed or waits: the Chinese text, plus the msgid and values when `reason` is a Message.

    Refunds are submitted and checked in Celery tasks, so pages translate the stored Message.
    """
    with force_locale(DEFAULT_LOCALE):
        refund.failure_reason = str(reason)[:REASON_MAX]
    refund.failure_message = reason.as_data() if isinstance(reason, Message) else None


def complete_refund(refund, channel_refund_id=""):
    """Mark a locked refund succeeded and post its ledger lines in the caller's transaction.

    Its red invoice, if the payment was invoiced, is made by a Celery task sent after the
    caller commits (app/invoicing/reversals.py).
    """
    from app.invoicing.reversals import queue_refund_reversal

    if channel_refund_id:
        refund.channel_refund_id = channel_refund_id
    refund.status = "succeeded"
    refund.completed_at = utcnow()
    for season_id, kind, part in _refund_parts(refund):
        db.session.add(
            LedgerEntry(
                company_id=refund.company_id, account_id=refund.account_id, season_id=season_id, kind=kind, amount=part,
                cause_type="refund", cause_id=refund.id, idempotency_key=_refund_line_key(refund.id, season_id, kind),
                **memo_columns(M_("%(kind)s %(refund_no)s", kind=Message(refund.kind_label), refund_no=refund.out_refund_no)), created_by_id=refund.approved_by_id or refund.requested_by_id,
            )
        )
    db.session.flush()
    queue_refund_reversal(refund)


def _refund_line_key(refund_id, season_id, kind):
    if kind == "credit":
        return f"refund:{refund_id}:credit"
    if kind == LATE_FEE_REFUND:
        return f"refund:{refund_id}:late_fee:{season_id}"
    return f"refund:{refund_id}:{season_id or 'arrears'}"


def _refund_parts(refund):
    """Split a refund over what its payment put on the ledger and earlier refunds have not taken back.

    Returns [(season_id or None, kind, positive amount)]: the credit first, then seasons
    latest first, each season's late fee (`late_fee_refund`) before its receivable
    (`refund` or `reversal`), prior arrears last. A payment pays a season's late fee after
    its receivable, so a partial refund gives back the late fee first.
    """
    earlier = sa.select(Refund.id).where(Refund.payment_id == refund.payment_id, Refund.id != refund.id)
    rows = db.session.execute(
        sa.select(LedgerEntry.season_id, LedgerEntry.kind, sa.func.sum(LedgerEntry.amount))
        .where(
            sa.or_(
                sa.and_(LedgerEntry.cause_type == "payment", LedgerEntry.cause_id == refund.payment_id),
                sa.and_(LedgerEntry.cause_type == "refund", LedgerEntry.cause_id.in_(earlier)),
            )
        )
        .group_by(LedgerEntry.season_id, LedgerEntry.kind)
    ).all()
    credit = ZERO
    received = {}
    late_fees = {}
    for season_id, kind, amount in rows:
        if kind == "credit":
            credit -= amount
        elif kind in RECEIVED_KINDS:
            received[season_id] = received.get(season_id, ZERO) - amount
        elif kind in LATE_FEE_RECEIVED_KINDS:
            late_fees[season_id] = late_fees.get(season_id, ZERO) - amount
    season_ids = [s for s in set(received) | set(late_fees) if s is not None]
    starts = dict(db.session.execute(sa.select(Season.id, Season.start_on).where(Season.id.in_(season_ids))).all())
    slots = [(None, "credit", credit)]
    for season_id in sorted(season_ids, key=lambda s: starts[s], reverse=True):
        slots.append((season_id, LATE_FEE_REFUND, late_fees.get(season_id, ZERO)))
        slots.append((season_id, refund.kind, received.get(season_id, ZERO)))
    slots.append((None, refund.kind, received.get(None, ZERO)))
    remaining = refund.amount
    parts = []
    for season_id, kind, available in slots:
        part = min(remaining, available)
        if part > 0:
            parts.append((season_id, kind, part))
            remaining -= part
    if remaining > 0:
        raise RefundError(_(
            "退费 %(id)s 超出该笔收款在台账中尚未退回的金额 %(amount)s 元。", id=refund.id, amount=refund.amount - remaining
        ))
    return parts


def apply_refund_event(company_id, channel_code, event):
    """Apply a channel's refund notification to our refund; return (outcome, reason) for the log."""
    refund_id = db.session.scalar(sa.select(Refund.id).filter_by(company_id=company_id, out_refund_no=event.out_refund_no))
    if refund_id is None:
        # A refund started outside Heatflow (e.g. in the merchant portal) is money we did not
        # book: keep it for review and stop the channel's retries.
        return "held", f"refund {event.out_refund_no!r} was not requested here"
    refund = lock_row(Refund, refund_id)
    if refund.status == "succeeded":
        return "duplicate", f"refund {refund.id} already succeeded"
    if refund.status != "processing":
        return "held", f"refund {refund.id} is {refund.status} but the channel reports {event.refund_status}"
    if event.refund_status == "succeeded":
        # Alipay reports refund_fee as the total refunded on the trade so far, WeChat Pay the
        # amount of this refund.
        cumulative = event.extra.get("cumulative_refund", False)
        if (event.amount < refund.amount) if cumulative else (event.amount != refund.amount):
            return "held", f"refund {refund.id}: notified amount {event.amount} differs from {refund.amount}"
        complete_refund(refund, event.channel_refund_id)
        return "accepted", f"refund {refund.id} succeeded"
    refund.status = "failed"
    _set_failure(refund, M_("退款渠道通知失败：%(event)s", event=event.event_type))
    refund.completed_at = utcnow()
    return "accepted", f"refund {refund.id} failed ({event.event_type})"


def reverse_payment(payment, out_refund_no, reason):
    """Post a bank's same-day reversal of a whole payment in the caller's transaction.

    The caller holds the payment's row lock. Raises RefundError when part of the payment
    was already refunded, since a reversal always takes back the whole amount.
    """
    if refunded_amount(payment.id) > 0:
        raise RefundError(f"收款 {payment.receipt_no} 已有退费，不能整笔冲正。")
    refund = Refund(
        company_id=payment.company_id, payment_id=payment.id, account_id=payment.account_id, amount=payment.amount,
        kind="reversal", channel=payment.channel, status="processing", reason=reason[:REASON_MAX],
        out_refund_no=out_refund_no[:64],
    )
    db.session.add(refund)
    db.session.flush()
    complete_refund(refund)
    return refund


def payment_refunds(payment_id):
    """A payment's refunds, oldest first."""
    return db.session.scalars(sa.select(Refund).filter_by(payment_id=payment_id).order_by(Refund.id)).all()

