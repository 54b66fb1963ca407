"""Rebuild the valve history of data created before it was kept (`flask heat valve-history-rebuild`).

The process history is the source: every valve closing (登记关栓), forced shutoff,
reheating, back-charge and connection left a process event with its time and user. A
change is credited to the valve field task of the same instance completed at or before
the event, else to the instance. An account whose stored valve state still differs from
the end of its history gets an `import` row with the state it has now. That row takes
effect at the company's first ledger import when the account has no history at all, and
at the time of the rebuild otherwise. Running it again adds nothing.
"""

import json
import logging
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa

from app.extensions import db
from app.ledger.models import LedgerImport
from app.messaging.models import OutboxEvent
from app.network.models import Account
from app.network.valves import SHUT_OFF_STATES, VALVE_EVENT_TYPES, VALVE_TASK_FORMS, ValveChange, record_valve_change, utcnow
from app.org.models import Company
from app.processes.models import HumanTask, ProcessEvent, ProcessInstance

logger = logging.getLogger(__name__)

BASELINE_NOTE = "重建历史时账户已是此阀门状态，更早的变更未记录"


@dataclass
class RebuildResult:
    """Rows one company's rebuild added: changes from the process history and baseline rows."""

    company_code: str
    from_processes: int = 0
    baseline: int = 0


def rebuild_valve_history(company_codes=None, now=None):
    """Rebuild the history of each subsidiary (or of `company_codes`), one commit per company; returns RebuildResults."""
    now = now or utcnow()
    statement = sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)
    if company_codes:
        statement = statement.where(Company.code.in_(company_codes))
    results = []
    for company in db.session.scalars(statement).all():
        result = RebuildResult(company.code)
        baseline_at = _first_import_at(company.id) or now
        result.from_processes = _replay_process_events(company.id, baseline_at)
        result.baseline = _align_with_accounts(company.id, baseline_at, now)
        db.session.commit()
        logger.info("Valve history of %s rebuilt: %s changes from processes, %s baseline rows",
                    company.code, result.from_processes, result.baseline)
        results.append(result)
    return results


def _first_import_at(company_id):
    return db.session.scalar(
        sa.select(sa.func.min(LedgerImport.finished_at)).where(
            LedgerImport.company_id == company_id, LedgerImport.status == "succeeded"
        )
    )


def _state_after(event):
    """Return the valve state a process event left the account in, or None when it did not touch the valve."""
    data = event.data or {}
    if event.event_type == "valve_closed":
        return data.get("valve_state")
    if event.event_type == "valve_opened":
        return "open"
    if data.get("valve_state"):
        return data["valve_state"]
    if data.get("billing_status") == "normal" and "connected_on" in data:
        return "open"
    return None


def _recorded_instances(company_id):
    """Return {(account id, instance id, state)} of the changes already in the history."""
    task_instances = dict(db.session.execute(
        sa.select(HumanTask.id, HumanTask.instance_id).where(HumanTask.company_id == company_id, HumanTask.form.in_(VALVE_TASK_FORMS))
    ).all())
    recorded = set()
    rows = db.session.execute(
        sa.select(ValveChange.account_id, ValveChange.cause_type, ValveChange.cause_id, ValveChange.state)
        .where(ValveChange.company_id == company_id, ValveChange.cause_type != "import")
    )
    for account_id, cause_type, cause_id, state in rows:
        instance_id = task_instances.get(cause_id) if cause_type == "field_task" else cause_id
        recorded.add((account_id, instance_id, state))
    return recorded


def _valve_tasks(company_id):
    """Map instance id -> [(completed_at, task id)] of its completed valve field tasks, oldest first."""
    tasks = defaultdict(list)
    rows = db.session.execute(
        sa.select(HumanTask.instance_id, HumanTask.completed_at, HumanTask.id)
        .where(HumanTask.company_id == company_id, HumanTask.form.in_(VALVE_TASK_FORMS), HumanTask.status == "completed")
        .order_by(HumanTask.completed_at, HumanTask.id)
    )
    for instance_id, completed_at, task_id in rows:
        tasks[instance_id].append((completed_at, task_id))
    return tasks


def _cause(tasks, event):
    """Credit the event to the instance's latest valve task completed by then (used once), else to the instance."""
    candidates = [entry for entry in tasks.get(event.instance_id, []) if entry[0] <= event.at]
    if not candidates:
        return "process_instance", event.instance_id
    tasks[event.instance_id].remove(candidates[-1])
    return "field_task", candidates[-1][1]


def _replay_process_events(company_id, baseline_at):
    recorded = _recorded_instances(company_id)
    tasks = _valve_tasks(company_id)
    events = db.session.execute(
        sa.select(ProcessEvent, ProcessInstance.account_id)
        .join(ProcessInstance, ProcessInstance.id == ProcessEvent.instance_id)
        .where(ProcessEvent.company_id == company_id, ProcessEvent.event_type.in_(VALVE_EVENT_TYPES))
        .order_by(ProcessEvent.at, ProcessEvent.id)
    ).all()
    added = 0
    for event, account_id in events:
        state = _state_after(event)
        if state is None:
            continue
        cause_type, cause_id = _cause(tasks, event)
        if (account_id, event.instance_id, state) in recorded:
            continue
        account = db.session.get(Account, account_id)
        if state == "open":
            added += _baseline_before_opening(account, event, baseline_at)
        change = record_valve_change(account, state, event.at, cause_type, cause_id, recorded_by_id=event.user_id,
                                     skip_unchanged=True)
        if change is not None:
            recorded.add((account_id, event.instance_id, state))
            added += 1
    return added


def _baseline_before_opening(account, event, baseline_at):
    """Write the shut-off state an opening ended when the history has nothing before it; returns rows added.

    The state comes from the `valve.state_changed` outbox event of the same change.
    """
    if baseline_at >= event.at:
        return 0
    earlier = db.session.scalar(
        sa.select(sa.func.count()).select_from(ValveChange)
        .where(ValveChange.company_id == account.company_id, ValveChange.account_id == account.id,
               ValveChange.effective_at <= event.at)
    )
    if earlier:
        return 0
    outbox = db.session.scalar(sa.select(OutboxEvent.payload).where(
        OutboxEvent.company_id == account.company_id,
        OutboxEvent.key == f"valve.state_changed:{event.instance_id}:{account.id}:open",
    ))
    previous = json.loads(outbox).get("previous_state") if outbox else None
    if previous not in SHUT_OFF_STATES:
        return 0
    change = record_valve_change(account, previous, baseline_at, "import", note=BASELINE_NOTE)
    return 1 if change is not None else 0


def _align_with_accounts(company_id, baseline_at, now):
    """Add an `import` row for each account whose valve state differs from the end of its history."""
    current = sa.select(ValveChange.account_id).where(ValveChange.company_id == company_id, ValveChange.ended_at.is_(None))
    last_states = dict(db.session.execute(
        sa.select(ValveChange.account_id, ValveChange.state)
        .where(ValveChange.company_id == company_id, ValveChange.ended_at.is_(None))
    ).all())
    accounts = db.session.scalars(
        sa.select(Account).where(Account.company_id == company_id,
                                 sa.or_(Account.valve_state != "open", Account.id.in_(current)))
    ).all()
    added = 0
    for account in accounts:
        last = last_states.get(account.id)
        if last == account.valve_state or (last is None and account.valve_state == "open"):
            continue
        at = baseline_at if last is None else now
        if record_valve_change(account, account.valve_state, at, "import", note=BASELINE_NOTE) is not None:
            added += 1
    return added
