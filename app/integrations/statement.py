"""One line of a payment channel's daily statement, in the form reconciliation compares."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class StatementLine:
    """A payment, refund or reversal as the channel reports it.

    `channel` is "wechatpay", "alipay" or "bank:<bank code>"; `merchant_id` is the
    sub_mchid, Alipay app id or bank merchant number the money settled to; `amount` is
    positive yuan with two places; `occurred_at` is timezone-aware.
    """

    channel: str
    merchant_id: str
    channel_txn_id: str
    out_trade_no: str | None
    kind: str  # "payment", "refund" or "reversal"
    amount: Decimal
    occurred_at: datetime
