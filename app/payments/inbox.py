"""The notification inbox of the online channels: accept over HTTP, apply in Celery.

The HTTP endpoint verifies a WeChat Pay or Alipay notification (signature, decryption,
replay window), routes it to a company by merchant id and stores the verified event as one
`pending` PaymentNotification row in one INSERT, then replies. A repeated delivery of a
stored notification (same company, channel and delivery key) inserts nothing there. It is
logged as a `duplicate` row of its own, and the channel gets a success reply.

The Celery task `payments.apply_notifications` then applies a company's pending rows in
batches: each row in its own savepoint, the batch in one transaction with one block of
receipt numbers. PostgreSQL hands each pending row to one task only (FOR UPDATE SKIP
LOCKED); SQLite runs the tasks one after another. Rows left pending because the task never
ran (broker down, worker stopped) are applied by the beat sweep `payments.sweep_notifications`.
"""

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import sqlalchemy as sa
from flask import current_app
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.locking import lock_row
from app.integrations.channel import ChannelError, ChannelEvent, NotificationRejected, NotificationReply
from app.payments import channels, withheld
from app.payments.models import AlipayApp, OnlineOrder, PaymentNotification, Refund, WechatMerchant, utcnow
from app.payments.online import (
    NotificationResult, _fill_log, apply_event, check_event, merchant_records, payment_for_transaction, route_event,
    store_notification_log,
)
from app.org.models import Company
from app.payments.services import ReceiptNumberBlock, allocation_rule
from app.rls import ALL_COMPANIES, SET_SETTINGS_SQL, VISIBLE_SETTING, WRITABLE_SETTING, scope_settings
from app.tenancy import SYSTEM_SCOPE, company_scope, scoped
from app.texts import clean_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """Outcome of one notification at the HTTP endpoint: the logged outcome and reason, and its company."""

    accepted: bool
    outcome: str
    reason: str
    company_id: int | None = None


# -- merchant routes cached per process


class MerchantCache:
    """Merchant records by (channel, merchant id), kept `NOTIFICATION_ROUTE_CACHE_S` seconds.

    Only merchants that exist are kept, so a newly configured merchant is found at once.
    A change to WechatMerchant or AlipayApp flushed in this process empties the cache; other
    processes see the change when their entry expires. The apply task routes every row
    again from the database, so an entry that outlived a change makes that row rejected,
    never posted to the wrong company.
    NOTE: the channel already got a success reply for such a row, so finance has to follow
    it up from the notification log.
    """

    def __init__(self):
        self._entries = {}
        self._lock = threading.Lock()

    def lookup(self, channel_code, merchant_id):
        ttl = current_app.config.get("NOTIFICATION_ROUTE_CACHE_S", 0)
        key = (channel_code, merchant_id)
        now = time.monotonic()
        if ttl > 0:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > now:
                return entry[1]
        records = merchant_records(channel_code, merchant_id)
        if ttl > 0 and records:
            with self._lock:
                self._entries[key] = (now + ttl, records)
        return records

    def clear(self):
        with self._lock:
            self._entries.clear()


merchant_cache = MerchantCache()


@orm_event.listens_for(Session, "before_flush")
def _clear_merchant_cache(session, flush_context, instances):
    for row in list(session.new) + list(session.dirty) + list(session.deleted):
        if isinstance(row, (WechatMerchant, AlipayApp)):
            merchant_cache.clear()
            return


# -- accepting over HTTP


def receive_notification(channel_code, headers, raw_body, now=None):
    """Verify, route and store one notification of an online channel; return (Receipt, reply).

    Every outcome is committed here, whatever the caller's transaction held. A verified
    event ends as one `pending` row for the apply task, an `ignored` row (an event type that
    needs nothing), or a `duplicate` row when its delivery key was stored before. Anything
    that fails verification, routing or the field checks is logged `rejected`, and the reply
    makes the channel send it again.
    """
    log = PaymentNotification(channel=channel_code, body_sha256=hashlib.sha256(raw_body).hexdigest(), received_at=utcnow())
    adapter = None
    try:
        adapter = channels.channel_for(channel_code)
        with scoped(SYSTEM_SCOPE):
            event = adapter.verify_notification(headers, raw_body, now=now)
            _fill_log(log, event)
            if event.kind == "other":
                receipt = Receipt(True, "ignored", f"event {event.event_type} is not handled")
            else:
                check_event(event)
                route = route_event(channel_code, event, lookup=merchant_cache.lookup)
                log.company_id = route.company_id
                receipt = None
    except NotificationRejected as error:
        db.session.rollback()
        receipt = Receipt(False, "rejected", error.reason, log.company_id)
    except ChannelError as error:
        # Without keys nothing can be verified. The channel retries a rejected notification,
        # so it is delivered again once the configuration is fixed.
        db.session.rollback()
        logger.error("%s keys could not be loaded: %s", channel_code, error)
        receipt = Receipt(False, "rejected", f"keys could not be loaded: {error}")
    if receipt is None:
        receipt = _store_event(channel_code, event, log)
    else:
        log.outcome = receipt.outcome
        log.reason = receipt.reason[:255]
        store_notification_log(log)
    _log_receipt(channel_code, receipt, log)
    reply = adapter.reply(receipt.accepted, receipt.reason) if adapter else NotificationReply(400, b"fail")
    return receipt, reply


def delivery_key(event):
    """Return the key that identifies a notification within its company and channel.

    Both channels keep a notification's id across their resends (WeChat Pay `id`, Alipay
    `notify_id`). An event without one is keyed by its kind, transaction and event type.
    """
    if event.notification_id:
        return f"id:{event.notification_id}"[:96]
    return f"{event.kind}:{event.channel_txn_id}:{event.event_type}"[:96]


def _store_event(channel_code, event, log):
    """Insert the verified event as a pending row and commit; a stored delivery key logs a duplicate.

    The INSERT itself checks that the order (and refund) is the company's. When it is not,
    the company's row gets no order number and the full event goes to a withheld copy
    without a company (see app/payments/withheld.py), so the company never reads another
    company's numbers, not even while the row is pending.
    """
    key = delivery_key(event)
    payload = event_payload(event)
    values = {
        "company_id": log.company_id, "channel": channel_code, "notification_id": log.notification_id,
        "event_type": log.event_type, "transaction_id": log.transaction_id, "out_trade_no": log.out_trade_no,
        "sub_mchid": log.sub_mchid, "amount": log.amount, "outcome": "pending", "reason": "",
        "body_sha256": log.body_sha256, "received_at": log.received_at, "delivery_key": key,
        "payload": payload,
    }
    values.update({name: None for name in ("online_order_id", "payment_id", "applied_at", "retry_at", "requeued_at", "requeue_reason")})
    values["attempts"] = 0
    values.update({
        "out_refund_no": event.out_refund_no or None, "withheld_payload": withheld.withheld_payload(payload),
        "withheld_reason": withheld.WITHHELD_REASON, "copy_reason": withheld.copy_reason(log.company_id),
    })
    with scoped(company_scope(log.company_id)):
        if db.session.get_bind().dialect.name == "postgresql":
            stored_id = _insert_pipelined(values, log.company_id)
        else:
            stored_id = _insert_sqlite(values)
    if stored_id is not None:
        return Receipt(True, "pending", f"stored as notification {stored_id}", log.company_id)
    reason = f"notification {event.notification_id or key} was already received"
    log.outcome, log.reason = "duplicate", reason[:255]
    if not _company_holds(log.company_id, event):
        log.out_trade_no = None
    store_notification_log(log)
    return Receipt(True, "duplicate", reason, log.company_id)


def _company_holds(company_id, event):
    """Return whether the company has the event's order and, for a refund, its refund; read in the company's scope."""
    order = db.session.scalar(sa.select(OnlineOrder.id).filter_by(company_id=company_id, out_trade_no=event.out_trade_no))
    if order is None:
        return False
    if event.kind != "refund" or not event.out_refund_no:
        return True
    return db.session.scalar(sa.select(Refund.id).filter_by(company_id=company_id, out_refund_no=event.out_refund_no)) is not None


def _insert_sqlite(values):
    """Insert the company's row and, when its order was not found there, the withheld copy, in one transaction."""
    company_row, copy_row = _sqlite_statements()
    stored = db.session.execute(company_row, values).first()
    if stored is None:
        db.session.rollback()
        return None
    if stored.out_trade_no is None:
        db.session.execute(copy_row, values)
    db.session.commit()
    return stored.id


def _typed_text(sql, names):
    table = PaymentNotification.__table__
    types = {name: table.columns[name].type for name in names}
    types["withheld_payload"] = table.columns["payload"].type
    used = [name for name in types if re.search(rf":{name}\b", sql)]
    return sa.text(sql).bindparams(*(sa.bindparam(name, type_=types[name]) for name in used))


def _sqlite_statements():
    # Written as text because SQLAlchemy 2.0 gives the dialects' INSERT ... ON CONFLICT
    # constructs no cache key, so they compiled anew for every notification, which took
    # about half of the endpoint's CPU time. Needs SQLite 3.35+ for RETURNING.
    global _SQLITE_STATEMENTS
    if _SQLITE_STATEMENTS is None:
        names = withheld.column_names()
        company_row, copy_row = withheld.sqlite_insert_sql(db.session.get_bind().dialect)
        _SQLITE_STATEMENTS = (
            _typed_text(company_row, names).columns(id=sa.Integer, out_trade_no=sa.String),
            _typed_text(copy_row, names),
        )
    return _SQLITE_STATEMENTS


_SQLITE_STATEMENTS = None


def _insert_pipelined(values, company_id):
    """Insert a pending row on PostgreSQL and commit it; return its id, or None when its delivery key is stored.

    psycopg's pipeline mode sends `BEGIN`, the tenant settings, the INSERT and `COMMIT` in
    one round trip, where the session took five with the pool's ping. The engine has no
    pre-ping, so a connection the server closed fails here. Such a connection is dropped with
    the rest of the pool, and the INSERT is sent once more on a new connection. That is safe,
    because a row the first attempt committed makes the second insert nothing, and the
    notification is logged as a duplicate.
    """
    engine = notification_engine()
    sql, processors = _pipelined_insert_sql(engine.dialect)
    parameters = {name: processors[name](value) if processors.get(name) else value for name, value in values.items()}
    visible, _ = scope_settings(company_scope(company_id))
    # The withheld copy has no company, which row-level security lets only `*` write. The
    # statement's text writes no company but this one and NULL, and it reads in the company's scope.
    writable = ALL_COMPANIES
    for attempt in (1, 2):
        try:
            connection = engine.raw_connection()
        except psycopg.OperationalError as error:
            # The pool's connect raises the driver's error unwrapped. Wrapped, it makes the endpoint reply 503.
            raise sa.exc.OperationalError("connect", None, error) from error
        try:
            driver = connection.driver_connection
            with driver.pipeline(), driver.cursor() as cursor:
                cursor.execute(SET_SETTINGS_SQL, (VISIBLE_SETTING, visible, WRITABLE_SETTING, writable))
                cursor.execute(sql, parameters)
                driver.commit()
                row = cursor.fetchone()
            return row[0] if row else None
        except psycopg.OperationalError as error:
            lost = driver.broken or driver.closed
            connection.invalidate(error)
            if attempt == 2 or not lost:
                raise sa.exc.OperationalError(sql, parameters, error) from error
            # A server restart ends every pooled connection, not only this one. A new pool
            # makes the second attempt connect anew instead of taking another dead connection.
            engine.dispose()
            logger.warning("Notification insert lost its database connection, sending it again: %s", error)
        finally:
            connection.close()
    return None


def _pipelined_insert_sql(dialect):
    """Return the INSERT as psycopg SQL and the bind processor of each parameter, compiled once."""
    global _PIPELINED_INSERT
    if _PIPELINED_INSERT is None:
        table = PaymentNotification.__table__
        names = withheld.column_names()
        statement = _typed_text(withheld.postgresql_insert_sql(dialect), names).columns(id=sa.Integer)
        compiled = statement.compile(dialect=dialect)
        processors = {column.name: column.type.bind_processor(dialect) for column in table.columns}
        processors["withheld_payload"] = processors["payload"]
        _PIPELINED_INSERT = (str(compiled), processors)
    return _PIPELINED_INSERT


_PIPELINED_INSERT = None


_ENGINE_KEY = "heatflow_notification_engine"
_engine_lock = threading.Lock()


def notification_engine():
    """Return the app's engine for the notification INSERT: `db.engine`'s database and options without pre-ping."""
    app = current_app._get_current_object()
    engine = app.extensions.get(_ENGINE_KEY)
    if engine is not None:
        return engine
    with _engine_lock:
        engine = app.extensions.get(_ENGINE_KEY)
        if engine is None:
            options = {**app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}), "pool_pre_ping": False}
            engine = sa.create_engine(db.engine.url, **options)
            # Disposing the app's engine (tests, forked processes) disposes this one too.
            orm_event.listen(db.engine, "engine_disposed", lambda disposed: engine.dispose())
            app.extensions[_ENGINE_KEY] = engine
    return engine


def _log_receipt(channel_code, receipt, log):
    if receipt.outcome == "rejected":
        logger.warning(
            "%s notification rejected: %s (transaction %s, merchant %s, body sha256 %s)",
            channel_code, receipt.reason, log.transaction_id, log.sub_mchid, log.body_sha256,
        )
    else:
        logger.info("%s notification %s: transaction %s of company %s %s",
                    channel_code, receipt.outcome, log.transaction_id, log.company_id, receipt.reason)


def event_payload(event):
    """Return a verified ChannelEvent as JSON-ready values; the amount as a decimal string."""
    return {
        "kind": event.kind, "merchant_id": event.merchant_id, "out_trade_no": event.out_trade_no,
        "channel_txn_id": event.channel_txn_id, "amount": None if event.amount is None else str(event.amount),
        "notification_id": event.notification_id, "event_type": event.event_type,
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
        "out_refund_no": event.out_refund_no, "channel_refund_id": event.channel_refund_id,
        "refund_status": event.refund_status, "extra": dict(event.extra),
    }


def event_from_payload(payload):
    """Rebuild the ChannelEvent that event_payload stored."""
    values = dict(payload)
    values["amount"] = None if values["amount"] is None else Decimal(values["amount"])
    values["occurred_at"] = datetime.fromisoformat(values["occurred_at"]) if values["occurred_at"] else None
    return ChannelEvent(**values)


# -- asking for the apply task after the commit


class ApplyRequests:
    """Send `payments.apply_notifications` for a company at most twice per window, per process.

    The first accepted notification of a window sends the task at once. Later ones in the
    same window send one task delayed to the window's end, and those after it are covered by
    that delayed task, which runs after their commits. NOTIFICATION_APPLY_WINDOW_S sets the
    window; 0 sends a task for every notification.
    """

    def __init__(self):
        self._sent = {}
        self._lock = threading.Lock()

    def request(self, company_id):
        """Ask for the company's pending rows to be applied; never raises, because the sweep covers a lost request."""
        window = current_app.config.get("NOTIFICATION_APPLY_WINDOW_S", 0)
        now = time.time()
        with self._lock:
            last_sent, delayed_until = self._sent.get(company_id, (0.0, 0.0))
            if now < delayed_until:
                return
            if now - last_sent >= window:
                countdown = None
                self._sent[company_id] = (now, delayed_until)
            else:
                countdown = last_sent + window - now
                self._sent[company_id] = (last_sent, last_sent + window)
        _send_apply_task(company_id, countdown)

    def clear(self):
        with self._lock:
            self._sent.clear()


apply_requests = ApplyRequests()


def _send_apply_task(company_id, countdown):
    from app.tasks.payments import apply_notifications_task

    try:
        apply_notifications_task.apply_async((company_id,), countdown=countdown, retry=False)
    except sa.exc.OperationalError:
        db.session.rollback()
        logger.exception("Applying the notifications of company %s failed; the sweep retries them", company_id)
    except Exception:
        # The broker is down, or an eager task failed: the rows stay pending for the sweep.
        db.session.rollback()
        logger.exception("Could not queue the notifications of company %s; the sweep applies them", company_id)


# -- applying in Celery


@dataclass
class AppliedLinks:
    """Rows an event touched, copied to its PaymentNotification once its savepoint is released."""

    company_id: int
    online_order_id: int | None = None
    payment_id: int | None = None


@dataclass(frozen=True)
class BatchResult:
    """Outcome of one batch: the rows applied and the payments that start e-invoicing."""

    applied: int
    invoice_payment_ids: tuple


def apply_pending(company_id, batch_size=None, max_seconds=None):
    """Apply a company's pending notifications in batches until none is left or `max_seconds` pass.

    Each batch is one transaction, committed before the next starts. Returns the number
    of rows applied, whatever their outcome.
    """
    config = current_app.config
    batch_size = batch_size or config.get("NOTIFICATION_APPLY_BATCH", 50)
    max_seconds = config.get("NOTIFICATION_APPLY_MAX_S", 60) if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    applied = 0
    with scoped(company_scope(company_id, label=f"task:payments.apply_notifications:{company_id}")):
        while True:
            batch = _apply_batch(company_id, batch_size)
            applied += batch.applied
            _start_invoicing(company_id, batch.invoice_payment_ids)
            if batch.applied < batch_size or time.monotonic() >= deadline:
                break
    return applied


def _apply_batch(company_id, batch_size):
    if db.session.get_bind().dialect.name == "sqlite":
        # SQLite ignores FOR UPDATE. A no-op UPDATE takes the database write lock first, so a
        # second task waits for this batch's commit and then reads the rows it left pending.
        db.session.execute(
            sa.update(PaymentNotification)
            .where(PaymentNotification.company_id == company_id, PaymentNotification.outcome == "pending")
            .values(id=PaymentNotification.id)
            .execution_options(synchronize_session=False)
        )
    rows = db.session.scalars(
        sa.select(PaymentNotification)
        .where(PaymentNotification.company_id == company_id, PaymentNotification.outcome == "pending")
        .order_by(PaymentNotification.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        db.session.rollback()
        return BatchResult(0, ())
    receipts = ReceiptNumberBlock(company_id, len(rows))
    batch = BatchReads(company_id)
    invoices = []
    applied = []
    for row in rows:
        result = _apply_row(row, receipts, batch)
        # Read before the commit expires the row, so logging needs no query per row.
        applied.append((AppliedRow.of(row), result))
        if result.issues_e_invoice and row.payment_id is not None:
            invoices.append(row.payment_id)
    receipts.release()
    db.session.commit()
    for row, result in applied:
        _log_applied(row, result)
    return BatchResult(len(rows), tuple(invoices))


class BatchReads:
    """Reads shared by every row of one batch, made once inside the batch's transaction.

    It keeps the merchant records by (channel, merchant id) for routing, the company's
    allocation rule, and a reference to the company row, so the session's identity map
    keeps that row loaded.
    """

    def __init__(self, company_id):
        self.company = db.session.get(Company, company_id)
        self.rule = allocation_rule(company_id)
        self._merchants = {}

    def merchant_records(self, channel_code, merchant_id):
        key = (channel_code, merchant_id)
        if key not in self._merchants:
            self._merchants[key] = merchant_records(channel_code, merchant_id)
        return self._merchants[key]


@dataclass(frozen=True)
class AppliedRow:
    """The fields of an applied row that its log line shows."""

    id: int
    channel: str
    company_id: int
    transaction_id: str | None
    attempts: int
    retry_at: datetime | None

    @classmethod
    def of(cls, row):
        return cls(row.id, row.channel, row.company_id, row.transaction_id, row.attempts, row.retry_at)


def _apply_row(row, receipts, batch):
    """Apply one stored row inside a savepoint and record its outcome on the row."""
    if withheld.is_withheld(row):
        result = _confirm_withheld(row)
        if result is not None:
            return result
    links = AppliedLinks(company_id=row.company_id)
    mark = receipts.mark()
    event = None
    try:
        event = event_from_payload(row.payload)
        with db.session.begin_nested():
            result = apply_event(row.channel, event, links, receipts, lookup=batch.merchant_records, rule=batch.rule)
    except NotificationRejected as error:
        receipts.restore(mark)
        links.payment_id = None
        result = NotificationResult(False, "rejected", error.reason)
    except IntegrityError as error:
        # Another transaction committed a payment of the same transaction id first.
        receipts.restore(mark)
        existing = payment_for_transaction(row.company_id, row.channel, row.transaction_id)
        links.payment_id = existing.id if existing is not None else None
        if existing is not None:
            result = NotificationResult(True, "duplicate", f"transaction already posted as payment {existing.id}")
        else:
            result = NotificationResult(False, "failed", f"integrity error: {error.orig}")
    except sa.exc.OperationalError:
        # A lost connection or a deadlock fails the whole batch, which the task retries.
        raise
    except Exception as error:
        # The savepoint undid everything the event wrote, so the row can be applied again
        # once the cause is fixed: the sweep retries it, or an administrator requeues it.
        receipts.restore(mark)
        logger.exception("Notification %s of company %s could not be applied", row.id, row.company_id)
        links.payment_id = None
        result = NotificationResult(False, "failed", f"{type(error).__name__}: {error}")
    row.outcome = result.outcome
    row.reason = result.reason[:255]
    row.online_order_id = links.online_order_id
    row.payment_id = links.payment_id
    row.applied_at = utcnow()
    if result.outcome == "failed":
        _schedule_retry(row, row.applied_at)
    else:
        row.retry_at = None
    # Rows stored before the endpoint withheld other companies' numbers, and an order or
    # refund that another company created after the endpoint stored the row, end here.
    if result.outcome in ("rejected", "held") and event is not None:
        owner_id = withheld.other_company_of(row.company_id, event)
        if owner_id is not None:
            reason = withheld.hand_to_group(row, event, owner_id)
            row.outcome = "rejected"
            result = NotificationResult(False, "rejected", reason)
    return result


def _confirm_withheld(row):
    """Reject a withheld row whose order or refund another company holds; otherwise put its numbers back.

    Returns the NotificationResult of a rejected row, or None when the row is to be applied
    as usual.
    """
    copies = withheld.withheld_copies(row)
    if not copies:
        row.outcome = "failed"
        row.reason = "the withheld copy of this notification was not found; headquarters has to check it"
        row.applied_at = utcnow()
        row.retry_at = None
        logger.error("%s notification %s of company %s has no withheld copy", row.channel, row.id, row.company_id)
        return NotificationResult(False, "failed", row.reason)
    event = event_from_payload(copies[0].payload)
    owner_id = withheld.other_company_of(row.company_id, event)
    if owner_id is None:
        withheld.restore(row, copies)
        return None
    row.outcome = "rejected"
    row.applied_at = utcnow()
    row.retry_at = None
    with scoped(SYSTEM_SCOPE):
        for extra in copies[1:]:
            db.session.delete(extra)
    reason = withheld.hand_to_group(row, event, owner_id, copy=copies[0])
    return NotificationResult(False, "rejected", reason)


def _schedule_retry(row, now):
    """Count a failed attempt and set when the sweep tries the row again, or None after the last attempt."""
    config = current_app.config
    row.attempts = (row.attempts or 0) + 1
    if row.attempts >= config.get("NOTIFICATION_RETRY_LIMIT", 5):
        row.retry_at = None
        return
    base = config.get("NOTIFICATION_RETRY_BASE_S", 60)
    delay = min(config.get("NOTIFICATION_RETRY_CAP_S", 3600), base * 2 ** (row.attempts - 1))
    row.retry_at = now + timedelta(seconds=delay)


def _log_applied(row, result):
    if result.outcome == "failed" and row.retry_at is None:
        logger.error("%s notification %s of company %s failed %s times, no retry left: %s (transaction %s);"
                     " requeue it with `flask heat notifications requeue %s --reason TEXT` once the cause is fixed",
                     row.channel, row.id, row.company_id, row.attempts, result.reason, row.transaction_id, row.id)
    elif result.outcome == "failed":
        logger.warning("%s notification %s of company %s failed (attempt %s, retried at %s): %s (transaction %s)",
                       row.channel, row.id, row.company_id, row.attempts, row.retry_at.isoformat(), result.reason,
                       row.transaction_id)
    elif result.outcome == "rejected":
        logger.warning("%s notification %s of company %s %s: %s (transaction %s)",
                       row.channel, row.id, row.company_id, result.outcome, result.reason, row.transaction_id)
    else:
        logger.info("%s notification %s of company %s %s: transaction %s %s",
                    row.channel, row.id, row.company_id, result.outcome, row.transaction_id, result.reason)


def _start_invoicing(company_id, payment_ids):
    if not payment_ids:
        return
    from app.invoicing.issuing import payment_posted

    for payment_id in payment_ids:
        payment_posted(payment_id, company_id)


def companies_with_pending(older_than_seconds=0):
    """Return the ids of the companies with notifications pending for longer than `older_than_seconds`."""
    cutoff = utcnow().timestamp() - older_than_seconds
    with scoped(SYSTEM_SCOPE):
        rows = db.session.execute(
            sa.select(PaymentNotification.company_id, sa.func.min(PaymentNotification.received_at))
            .where(PaymentNotification.outcome == "pending")
            .group_by(PaymentNotification.company_id)
        ).all()
        db.session.rollback()
    return [company_id for company_id, oldest in rows if _timestamp(oldest) <= cutoff]


def companies_with_due_retries(now=None):
    """Return the ids of the companies with failed notifications whose `retry_at` has passed."""
    now = now or utcnow()
    with scoped(SYSTEM_SCOPE):
        company_ids = db.session.scalars(
            sa.select(PaymentNotification.company_id)
            .where(PaymentNotification.outcome == "failed", PaymentNotification.retry_at <= now)
            .distinct()
        ).all()
        db.session.rollback()
    return list(company_ids)


def release_due_retries(company_id, now=None):
    """Set a company's failed notifications whose `retry_at` has passed back to pending; return how many."""
    now = now or utcnow()
    with scoped(company_scope(company_id, label=f"task:payments.sweep_notifications:{company_id}")):
        released = db.session.execute(
            sa.update(PaymentNotification)
            .where(
                PaymentNotification.company_id == company_id, PaymentNotification.outcome == "failed",
                PaymentNotification.retry_at <= now,
            )
            .values(outcome="pending", retry_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
    if released:
        logger.info("Set %s failed notifications of company %s back to pending for another attempt", released, company_id)
    return released


# The largest value of PaymentNotification.id, an INTEGER column.
MAX_NOTIFICATION_ID = 2**31 - 1


class RequeueError(ValueError):
    """A notification that cannot be set back to pending; the message names the cause and the fix."""


def requeue_failed(notification_id, reason):
    """Set a failed notification back to pending for the apply task, recording when and why; return the row.

    Only a `failed` row is requeued: its savepoint was rolled back, so applying it again
    posts its payment at most once. Raises RequeueError otherwise or without a reason.
    """
    reason = clean_text(reason)
    if not reason:
        raise RequeueError("A reason is required: say what was fixed, for example --reason \"account restored\".")
    if len(reason) > 255:
        raise RequeueError(f"The reason has {len(reason)} characters; shorten it to at most 255.")
    not_found = f"Notification {notification_id} was not found; list failed ones with `flask heat notifications failed`."
    # PostgreSQL raises "integer out of range" for an id outside the INTEGER primary key.
    if not 1 <= notification_id <= MAX_NOTIFICATION_ID:
        raise RequeueError(not_found)
    with scoped(SYSTEM_SCOPE):
        row = lock_row(PaymentNotification, notification_id)
        if row is None:
            db.session.rollback()
            raise RequeueError(not_found)
        if row.outcome != "failed":
            outcome = row.outcome
            db.session.rollback()
            raise RequeueError(f"Notification {notification_id} is {outcome}, not failed; only a failed notification can be requeued.")
        row.outcome = "pending"
        row.retry_at = None
        row.requeued_at = utcnow()
        row.requeue_reason = reason
        db.session.flush()
        db.session.expunge(row)
        db.session.commit()
    logger.warning("Notification %s of company %s set back to pending by an administrator: %s", row.id, row.company_id, reason)
    return row


def _timestamp(value):
    # SQLite returns the stored UTC wall-clock digits without an offset.
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()
