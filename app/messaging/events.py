"""Writing outbox events and the JSON envelope they are published in (docs/integrations.md).

`emit` adds the event to the caller's session, so it commits or rolls back together with
the business change. Nothing here talks to the broker; app/messaging/relay.py does.
"""

import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

from app.clock import local_time
from app.extensions import db
from app.messaging.models import OutboxEvent, utcnow

# Event type -> current schema version. A change that drops or renames a field, or changes
# a field's meaning, raises the version; adding a field does not.
EVENT_VERSIONS = {
    "bill.issued": 1,
    "payment.posted": 1,
    "invoice.issued": 1,
    "process.finished": 1,
    "valve.state_changed": 1,
    "voucher.daily": 1,
}
ENVELOPE_SCHEMA = "heatflow.event"


class EventError(ValueError):
    """An event that does not fit the catalogue."""


def _json_default(value):
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return local_time(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not allowed in event data")


def dump_json(value):
    """Serialize event data to JSON text with Decimal as plain strings and times in +08:00; floats are rejected."""
    _reject_floats(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=_json_default)


def _reject_floats(value):
    if isinstance(value, float):
        raise EventError(f"float {value!r} in event data; pass amounts and quantities as Decimal or str")
    if isinstance(value, dict):
        for item in value.values():
            _reject_floats(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _reject_floats(item)


def new_event_id():
    return str(uuid.uuid4())


def emit(company_id, event_type, key, data, occurred_at=None):
    """Add an outbox event to the current session; the caller's commit stores it with its change.

    `key` identifies the change within the company (e.g. the payment id). A second event
    of the same type and key violates the unique key, so one change cannot report twice.
    """
    if event_type not in EVENT_VERSIONS:
        raise EventError(f"unknown event type {event_type!r}; add it to EVENT_VERSIONS and docs/integrations.md")
    event = OutboxEvent(
        company_id=company_id, event_id=new_event_id(), event_type=event_type,
        schema_version=EVENT_VERSIONS[event_type], key=f"{event_type}:{key}", payload=dump_json(data),
        occurred_at=occurred_at or utcnow(),
    )
    db.session.add(event)
    return event


def routing_key(event_type, company_code):
    """Topic routing key of an event, e.g. 'bill.issued.TJ'."""
    return f"{event_type}.{company_code}"


def envelope(event, company_code):
    """Build the message body of a stored event as a dict."""
    occurred = event.occurred_at
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=timezone.utc)
    return {
        "schema": ENVELOPE_SCHEMA,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "version": event.schema_version,
        "company": company_code,
        "sequence": event.id,
        "occurred_at": local_time(occurred).isoformat(),
        "data": json.loads(event.payload),
    }
