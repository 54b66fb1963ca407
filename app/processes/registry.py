"""Service-task operators: the named Python functions a diagram may call.

A BPMN service task names an operator with `spiffworkflow:serviceTaskOperator id="..."`
and passes each parameter as a sandboxed expression over task data. The function gets
the RunContext (instance and acting user) and the evaluated parameters, and returns a
dict that is merged into task data. Deploying a diagram that names an operator missing
here, or passes other parameters than `inputs`, is rejected.
"""

import logging
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from app.billing.models import RECEIVABLE_KINDS, LedgerEntry
from app.billing.services import rerate_account, season_receivable
from app.extensions import db
from app.i18n import M_, N_, Message
from app.messaging.events import emit
from app.money import ZERO, format_money
from app.billing.precision import build_money_rule
from app.network.models import BILLING_STATUSES, VALVE_STATES, Account, AccountTerms, Unit
from app.network.valves import VALVE_TASK_FORMS, record_valve_change, utcnow
from app.processes.audit import record_event
from app.org.models import Company, Group
from app.tariffs.models import Season

logger = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A service operator could not do its work. The message states why and what to fix.

    Messages for the approver are Messages (`M_`), so the instance history can show them in
    the reader's language. Configuration errors of a diagram are plain English text, which
    the run failure quotes as its reason.
    """


@dataclass(frozen=True)
class Service:
    """A registered operator: its function and the documented parameters and outputs."""

    name: str
    function: object
    # Parameter or output name -> description, a Chinese msgid marked with N_ that pages show with translate_label.
    inputs: dict
    outputs: dict
    # Inputs a diagram may leave out, so diagrams deployed before the input existed stay valid.
    # The function gives each one a default.
    optional: frozenset = frozenset()


SERVICES = {}

# Descriptions that several services share.
ACCOUNT_INPUT = N_("流程实例所属账户的 id")
VALVE_STATE_INPUT = N_("closed（关栓）或 sealed（施封），取自现场任务")
SEAL_NO_INPUT = N_("现场登记的铅封号")
VALVE_STATE_OUTPUT = N_("账户的新阀门状态")


def register_service(name, inputs, outputs, optional=()):
    """Register a function as the operator `name`; `inputs` and `outputs` map names to descriptions."""

    def decorator(function):
        SERVICES[name] = Service(name=name, function=function, inputs=inputs, outputs=outputs, optional=frozenset(optional))
        return function

    return decorator


def _current_season_statement(*columns):
    """Build a SELECT of `columns` from the company's current season row; binds company_id and today."""
    today = sa.bindparam("today", type_=sa.Date)
    containing = sa.case((sa.and_(Season.start_on <= today, Season.end_on >= today), 0), else_=1)
    return (
        sa.select(*columns).where(Season.company_id == sa.bindparam("company_id"))
        .order_by(containing, Season.start_on.desc()).limit(1)
    )


# Built once, because building and hashing them on every step was a measurable part of its CPU time.
_CURRENT_SEASON = _current_season_statement(Season)
_POSTED_LINE = sa.select(LedgerEntry.id).where(
    LedgerEntry.company_id == sa.bindparam("company_id"), LedgerEntry.idempotency_key == sa.bindparam("key")
).scalar_subquery()
# Correlated with the season row that the outer query picks.
_SEASON_RECEIVABLE = sa.select(sa.func.sum(LedgerEntry.amount)).where(
    LedgerEntry.account_id == sa.bindparam("account_id"), LedgerEntry.season_id == Season.id,
    LedgerEntry.kind.in_(RECEIVABLE_KINDS),
).scalar_subquery()
# The group's money rule and whether the account has dated terms, so that the re-rating
# needs no statement of its own for either.
_GROUP_OF_SEASON = sa.select(Group).join(Company, Company.group_id == Group.id).where(Company.id == Season.company_id)
_MONEY_QUANTUM = _GROUP_OF_SEASON.with_only_columns(Group.money_quantum).scalar_subquery()
_MONEY_ROUNDING = _GROUP_OF_SEASON.with_only_columns(Group.money_rounding).scalar_subquery()
_HAS_TERMS = sa.select(AccountTerms.id).where(AccountTerms.account_id == sa.bindparam("account_id")).exists()
_SEASON_POSTED_LINE_AND_RECEIVABLE = _current_season_statement(
    Season, _POSTED_LINE, _SEASON_RECEIVABLE, _MONEY_QUANTUM, _MONEY_ROUNDING, _HAS_TERMS
)


def current_season(company_id, today=None):
    """Return the company's season containing `today`, else its latest season, or None when it has none."""
    return db.session.scalar(_CURRENT_SEASON, {"company_id": company_id, "today": today or date.today()})


# Re-rating reads the building's lift flag, so unit and building come in the same query.
_LOCKED_ACCOUNT = (
    sa.select(Account)
    .where(Account.id == sa.bindparam("account_id"))
    .options(joinedload(Account.unit).joinedload(Unit.building))
    .with_for_update(of=Account)
)


def instance_account(context, account_id):
    """Return the instance's own account, locked for the update, with its unit and building. The parameter must name it."""
    instance = context.instance
    if account_id != instance.account_id:
        raise ServiceError(f"Parameter account_id={account_id!r} is not the account {instance.account_id} of process instance {instance.id}.")
    account = db.session.scalar(_LOCKED_ACCOUNT, {"account_id": account_id})
    if account is None:
        raise ServiceError(f"Account {account_id} of process instance {instance.id} was not found.")
    context.account = account
    return account


def escalation_outcome(context, result):
    """Reduce an escalation table's result to task data, and record an `escalated` event when a rule escalates.

    `result` holds a list per output under hit policy COLLECT (one item per matched rule)
    and single values under UNIQUE. Reasons of the escalating rules are joined with "；".
    """
    flags = _as_list(result.get("escalate"))
    reasons = _as_list(result.get("escalation_reason"))
    if not any(bool(flag) for flag in flags):
        return {"escalate": False, "escalation_reason": N_("未达到集团审批条件，由分公司审批。")}
    chosen = [str(reason) for flag, reason in zip(flags, reasons) if flag and reason]
    reason = "；".join(chosen) + "。" if chosen else N_("本公司集团审批规则表判定需集团审批。")
    if context is not None and context.instance is not None:
        # The default reason is a msgid; reasons from a company's table are data and shown as stored.
        data = {"message": Message(reason).as_data()} if not chosen else None
        record_event(context.instance, "escalated", user=None, task_name="判断是否需集团审批", comment=reason, data=data)
    return {"escalate": True, "escalation_reason": reason}


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@register_service(
    "rebill_suspension",
    inputs={"account_id": ACCOUNT_INPUT},
    outputs={
        "season": N_("重算的供暖季名称"),
        "rerate_amount": N_("Decimal：记入台账的差额行（负数减少应收）"),
        "receivable_after": N_("Decimal：记账后该供暖季的应收"),
    },
)
def rebill_suspension(context, account_id):
    """Set the account to 报停 and re-rate its current season at the suspension ratio, once per instance."""
    instance = context.instance
    account = instance_account(context, account_id)
    key = f"suspension:{instance.id}"
    season, posted_id, before, money_rule, history = _season_posted_line_and_receivable(account, key)
    if posted_id is not None:
        # A replay of this step: the line is already posted, so report it and post nothing.
        posted = db.session.get(LedgerEntry, posted_id)
        season = db.session.get(Season, posted.season_id)
        return {"season": season.name, "rerate_amount": posted.amount, "receivable_after": season_receivable(account.id, season.id)}

    if season is None:
        raise ServiceError(f"Company {account.company_id} has no heating season; set up the season and its tariff first.")
    if account.billing_status != "normal":
        label = BILLING_STATUSES.get(account.billing_status, account.billing_status)
        raise ServiceError(M_("账户 %(account)s 当前状态为「%(status)s」，只有「正常」状态可以报停；请驳回本申请。", account=account.account_no, status=Message(label)))

    entry = rerate_account(
        account, season, "suspended", "process_instance", instance.id, key=key,
        user_id=context.user.id if context.user else None, memo=M_("报停审批通过（流程 %(instance)s）", instance=instance.id), receivable=before,
        key_checked=True, money_rule=money_rule, history=history,
    )
    # The line is posted under the account lock, so the receivable after it is the sum.
    after = before + entry.amount
    record_event(
        instance, "rebilled", user=context.user, task_name="按报停比例重算应收",
        data={
            "season": season.name, "ledger_entry_id": entry.id, "amount": format_money(entry.amount),
            "receivable_before": format_money(before), "receivable_after": format_money(after),
        },
    )
    logger.info("Process instance %s re-rated account %s for season %s by %s", instance.id, account.id, season.name, entry.amount)
    return {"season": season.name, "rerate_amount": entry.amount, "receivable_after": after}


def _season_posted_line_and_receivable(account, key):
    """Read, in one statement, the current season, the id of the line posted under `key` (or None), the account's receivable of that season, the group's money rule and whether the account has dated terms.

    Returns (season or None, posted id or None, receivable, MoneyRule or None, terms
    history). The receivable is ZERO when the company has no season or the season has no
    lines. The rule is None when the company has no group, so that the re-rating reads it
    and raises the error that names the company. The history is an empty list when the
    account has no dated terms, else None, which makes the re-rating read it. The caller
    holds the account's row lock, so the figures stay true until it commits.
    """
    parameters = {"company_id": account.company_id, "key": key, "account_id": account.id, "today": date.today()}
    row = db.session.execute(_SEASON_POSTED_LINE_AND_RECEIVABLE, parameters).first()
    if row is None:
        return None, db.session.scalar(sa.select(_POSTED_LINE), parameters), ZERO, None, None
    season, posted_id, amount, quantum, rounding, has_terms = row
    money_rule = build_money_rule(quantum, rounding) if quantum is not None else None
    history = None if has_terms else []
    return season, posted_id, amount if amount is not None else ZERO, money_rule, history


def set_valve_state(context, account, valve_state):
    """Set an account's valve state, and when it changes, add it to the valve history and emit `valve.state_changed`.

    The change is credited to the valve field task the user just completed, if any, else
    to the process instance (see app/network/valves.py and docs/integrations.md).
    """
    previous = account.valve_state
    account.valve_state = valve_state
    if previous == valve_state:
        return
    instance = context.instance
    task = getattr(context, "task", None)
    if task is not None and task.form in VALVE_TASK_FORMS:
        cause_type, cause_id = "field_task", task.id
    else:
        cause_type, cause_id = "process_instance", instance.id
    record_valve_change(account, valve_state, utcnow(), cause_type, cause_id,
                        recorded_by_id=context.user.id if context.user else None)
    emit(account.company_id, "valve.state_changed", f"{instance.id}:{account.id}:{valve_state}", {
        "account_id": account.id, "account_no": account.account_no, "previous_state": previous,
        "valve_state": valve_state, "instance_id": instance.id, "process_type": instance.process_type,
    })


@register_service(
    "mark_valve_closed",
    inputs={"account_id": ACCOUNT_INPUT, "valve_state": VALVE_STATE_INPUT, "seal_no": SEAL_NO_INPUT},
    outputs={"valve_state": VALVE_STATE_OUTPUT},
)
def mark_valve_closed(context, account_id, valve_state, seal_no):
    """Record on the account that the field staff closed (and possibly sealed) the valve."""
    if valve_state not in ("closed", "sealed"):
        raise ServiceError(f"valve_state={valve_state!r} is invalid; the field task must record closed or sealed.")
    if not seal_no:
        raise ServiceError("seal_no is empty; the field task must record the seal number.")
    account = instance_account(context, account_id)
    set_valve_state(context, account, valve_state)
    record_event(
        context.instance, "valve_closed", user=context.user, task_name="登记阀门已关",
        data={"valve_state": valve_state, "valve_label": VALVE_STATES[valve_state], "seal_no": seal_no},
    )
    return {"valve_state": valve_state}


# The operators of the other processes register themselves on import. Keep this import
# last because that module uses the helpers above.
from app.processes import operators  # noqa: E402,F401
