"""The relay: publishes stored outbox events to RabbitMQ, at least once, in id order.

Each batch locks its rows, with FOR UPDATE SKIP LOCKED on PostgreSQL so that relays
running side by side take different rows. It publishes the whole batch on a channel in
confirm mode, waits for the broker's confirms, then marks the confirmed rows sent and
commits. A crash or a lost connection after a confirm and before the commit publishes
those events again with the same message id, and consumers drop the copy by that id.
When events stay unconfirmed, the first of them counts an attempt and is not tried
before `next_attempt_at`. Because the relay takes rows in id order and waits for the
first one, a broker outage delays every later event too instead of reordering them.
"""

import json
import logging
import socket
import time
from dataclasses import dataclass
from datetime import timedelta, timezone

import sqlalchemy as sa
from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError, OperationalError

from app.extensions import db
from app.messaging.broker import CONFIRM_TIMEOUT_S, EVENTS_EXCHANGE, connect, declare_exchanges
from app.messaging.events import envelope, routing_key
from app.messaging.models import OutboxEvent, utcnow
from app.org.models import Company

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
# Retry delay after the n-th failed attempt: 2, 4, 8 ... seconds, at most MAX_BACKOFF_S.
BASE_BACKOFF_S = 2
MAX_BACKOFF_S = 300
# Errors of a publish that leave the event to a later attempt (socket.timeout is a TimeoutError).
PUBLISH_ERRORS = (OSError, KombuError, OperationalError, TimeoutError, AMQPError)


@dataclass
class RelayResult:
    published: int = 0
    failed: bool = False
    waiting: bool = False
    error: str = ""


def backoff(attempts):
    """Seconds to wait after `attempts` failed attempts."""
    return min(BASE_BACKOFF_S * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S)


def _pending(batch_size):
    statement = (
        sa.select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.id)
        .limit(batch_size)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    return db.session.scalars(statement).all()


def relay_batch(url=None, batch_size=BATCH_SIZE, connection=None):
    """Publish up to `batch_size` pending events; returns a RelayResult. Commits what was confirmed.

    Uses `connection` when given (relay_pending keeps one open across batches), else
    opens one to `url` for this batch.
    """
    rows = _pending(batch_size)
    if not rows:
        db.session.rollback()
        return RelayResult()
    first_due = rows[0].next_attempt_at
    if first_due is not None and _aware(first_due) > utcnow():
        db.session.rollback()
        return RelayResult(waiting=True)

    codes = dict(db.session.execute(sa.select(Company.id, Company.code)).all())
    confirms = _Confirms()
    error = None
    try:
        if connection is not None:
            _publish_all(connection, rows, codes, confirms)
        else:
            with connect(url, confirm_each=False) as own:
                _publish_all(own, rows, codes, confirms)
    except Exception as caught:  # noqa: BLE001  every publish failure is recorded on the row and retried
        if not isinstance(caught, PUBLISH_ERRORS):
            db.session.rollback()
            raise
        error = f"{type(caught).__name__}: {caught}"[:255]

    result = RelayResult()
    published_at = utcnow()
    for tag, row in enumerate(rows, start=1):
        if tag in confirms.acked and tag not in confirms.nacked:
            row.published_at = published_at
            row.last_error = ""
            result.published += 1
    unconfirmed = [row for tag, row in enumerate(rows, start=1) if row.published_at is None]
    if unconfirmed:
        # The first event the broker did not confirm waits for its backoff; the relay
        # takes rows in id order, so the later ones wait behind it.
        result.failed = True
        result.error = error or "the broker did not confirm every event (nack or timeout)"
        first = unconfirmed[0]
        first.attempts += 1
        first.next_attempt_at = utcnow() + timedelta(seconds=backoff(first.attempts))
        first.last_error = result.error
        logger.warning("Outbox relay confirmed %s of %s events: %s", result.published, len(rows), result.error)
    db.session.commit()
    return result


class _Confirms:
    """Delivery tags the broker acknowledged or rejected on a channel in confirm mode."""

    def __init__(self):
        self.acked = set()
        self.nacked = set()

    def _record(self, target, delivery_tag, multiple):
        if not multiple:
            target.add(delivery_tag)
            return
        # A multiple confirm settles every tag up to this one that is still open.
        settled = self.acked | self.nacked
        target.update(tag for tag in range(1, delivery_tag + 1) if tag not in settled)

    def on_ack(self, delivery_tag, multiple):
        self._record(self.acked, delivery_tag, multiple)

    def on_nack(self, delivery_tag, multiple):
        self._record(self.nacked, delivery_tag, multiple)

    def settled(self, count):
        return len(self.acked | self.nacked) >= count


def _publish_all(connection, rows, codes, confirms):
    """Publish every row on one channel in confirm mode, then wait for the broker's confirms.

    Publishing the batch first and collecting the confirms afterwards keeps the broker's
    round trip out of each message. Delivery tags count the channel's publishes from 1.
    """
    channel = connection.channel()
    try:
        _publish_on(connection, channel, rows, codes, confirms)
    finally:
        channel.close()


def _publish_on(connection, channel, rows, codes, confirms):
    declare_exchanges(channel)
    channel.confirm_select()
    channel.events["basic_ack"].add(confirms.on_ack)
    channel.events["basic_nack"].add(confirms.on_nack)
    producer = connection.Producer(channel)
    for row in rows:
        code = codes[row.company_id]
        producer.publish(
            json.dumps(envelope(row, code), ensure_ascii=False),
            exchange=EVENTS_EXCHANGE, routing_key=routing_key(row.event_type, code),
            message_id=row.event_id, content_type="application/json", content_encoding="utf-8",
            delivery_mode=2, retry=False,
            headers={"event_type": row.event_type, "schema_version": row.schema_version, "company": code},
        )
    deadline = time.monotonic() + CONFIRM_TIMEOUT_S
    while not confirms.settled(len(rows)):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no confirm for {len(rows) - len(confirms.acked | confirms.nacked)} events within {CONFIRM_TIMEOUT_S} s")
        try:
            connection.drain_events(timeout=remaining)
        except socket.timeout:
            continue


def _aware(moment):
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def relay_pending(url=None, batch_size=BATCH_SIZE, max_seconds=30):
    """Publish batches until nothing is pending, a publish fails or `max_seconds` pass; returns the total result."""
    total = RelayResult()
    deadline = time.monotonic() + max_seconds
    with connect(url, confirm_each=False) as connection:
        _relay_batches(connection, batch_size, deadline, total)
    return total


def _relay_batches(connection, batch_size, deadline, total):
    while time.monotonic() < deadline:
        result = relay_batch(batch_size=batch_size, connection=connection)
        total.published += result.published
        if result.failed or result.waiting:
            total.failed, total.waiting, total.error = result.failed, result.waiting, result.error
            break
        if result.published == 0:
            break
    return total


def mark_for_replay(since=None, event_ids=(), company_id=None, event_type=None):
    """Queue stored events to be published again under their own message ids; returns how many.

    `since` selects events that occurred at or after that time; `event_ids` selects
    events by id, and exactly one of the two is given. The relay publishes them in id
    order with the events still pending.
    """
    statement = sa.update(OutboxEvent).values(
        published_at=None, next_attempt_at=None, attempts=0, replays=OutboxEvent.replays + 1,
    )
    if (since is None) == (not event_ids):
        raise ValueError("replay needs either since or event_ids, not both and not neither")
    if since is not None:
        statement = statement.where(OutboxEvent.occurred_at >= since)
    if event_ids:
        statement = statement.where(OutboxEvent.event_id.in_(list(event_ids)))
    if company_id is not None:
        statement = statement.where(OutboxEvent.company_id == company_id)
    if event_type:
        statement = statement.where(OutboxEvent.event_type == event_type)
    count = db.session.execute(statement.execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    logger.info("Outbox replay queued %s events", count)
    return count
