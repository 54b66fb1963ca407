"""Daily reconciliation of one channel and merchant: our payments and refunds of a day against
the channel's statement lines.

Each line is matched by the channel's transaction id. What is on one side only, or on both
with different amounts, becomes a ReconciliationItem that finance resolves with a reason.
A re-run of the same day updates the run in place: differences that are gone are removed
unless someone resolved them, and new ones are added, so running twice changes nothing.
"""

import csv
import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.integrations.statement import StatementLine
from app.money import ZERO
from app.payments.models import ChannelStatement, OnlineOrder, Payment, ReconciliationItem, ReconciliationRun, WechatMerchant, utcnow

logger = logging.getLogger(__name__)
# Statement channel name -> Payment.channel of the payments that went through it.
PAYMENT_CHANNEL_OF = {"wechatpay": "wechat"}
RESOLUTION_MAX = 255


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
    """Start and end (exclusive) of a local business day, as aware datetimes."""
    start = datetime.combine(day, time.min, tzinfo=LOCAL_TIME)
    return start, start + timedelta(days=1)


def merchant_company_id(channel, merchant_id):
    """Return the company whose merchant at `channel` is `merchant_id`, or None."""
    if channel == "wechatpay":
        return db.session.scalar(sa.select(WechatMerchant.company_id).filter_by(sub_mchid=merchant_id))
    return None


def our_lines(company_id, channel, day):
    """Our payments through `channel` on a local day, as OurLine."""
    start, end = day_bounds(day)
    rows = db.session.execute(
        sa.select(Payment.id, Payment.channel_transaction_id, Payment.amount, OnlineOrder.out_trade_no)
        .outerjoin(OnlineOrder, OnlineOrder.payment_id == Payment.id)
        .where(
            Payment.company_id == company_id, Payment.channel == PAYMENT_CHANNEL_OF.get(channel, channel),
            Payment.paid_at >= start, Payment.paid_at < end, Payment.channel_transaction_id.is_not(None),
        )
    ).all()
    # TODO: add our refunds and reversals here once refunds are stored.
    return [OurLine("payment", txn, out_trade_no, amount, payment_id) for payment_id, txn, amount, out_trade_no in rows]


def compare(ours, theirs):
    """Pair our lines with statement lines by (kind, transaction id).

    Returns (matched count, differences) where each difference is a dict with the keys of a
    ReconciliationItem: line_kind, channel_txn_id, out_trade_no, difference, our_amount,
    their_amount and payment_id.
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


def _signed(kind, amount):
    return -amount if kind in ("refund", "reversal") else amount


def reconcile(company_id, channel, merchant_id, day, lines, statement_sha256=""):
    """Reconcile a company's channel and merchant for a local day against statement `lines`. Commits.

    Lines of other merchants or days are rejected, so a wrong file cannot clear a day.
    """
    check_lines(channel, merchant_id, day, lines)
    ours = our_lines(company_id, channel, day)
    matched, differences = compare(ours, lines)

    run = db.session.scalar(
        sa.select(ReconciliationRun).filter_by(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day).with_for_update()
    )
    if run is None:
        run = ReconciliationRun(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day, runs=0)
        db.session.add(run)
        db.session.flush()
    existing = {(item.line_kind, item.channel_txn_id): item for item in run.items}
    found = set()
    for difference in differences:
        key = (difference["line_kind"], difference["channel_txn_id"])
        found.add(key)
        item = existing.get(key)
        if item is None:
            db.session.add(ReconciliationItem(company_id=company_id, run_id=run.id, status="open", **difference))
        elif item.status == "open":
            for name, value in difference.items():
                setattr(item, name, value)
    for key, item in existing.items():
        if key not in found and item.status == "open":
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
    reason = (reason or "").strip()
    if not reason:
        raise ReconciliationError("请填写处理说明，例如“已补记收款，收据号 TJ-2025-000123”或“渠道次日到账”。")
    if len(reason) > RESOLUTION_MAX:
        raise ReconciliationError(f"处理说明最长 {RESOLUTION_MAX} 个字，当前 {len(reason)} 个字，请删减后重试。")
    if item.status != "open":
        raise ReconciliationError(f"该差异已由 {item.resolved_by.name if item.resolved_by else '他人'} 处理，无需再次处理。")
    item.status = "resolved"
    item.resolution = reason
    item.resolved_by_id = user.id
    item.resolved_at = utcnow()
    db.session.commit()
    logger.info("Reconciliation item %s (%s %s) resolved by user %s", item.id, item.difference, item.channel_txn_id, user.id)
    return item


def store_statement(company_id, channel, merchant_id, day, filename, content, user_id=None):
    """Keep a statement file as the one of its channel, merchant and day, replacing an older one. Commits."""
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


# -- WeChat Pay trade bill (GET /v3/bill/tradebill, bill_type=ALL)

WECHAT_BILL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _bill_value(row, name, number):
    value = row.get(name)
    if value is None:
        raise ReconciliationError(f"微信对账单第 {number} 行缺少列「{name}」；请上传“全部订单”类型（ALL）的交易账单。")
    return value.strip().lstrip("`")


def _bill_amount(text, name, number):
    try:
        amount = Decimal(text or "0")
    except InvalidOperation:
        raise ReconciliationError(f"微信对账单第 {number} 行列「{name}」的值「{text}」不是金额。") from None
    if amount != amount.quantize(Decimal("0.01")):
        raise ReconciliationError(f"微信对账单第 {number} 行列「{name}」的值「{text}」超过两位小数。")
    return amount.quantize(Decimal("0.01"))


def parse_wechat_trade_bill(text):
    """Read the detail lines of a WeChat Pay ALL trade bill into StatementLine, by header name.

    Data values start with a backtick and amounts are yuan. A refunded order appears on a
    second line whose 退款状态 is set; it yields a refund line with the refund amount.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    try:
        summary_at = next(i for i, line in enumerate(lines) if line.startswith("总交易单数"))
    except StopIteration:
        summary_at = len(lines)
    reader = csv.DictReader(io.StringIO("\n".join(lines[:summary_at])))
    result = []
    for number, row in enumerate(reader, start=2):
        if not any((value or "").strip() for value in row.values()):
            continue
        occurred = datetime.strptime(_bill_value(row, "交易时间", number), WECHAT_BILL_TIME_FORMAT).replace(tzinfo=LOCAL_TIME)
        merchant = _bill_value(row, "特约商户号", number) or _bill_value(row, "商户号", number)
        refund_status = row.get("退款状态", "").strip().lstrip("`")
        if refund_status:
            kind, txn, amount = "refund", _bill_value(row, "微信退款单号", number), _bill_amount(_bill_value(row, "退款金额", number), "退款金额", number)
        else:
            kind, txn, amount = "payment", _bill_value(row, "微信订单号", number), _bill_amount(_bill_value(row, "应结订单金额", number), "应结订单金额", number)
        result.append(
            StatementLine(
                channel="wechatpay", merchant_id=merchant, channel_txn_id=txn,
                out_trade_no=_bill_value(row, "商户订单号", number) or None, kind=kind, amount=amount, occurred_at=occurred,
            )
        )
    return result


# Statement channel -> parser of its file content (str) into StatementLine.
STATEMENT_PARSERS = {"wechatpay": parse_wechat_trade_bill}


def decode_statement(content):
    """Decode a statement as UTF-8 (with or without BOM), or raise ReconciliationError naming the encoding found."""
    original = "请上传从渠道下载的原始 CSV 文件，或在 Excel 中另存为“CSV UTF-8（逗号分隔）”"
    if content.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in content[:4096]:
        raise ReconciliationError(f"对账单是 UTF-16 编码（Excel 另存为“Unicode 文本”时会这样），不是 UTF-8；{original}。")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        try:
            content.decode("gb18030")
        except UnicodeDecodeError:
            raise ReconciliationError(
                f"对账单不是 UTF-8 文本（第 {error.start + 1} 个字节无法解码）；{original}。"
            ) from None
        raise ReconciliationError(f"对账单是 GBK 编码（Excel 另存为 CSV 时常见），不是 UTF-8；{original}。") from None


def parse_statement(channel, merchant_id, day, content):
    """Parse statement file bytes with the channel's parser and check every line's merchant and day."""
    parser = STATEMENT_PARSERS.get(channel)
    if parser is None:
        raise ReconciliationError(f"渠道「{channel}」暂无对账单解析器。")
    text = decode_statement(content)
    try:
        lines = parser(text)
    except (ValueError, csv.Error) as error:
        if isinstance(error, ReconciliationError):
            raise
        raise ReconciliationError(f"对账单无法解析（{error}）；请上传渠道下载的原始账单文件。") from None
    check_lines(channel, merchant_id, day, lines)
    return lines


def check_lines(channel, merchant_id, day, lines):
    """Reject lines of another channel, merchant or day, naming the first such line."""
    start, end = day_bounds(day)
    for number, line in enumerate(lines, start=1):
        if line.channel != channel or line.merchant_id != merchant_id:
            raise ReconciliationError(
                f"对账单第 {number} 笔（{line.channel_txn_id}）属于 {line.channel} 商户 {line.merchant_id}，"
                f"不是 {channel} 商户 {merchant_id}；请上传该商户的对账单。"
            )
        if not start <= line.occurred_at < end:
            raise ReconciliationError(
                f"对账单第 {number} 笔（{line.channel_txn_id}）发生于 {line.occurred_at:%Y-%m-%d %H:%M}，不在 {day} 当天；请上传 {day} 的对账单。"
            )


def reconcile_statement(statement):
    """Parse a stored statement with its channel's parser and reconcile its day."""
    lines = parse_statement(statement.channel, statement.merchant_id, statement.day, statement.content)
    return reconcile(statement.company_id, statement.channel, statement.merchant_id, statement.day, lines, statement.sha256)
