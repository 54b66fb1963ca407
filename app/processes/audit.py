"""The per-instance audit trail: appending hash-chained events and verifying the chain.

Each event's hash is sha256 over the previous event's hash followed by the canonical
JSON of the event: sorted keys, no spaces, UTF-8, timestamps as naive UTC ISO strings.
Editing, deleting or reordering a stored event therefore breaks the chain from that
entry on. Callers append while holding the instance row lock, which keeps `seq` gapless.
The instance row stores the chain's head (`audit_seq`, `audit_hash`), so appending needs
no query, and a chain cut short at its end no longer matches the head.

Events wait in the session until the transaction commits, or until a query reads
process events, and then go to the database in one batched INSERT together with the new
head. A rollback discards them with the rest of the step.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timezone

import sqlalchemy as sa
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session

from app.extensions import db
from app.processes.models import GENESIS_HASH, SYSTEM_ACTOR, ProcessEvent, ProcessInstance, utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainReport:
    """Outcome of verifying one instance's chain; `bad_seq` is the first broken entry and `reason` what is wrong with it."""

    ok: bool
    events: int
    bad_seq: int | None = None
    message: str = ""
    reason: str = ""


def _utc_text(moment):
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


def canonical_json(event):
    """Return the canonical JSON text of an event's content, the input of its hash."""
    content = {
        "company_id": event.company_id,
        "instance_id": event.instance_id,
        "seq": event.seq,
        "event_type": event.event_type,
        "user_id": event.user_id,
        "actor_name": event.actor_name or "",
        "at": _utc_text(event.at),
        "task_name": event.task_name or "",
        "decision": event.decision,
        "comment": event.comment or "",
        "data": event.data or {},
    }
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def compute_hash(prev_hash, event):
    """sha256 hex of the previous hash followed by the event's canonical JSON."""
    return hashlib.sha256((prev_hash + canonical_json(event)).encode("utf-8")).hexdigest()


# Session.info key: {instance: [events not yet added to the session, in chain order]}.
PENDING_KEY = "heatflow.audit_events"


def record_event(instance, event_type, user=None, task_name="", decision=None, comment="", data=None):
    """Append one event to an instance's chain; the caller holds the instance row lock.

    The event is written when the transaction commits (see the module notes).
    """
    pending = db.session.info.setdefault(PENDING_KEY, {})
    waiting = pending.setdefault(instance, [])
    if waiting:
        seq, prev_hash = waiting[-1].seq + 1, waiting[-1].hash
    elif instance.audit_seq:
        seq, prev_hash = instance.audit_seq + 1, instance.audit_hash
    else:
        # A new instance whose column defaults are not applied yet has no events.
        seq, prev_hash = 1, GENESIS_HASH
    event = ProcessEvent(
        company_id=instance.company_id,
        instance_id=instance.id,
        seq=seq,
        event_type=event_type,
        user_id=user.id if user is not None else None,
        actor_name=user.name if user is not None else SYSTEM_ACTOR,
        at=utcnow(),
        task_name=task_name or "",
        decision=decision,
        comment=comment or "",
        data=data or {},
        prev_hash=prev_hash,
    )
    event.hash = compute_hash(prev_hash, event)
    waiting.append(event)
    return event


def add_pending_events(session):
    """Add the session's waiting events and set each instance's head, so that the next flush writes them."""
    pending = session.info.pop(PENDING_KEY, None)
    for instance, events in (pending or {}).items():
        if not events:
            continue
        session.add_all(events)
        instance.audit_seq = events[-1].seq
        instance.audit_hash = events[-1].hash


@orm_event.listens_for(Session, "before_commit")
def _add_before_commit(session):
    add_pending_events(session)


@orm_event.listens_for(Session, "do_orm_execute")
def _add_before_reading_events(execute_state):
    if PENDING_KEY in execute_state.session.info and any(
        mapper.class_ is ProcessEvent for mapper in execute_state.all_mappers
    ):
        add_pending_events(execute_state.session)


@orm_event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session, previous_transaction):
    session.info.pop(PENDING_KEY, None)


def verify_chain(instance_id):
    """Recompute an instance's chain from its stored events and report the first mismatch.

    An instance without events is broken at entry 1, because starting one always records
    an event. A chain whose last entry is not the head stored on the instance row lost its
    newest entries, and is broken at the first missing one.
    """
    events = db.session.scalars(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance_id).order_by(ProcessEvent.seq)
    ).all()
    if not events:
        return _broken(instance_id, 0, 1, "entry 1 is missing")
    prev_hash = GENESIS_HASH
    for expected_seq, event in enumerate(events, start=1):
        if event.seq != expected_seq:
            return _broken(instance_id, len(events), event.seq, f"entry {expected_seq} is missing")
        if event.prev_hash != prev_hash:
            return _broken(instance_id, len(events), event.seq, "its prev_hash does not match the previous entry")
        if compute_hash(prev_hash, event) != event.hash:
            return _broken(instance_id, len(events), event.seq, "its content does not match its hash")
        prev_hash = event.hash
    head = db.session.execute(
        sa.select(ProcessInstance.audit_seq, ProcessInstance.audit_hash).where(ProcessInstance.id == instance_id)
    ).first()
    last = len(events)
    head_seq, head_hash = head if head is not None else (last, prev_hash)
    if head_seq > last:
        return _broken(instance_id, last, last + 1, f"entries {last + 1} to {head_seq} are missing")
    if head_seq != last or head_hash != prev_hash:
        return _broken(instance_id, last, last, f"the instance records entry {head_seq} as the newest, with another hash")
    return ChainReport(ok=True, events=last)


@dataclass(frozen=True)
class AuditResult:
    """Outcome of verifying many instances: counts and (instance id, report) per broken chain."""

    instances: int
    events: int
    broken: list


def verify_all_chains(company_id=None):
    """Verify the chain of every instance visible to the current scope, or of one company's instances."""
    statement = sa.select(ProcessInstance.id).order_by(ProcessInstance.id)
    if company_id is not None:
        statement = statement.where(ProcessInstance.company_id == company_id)
    instance_ids = db.session.scalars(statement).all()
    events = 0
    broken = []
    for instance_id in instance_ids:
        report = verify_chain(instance_id)
        events += report.events
        if not report.ok:
            broken.append((instance_id, report))
    return AuditResult(instances=len(instance_ids), events=events, broken=broken)


def _broken(instance_id, count, seq, reason):
    message = f"Audit chain of process instance {instance_id} is broken at entry {seq}: {reason}."
    logger.warning("%s", message)
    return ChainReport(ok=False, events=count, bad_seq=seq, message=message, reason=reason)
