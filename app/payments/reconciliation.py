"""Daily reconciliation of one channel and merchant: our payments and refunds of a day against
the channel's statement lines.

Each line is matched by the channel's transaction id. What is on one side only, or on both
with different amounts, becomes a ReconciliationItem that finance resolves with a reason.
A line naming another company's order keeps that order number out of the item; the number
goes to a ReconciliationOrderCopy, which only headquarters reads.
A re-run of the same day updates the run in place: differences that are gone are removed
unless someone resolved them, and new ones are added, so running twice changes nothing.

Statements come from the channel (download_and_reconcile, run daily from Celery beat) or
from a finance upload; the adapters in app/integrations/ parse them.
"""

import csv
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _

from app.clock import LOCAL_TIME
from app.extensions import db
from app.integrations import alipay, bank, wechatpay
from app.integrations.channel import StatementError
from app.money import ZERO
from app.payments.models import (
    BankTransaction, ChannelStatement, OnlineOrder, Payment, ReconciliationItem, ReconciliationOrderCopy, ReconciliationRun,
    Refund, utcnow,
)
from app.tenancy import SYSTEM_SCOPE, scoped
from app.texts import clean_text

logger = logging.getLogger(__name__)
# Statement channel name -> Payment.channel of the payments that went through it.
PAYMENT_CHANNEL_OF = {"wechatpay": "wechat"}
RESOLUTION_MAX = 255
# Order numbers per query when looking up which company owns them.
LOOKUP_CHUNK = 500


class ReconciliationError(ValueError):
    """A statement or resolution that cannot be accepted; the message names the line or value."""


@dataclass(frozen=True)
class OurLine:
    """A payment or refund on our side, keyed like a statement line."""

    kind: str
    channel_txn_id: str
    out_trade_no: str | None
    amount: Decimal
    payment_id: int


def day_bounds(day):
    """Start and end (exclusive) of a local business day, as aware datetimes in UTC.

    Times are stored in UTC (SQLite keeps only the wall-clock digits), so query bounds are too.
    """
    start = datetime.combine(day, time.min, tzinfo=LOCAL_TIME).astimezone(timezone.utc)
    return start, start + timedelta(days=1)


def our_lines(company_id, channel, merchant_id, day):
    """Our payments and succeeded refunds or reversals through a statement channel on a local day, as OurLine."""
    if channel.startswith("bank:"):
        return _our_bank_lines(company_id, channel.split(":", 1)[1], day)
    payment_channel = PAYMENT_CHANNEL_OF.get(channel, channel)
    start, end = day_bounds(day)
    rows = db.session.execute(
        sa.select(Payment.id, Payment.channel_transaction_id, Payment.amount, OnlineOrder.out_trade_no)
        .outerjoin(OnlineOrder, OnlineOrder.payment_id == Payment.id)
        .where(
            Payment.company_id == company_id, Payment.channel == payment_channel,
            Payment.paid_at >= start, Payment.paid_at < end, Payment.channel_transaction_id.is_not(None),
            sa.or_(OnlineOrder.id.is_(None), OnlineOrder.sub_mchid == merchant_id),
        )
    ).all()
    lines = [OurLine("payment", txn, out_trade_no, amount, payment_id) for payment_id, txn, amount, out_trade_no in rows]
    sent_at = refund_sent_at()
    refunds = db.session.execute(
        sa.select(Refund, Payment.channel_transaction_id, OnlineOrder.out_trade_no)
        .join(Payment, Payment.id == Refund.payment_id)
        .outerjoin(OnlineOrder, OnlineOrder.payment_id == Payment.id)
        .where(
            Refund.company_id == company_id, Refund.channel == payment_channel, Refund.kind == "refund",
            Refund.status == "succeeded", sent_at >= start, sent_at < end,
            sa.or_(OnlineOrder.id.is_(None), OnlineOrder.sub_mchid == merchant_id),
        )
    ).all()
    for refund, payment_txn, out_trade_no in refunds:
        lines.append(OurLine("refund", _refund_txn_id(channel, refund, payment_txn), out_trade_no, refund.amount, refund.payment_id))
    return lines


def refund_sent_at():
    """Return the SQL expression of when the channel accepted a refund's send.

    WeChat Pay and Alipay date a refund in their bills by when they accepted the request,
    not by when its confirmation completed it here, which can be after midnight. A refund
    sent again after a transport failure is dated by the send that was accepted. A refund
    with no stored send time (one whose send crashed before its commit) falls back to its
    approval, or to its request without one.
    """
    return sa.func.coalesce(Refund.sent_at, Refund.decided_at, Refund.requested_at)


def _refund_txn_id(channel, refund, payment_txn):
    # The key a refund has in the channel's bill: WeChat Pay's refund id, or Alipay's trade
    # number with our out_request_no (the bill's 退款批次号/请求号), as alipay.parse_trade_bill builds it.
    if channel == "alipay":
        return f"{payment_txn}:{refund.out_refund_no}"
    return refund.channel_refund_id or refund.out_refund_no


def _our_bank_lines(company_id, bank_code, day):
    """Payments and reversals a bank sent on its trade date `day`, keyed as in its reconciliation file."""
    rows = db.session.execute(
        sa.select(BankTransaction, Payment.amount, Refund.amount)
        .outerjoin(Payment, Payment.id == BankTransaction.payment_id)
        .outerjoin(Refund, Refund.id == BankTransaction.refund_id)
        .where(
            BankTransaction.company_id == company_id, BankTransaction.bank_code == bank_code, BankTransaction.tran_date == day,
            BankTransaction.resp_code == bank.OK,
        )
    ).all()
    lines = []
    for transaction, payment_amount, refund_amount in rows:
        txn_id = bank.transaction_id(transaction.tran_date, transaction.tran_seq)
        if transaction.tran_code == "pay" and transaction.payment_id is not None:
            lines.append(OurLine("payment", txn_id, transaction.bill_key, payment_amount, transaction.payment_id))
        elif transaction.tran_code == "reverse" and transaction.refund_id is not None:
            lines.append(OurLine("reversal", txn_id, transaction.bill_key or None, refund_amount, transaction.payment_id))
    return lines


def compare(ours, theirs):
    """Pair our lines with statement lines by (kind, transaction id).

    Returns (matched count, differences) where each difference is a dict with the keys of a
    ReconciliationItem: line_kind, channel_txn_id, out_trade_no, difference, our_amount,
    their_amount and payment_id. The `out_trade_no` of a statement line may name another
    company's order, so `reconcile` passes the differences through
    `withhold_other_company_orders` before storing them.
    """
    our_map = {(line.kind, line.channel_txn_id): line for line in ours}
    their_map = {}
    for line in theirs:
        key = (line.kind, line.channel_txn_id)
        their_map[key] = their_map.get(key, ZERO) + line.amount
    their_trade_no = {(line.kind, line.channel_txn_id): line.out_trade_no for line in theirs}
    matched, differences = 0, []
    for key in sorted(set(our_map) | set(their_map)):
        ours_line, their_amount = our_map.get(key), their_map.get(key)
        base = {
            "line_kind": key[0], "channel_txn_id": key[1],
            "out_trade_no": their_trade_no.get(key) or (ours_line.out_trade_no if ours_line else None),
            "our_amount": ours_line.amount if ours_line else None, "their_amount": their_amount,
            "payment_id": ours_line.payment_id if ours_line else None,
        }
        if ours_line is None:
            differences.append({**base, "difference": "missing_ours"})
        elif their_amount is None:
            differences.append({**base, "difference": "missing_theirs"})
        elif ours_line.amount != their_amount:
            differences.append({**base, "difference": "amount_differs"})
        else:
            matched += 1
    return matched, differences


def withhold_other_company_orders(company_id, differences):
    """Take another company's order numbers out of `differences` (dicts as `compare` returns).

    A statement of the company's merchant may still name an order of another company, for
    example when a channel misroutes a payment. Such a difference keeps no order number and
    gets `other_company_order` set. Numbers that no company owns stay, because they are the
    merchant's own. Returns {(line_kind, channel_txn_id): (order number, owner company id)}
    of the numbers taken out.
    """
    numbers = {d["out_trade_no"] for d in differences if d["out_trade_no"]}
    owners = _other_owners(company_id, numbers)
    withheld = {}
    for difference in differences:
        owner_id = owners.get(difference["out_trade_no"])
        difference["other_company_order"] = owner_id is not None
        if owner_id is not None:
            withheld[(difference["line_kind"], difference["channel_txn_id"])] = (difference["out_trade_no"], owner_id)
            difference["out_trade_no"] = None
    return withheld


def _other_owners(company_id, numbers):
    """Return {order number: company id} of the `numbers` that another company owns and this one does not."""
    numbers = sorted(numbers)
    owners = {}
    for start in range(0, len(numbers), LOOKUP_CHUNK):
        chunk = numbers[start:start + LOOKUP_CHUNK]
        own = set(db.session.scalars(
            sa.select(OnlineOrder.out_trade_no).where(OnlineOrder.company_id == company_id, OnlineOrder.out_trade_no.in_(chunk))
        ))
        foreign = [number for number in chunk if number not in own]
        if not foreign:
            continue
        # Only the system scope reads other companies' orders; nothing read here reaches the company.
        with scoped(SYSTEM_SCOPE):
            rows = db.session.execute(
                sa.select(OnlineOrder.out_trade_no, OnlineOrder.company_id)
                .where(OnlineOrder.out_trade_no.in_(foreign), OnlineOrder.company_id != company_id)
                .order_by(OnlineOrder.id)
            ).all()
        for number, owner_id in rows:
            owners.setdefault(number, owner_id)
    return owners


def _sync_order_copies(company_id, open_items, removed, withheld):
    """Keep a ReconciliationOrderCopy for each open item whose order number was withheld, and drop the others.

    `open_items` maps (line_kind, channel_txn_id) to the flushed open items of this run, `removed`
    lists the items about to be deleted and `withheld` is what
    `withhold_other_company_orders` returned. Resolved items keep their copy.
    """
    item_ids = [item.id for item in open_items.values()] + [item.id for item in removed]
    if not item_ids:
        return
    with scoped(SYSTEM_SCOPE):
        copies = {
            copy.item_id: copy
            for copy in db.session.scalars(sa.select(ReconciliationOrderCopy).where(ReconciliationOrderCopy.item_id.in_(item_ids)))
        }
        for item in removed:
            if item.id in copies:
                db.session.delete(copies[item.id])
        for key, item in open_items.items():
            copy = copies.get(item.id)
            if key not in withheld:
                if copy is not None:
                    db.session.delete(copy)
                continue
            if copy is None:
                copy = ReconciliationOrderCopy(company_id=None, item_id=item.id, merchant_company_id=company_id)
                db.session.add(copy)
            copy.out_trade_no, copy.order_company_id = withheld[key]
        db.session.flush()


def _signed(kind, amount):
    return -amount if kind in ("refund", "reversal") else amount


def reconcile(company_id, channel, merchant_id, day, lines, statement_sha256=""):
    """Reconcile a company's channel and merchant for a local day against statement `lines`. Commits.

    Lines of other merchants or days are rejected, so a wrong file cannot clear a day.
    """
    check_lines(channel, merchant_id, day, lines)
    ours = our_lines(company_id, channel, merchant_id, day)
    matched, differences = compare(ours, lines)
    withheld = withhold_other_company_orders(company_id, differences)

    run = db.session.scalar(
        sa.select(ReconciliationRun).filter_by(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day).with_for_update()
    )
    if run is None:
        run = ReconciliationRun(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day, runs=0)
        db.session.add(run)
        db.session.flush()
    existing = {(item.line_kind, item.channel_txn_id): item for item in run.items}
    open_items = {}
    for difference in differences:
        key = (difference["line_kind"], difference["channel_txn_id"])
        item = existing.get(key)
        if item is None:
            item = ReconciliationItem(company_id=company_id, run_id=run.id, status="open", **difference)
            db.session.add(item)
        elif item.status == "open":
            for name, value in difference.items():
                setattr(item, name, value)
        else:
            continue
        open_items[key] = item
    found = {(d["line_kind"], d["channel_txn_id"]) for d in differences}
    removed = [item for key, item in existing.items() if key not in found and item.status == "open"]
    db.session.flush()
    _sync_order_copies(company_id, open_items, removed, withheld)
    for item in removed:
        db.session.delete(item)
    run.matched = matched
    run.differences = len(differences)
    run.our_total = sum((_signed(line.kind, line.amount) for line in ours), ZERO)
    run.their_total = sum((_signed(line.kind, line.amount) for line in lines), ZERO)
    run.statement_sha256 = statement_sha256
    run.runs += 1
    run.ran_at = utcnow()
    db.session.commit()
    logger.info(
        "Reconciled %s merchant %s for %s: %s matched, %s differences (run %s)",
        channel, merchant_id, day, matched, len(differences), run.runs,
    )
    return run


def resolve_item(item, reason, user):
    """Close a difference with the reason finance gives, e.g. the booking or refund that settled it. Commits."""
    reason = clean_text(reason)
    if not reason:
        raise ReconciliationError(_("请填写处理说明，例如“已补记收款，收据号 TJ-2025-000123”或“渠道次日到账”。"))
    if len(reason) > RESOLUTION_MAX:
        raise ReconciliationError(_("处理说明最长 %(max)s 个字，当前 %(count)s 个字，请删减后重试。", max=RESOLUTION_MAX, count=len(reason)))
    if item.status != "open":
        raise ReconciliationError(
            _("该差异已由 %(name)s 处理，无需再次处理。", name=item.resolved_by.name) if item.resolved_by
            else _("该差异已由他人处理，无需再次处理。")
        )
    item.status = "resolved"
    item.resolution = reason
    item.resolved_by_id = user.id
    item.resolved_at = utcnow()
    db.session.commit()
    logger.info("Reconciliation item %s (%s %s) resolved by user %s", item.id, item.difference, item.channel_txn_id, user.id)
    return item


def store_statement(company_id, channel, merchant_id, day, filename, content, user_id=None):
    """Keep a statement file as the one of its channel, merchant and day, replacing an older one. Commits.

    TODO: the stored file keeps every line whole, so a line naming another company's order
    stays in the merchant company's ChannelStatement; no page shows the file.
    """
    digest = hashlib.sha256(content).hexdigest()
    statement = db.session.scalar(
        sa.select(ChannelStatement).filter_by(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day)
    )
    if statement is None:
        statement = ChannelStatement(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day)
        db.session.add(statement)
    statement.filename = filename[:255]
    statement.content = content
    statement.sha256 = digest
    statement.uploaded_by_id = user_id
    statement.uploaded_at = utcnow()
    db.session.commit()
    return statement


def _parse_lines(channel, merchant_id, content):
    if channel == "wechatpay":
        return wechatpay.parse_trade_bill(content)
    if channel == "alipay":
        return alipay.parse_trade_bill(content, merchant_id)
    if channel.startswith("bank:"):
        return bank.parse_reconciliation_file(content, channel.split(":", 1)[1], merchant_id)
    raise ReconciliationError(_("渠道「%(channel)s」暂无对账单解析器。", channel=channel))


def decode_statement(content):
    """Decode a statement as UTF-8 (with or without BOM), or raise ReconciliationError naming the encoding found."""
    original = _("请上传从渠道下载的原始 CSV 文件，或在 Excel 中另存为“CSV UTF-8（逗号分隔）”")
    if content.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in content[:4096]:
        raise ReconciliationError(_("对账单是 UTF-16 编码（Excel 另存为“Unicode 文本”时会这样），不是 UTF-8；%(fix)s。", fix=original))
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        try:
            content.decode("gb18030")
        except UnicodeDecodeError:
            raise ReconciliationError(
                _("对账单不是 UTF-8 文本（第 %(position)s 个字节无法解码）；%(fix)s。", position=error.start + 1, fix=original)
            ) from None
        raise ReconciliationError(_("对账单是 GBK 编码（Excel 另存为 CSV 时常见），不是 UTF-8；%(fix)s。", fix=original)) from None


def parse_statement(channel, merchant_id, day, content):
    """Parse statement file bytes with the channel adapter's parser and check every line's merchant and day.

    Empty content is a day the channel reported no statement for, because nothing happened.
    """
    if not content:
        return []
    if channel == "wechatpay":
        # WeChat Pay bills are UTF-8; a bill re-saved in another encoding gets a message naming it.
        decode_statement(content)
    try:
        lines = _parse_lines(channel, merchant_id, content)
    except StatementError as error:
        raise ReconciliationError(str(error)) from None
    except (ValueError, UnicodeDecodeError, csv.Error) as error:
        if isinstance(error, ReconciliationError):
            raise
        raise ReconciliationError(_("对账单无法解析（%(error)s）；请使用渠道下载的原始账单文件。", error=error)) from None
    check_lines(channel, merchant_id, day, lines)
    return lines


def check_lines(channel, merchant_id, day, lines):
    """Reject lines of another channel, merchant or day, naming the first such line."""
    start, end = day_bounds(day)
    for number, line in enumerate(lines, start=1):
        if line.channel != channel or line.merchant_id != merchant_id:
            raise ReconciliationError(_(
                "对账单第 %(number)s 笔（%(serial)s）属于 %(line_channel)s 商户 %(line_merchant)s，"
                "不是 %(channel)s 商户 %(merchant)s；请上传该商户的对账单。",
                number=number, serial=line.channel_txn_id, line_channel=line.channel, line_merchant=line.merchant_id,
                channel=channel, merchant=merchant_id,
            ))
        if not start <= line.occurred_at < end:
            raise ReconciliationError(_(
                "对账单第 %(number)s 笔（%(serial)s）发生于 %(time)s，不在 %(day)s 当天；请上传 %(day)s 的对账单。",
                number=number, serial=line.channel_txn_id, time=line.occurred_at.strftime("%Y-%m-%d %H:%M"), day=day,
            ))


def reconcile_statement(statement):
    """Parse a stored statement with its channel's parser and reconcile its day."""
    lines = parse_statement(statement.channel, statement.merchant_id, statement.day, statement.content)
    return reconcile(statement.company_id, statement.channel, statement.merchant_id, statement.day, lines, statement.sha256)
