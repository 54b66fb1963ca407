"""The relay: publishes stored outbox events to RabbitMQ, at least once, in id order.

Each batch locks its rows, with FOR UPDATE SKIP LOCKED on PostgreSQL so that relays
running side by side take different rows. It publishes them one by one, waits for the
broker's confirm of each, then marks the confirmed ones sent and commits. A crash after a confirm
and before the commit publishes those events again with the same message id; consumers
drop the copy by that id. When a publish fails, the row keeps its place, counts the
attempt and is not tried before `next_attempt_at`; since the relay takes rows in id
order and waits for the first one, a broker outage delays every later event too instead
of reordering them.
"""

import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta, timezone

import sqlalchemy as sa
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
# Errors of a publish that leave the event to a later attempt. amqp raises MessageNacked
# (a plain Exception) on a broker nack, so it is caught by name below.
PUBLISH_ERRORS = (OSError, KombuError, OperationalError, TimeoutError)


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


def relay_batch(url=None, batch_size=BATCH_SIZE):
    """Publish up to `batch_size` pending events; returns a RelayResult. Commits what was confirmed."""
    rows = _pending(batch_size)
    if not rows:
        db.session.rollback()
        return RelayResult()
    now = utcnow()
    first_due = rows[0].next_attempt_at
    if first_due is not None and _aware(first_due) > now:
        db.session.rollback()
        return RelayResult(waiting=True)

    codes = dict(db.session.execute(sa.select(Company.id, Company.code)).all())
    result = RelayResult()
    current = None
    try:
        with connect(url) as connection:
            channel = connection.channel()
            declare_exchanges(channel)
            producer = connection.Producer(channel)
            for row in rows:
                current = row
                code = codes[row.company_id]
                producer.publish(
                    json.dumps(envelope(row, code), ensure_ascii=False),
                    exchange=EVENTS_EXCHANGE, routing_key=routing_key(row.event_type, code),
                    message_id=row.event_id, content_type="application/json", content_encoding="utf-8",
                    delivery_mode=2, retry=False, confirm_timeout=CONFIRM_TIMEOUT_S,
                    headers={"event_type": row.event_type, "schema_version": row.schema_version, "company": code},
                )
                row.published_at = utcnow()
                row.last_error = ""
                result.published += 1
            current = None

    except Exception as error:  # noqa: BLE001  every publish failure is recorded on the row and retried
        if not isinstance(error, PUBLISH_ERRORS) and type(error).__name__ != "MessageNacked":
            db.session.rollback()
            raise
        result.failed = True
        result.error = f"{type(error).__name__}: {error}"[:255]
        if current is not None:
            current.attempts += 1
            current.next_attempt_at = utcnow() + timedelta(seconds=backoff(current.attempts))
            current.last_error = result.error
        logger.warning("Outbox relay stopped after %s events: %s", result.published, result.error)
    db.session.commit()
    return result


def _aware(moment):
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def relay_pending(url=None, batch_size=BATCH_SIZE, max_seconds=30):
    """Publish batches until nothing is pending, a publish fails or `max_seconds` pass; returns the total result."""
    total = RelayResult()
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        result = relay_batch(url, batch_size)
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
    events by id. The relay publishes them in id order with the events still pending.
    """
    statement = sa.update(OutboxEvent).values(
        published_at=None, next_attempt_at=None, attempts=0, replays=OutboxEvent.replays + 1,
    )
    if since is None and not event_ids:
        raise ValueError("replay needs --since or --event-id")
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
