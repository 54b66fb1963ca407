"""The interface every payment channel adapter implements, and the values it passes.

An adapter knows one channel's wire format: how to sign a request, how to verify what the
channel sends, and how to read its daily statement. It deals in the channel's merchant ids
and order numbers and knows nothing of accounts or the ledger; app/payments applies the
events it returns. Amounts crossing this interface are Decimal yuan with two places,
whatever unit the channel uses on the wire.
"""

import abc
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from app.i18n import M_, Message
from app.integrations.statement import StatementLine

YUAN = Decimal("0.01")


class ChannelError(Exception):
    """A request that cannot be built or sent, or an error reply from the channel."""


class NotificationRejected(ChannelError):
    """A notification that failed verification. `reason` is a short English sentence for the log."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class NotSupported(ChannelError):
    """An operation the channel does not offer, such as placing an order with a collecting bank."""


class StatementNotReady(ChannelError):
    """The channel has not generated the statement of a day yet; ask again later."""


@dataclass(frozen=True)
class OrderRequest:
    """An order to place with a channel for one bill."""

    merchant_id: str
    out_trade_no: str
    amount: Decimal
    subject: str
    notify_url: str
    # Echoed back by the channel in queries and notifications; holds our account number.
    attach: str = ""
    expires_at: datetime | None = None
    # Alipay ISV mode: the company's app_auth_token. Never stored in the database.
    auth_token: str | None = None


@dataclass(frozen=True)
class PlacedOrder:
    """The channel's reply to an order: the payment link a QR code carries."""

    out_trade_no: str
    code_url: str


@dataclass(frozen=True)
class ChannelEvent:
    """A verified notification in the channel-neutral form the payments service applies.

    `kind` is "payment" (money received), "refund" (a refund we requested finished),
    "closed" (an unpaid order was closed) or "other" (acknowledged, nothing to apply).
    `refund_status` is "succeeded" or "failed" for a refund event.
    """

    kind: str
    merchant_id: str
    out_trade_no: str
    channel_txn_id: str
    amount: Decimal | None
    notification_id: str = ""
    event_type: str = ""
    occurred_at: datetime | None = None
    out_refund_no: str = ""
    channel_refund_id: str = ""
    refund_status: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TradeState:
    """A channel's answer to an order query. `state` is "pending", "paid", "closed" or "refunded"."""

    out_trade_no: str
    state: str
    channel_txn_id: str | None = None
    amount: Decimal | None = None


@dataclass(frozen=True)
class RefundRequest:
    """A refund of part or all of one paid order. `out_refund_no` makes a retry the same refund."""

    merchant_id: str
    out_trade_no: str
    channel_txn_id: str
    out_refund_no: str
    amount: Decimal
    order_total: Decimal
    reason: str = ""
    notify_url: str = ""
    auth_token: str | None = None


@dataclass(frozen=True)
class RefundResult:
    """The channel's reply to a refund or refund query.

    `status` is "succeeded", "processing" or "failed"; a query also returns "not_found" when
    the channel never received the refund.
    """

    out_refund_no: str
    status: str
    channel_refund_id: str = ""
    message: str = ""


@dataclass(frozen=True)
class NotificationReply:
    """What the HTTP endpoint sends back to the channel."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


class PaymentChannel(abc.ABC):
    """One payment channel: place orders, verify notifications, query, refund and read statements."""

    # Code stored on payments and orders ("wechat", "alipay", "bank").
    code: str

    @abc.abstractmethod
    def create_order(self, order: OrderRequest) -> PlacedOrder:
        """Place an order and return its payment link; raise ChannelError when the channel rejects it."""

    @abc.abstractmethod
    def verify_notification(self, headers, raw_body: bytes, now: float | None = None) -> ChannelEvent:
        """Verify a notification over its raw body and return it as a ChannelEvent.

        Raises NotificationRejected with the reason when the signature, the age or the
        content is invalid.
        """

    @abc.abstractmethod
    def reply(self, accepted: bool, reason: str) -> NotificationReply:
        """Build the reply that tells the channel a notification was taken (or must be sent again)."""

    @abc.abstractmethod
    def query(self, merchant_id: str, out_trade_no: str, auth_token: str | None = None) -> TradeState:
        """Ask the channel for the state of one order."""

    @abc.abstractmethod
    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a paid order; the same `out_refund_no` twice is one refund."""

    @abc.abstractmethod
    def query_refund(self, request: RefundRequest) -> RefundResult:
        """Ask the channel for the state of a refund sent earlier under `request.out_refund_no`."""

    @abc.abstractmethod
    def download_statement(self, merchant_id: str, day: date, auth_token: str | None = None) -> bytes:
        """Download a merchant's statement file of a day (China Standard Time).

        Returns b"" when the channel has no statement because nothing happened that day.
        Raises StatementNotReady while the channel is still generating it.
        """

    @abc.abstractmethod
    def parse_statement(self, data: bytes) -> list[StatementLine]:
        """Read the channel's daily statement file into statement lines."""


def yuan(value):
    """Convert a channel's yuan string to Decimal with two places, or raise ValueError."""
    amount = Decimal(str(value).strip())
    if not amount.is_finite() or amount != amount.quantize(YUAN):
        raise ValueError(f"amount {value!r} is not yuan with at most two decimals")
    return amount.quantize(YUAN)


def fen_to_yuan(fen):
    """Convert int fen to Decimal yuan."""
    return Decimal(int(fen)).scaleb(-2).quantize(YUAN)


def yuan_to_fen(amount):
    """Convert Decimal yuan to int fen, rejecting fractions of a fen."""
    fen = Decimal(amount).scaleb(2)
    if fen != fen.to_integral_value():
        raise ChannelError(f"Amount {amount} has fractions of a fen.")
    return int(fen)


CHINA_TIME = timezone(timedelta(hours=8))


class StatementError(ChannelError):
    """A statement file that cannot be read; the message (a Message of app.i18n) names the line, column and value.

    Statements are read both for an upload page and in the daily Celery task, so the text
    is translated when shown. Column names stay as the channel's file spells them.
    """


def statement_error(source, line_no, column, value, reason):
    """Build a StatementError in the form 「微信支付对账单第 3 行，列「退款金额」，值「x」：reason」.

    `source` is a label marked with N_ and `reason` a Message.
    """
    return StatementError(M_(
        "%(source)s第 %(line)s 行，列「%(column)s」，值「%(value)s」：%(reason)s",
        source=Message(source), line=line_no, column=column, value=str(value)[:40], reason=reason,
    ))


def parse_china_time(text):
    """Read "yyyy-MM-dd HH:mm:ss" in China Standard Time (channels' statements) as an aware datetime."""
    return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TIME)
