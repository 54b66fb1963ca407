"""Service operators of the 减免, 强停, 调整面积, 复热 and 入网 processes.

Every operator that posts money writes one ledger line under the key
`<process type>:<instance id>`, so a replayed step finds the line and posts nothing.
Each checks the account again when it runs, because the account may have changed
while the request waited for approval. A ServiceError message is shown to the
approver, who can then reject the request. Its message is a Message (app.i18n), because a
timer may run the operator in a Celery task and the instance history shows the error later
in each reader's language.
"""

import logging
from datetime import date, timedelta
from decimal import Decimal

import sqlalchemy as sa

from app.billing.late_fees import late_fee_receivable
from app.billing.models import LedgerEntry, memo_columns
from app.billing.services import season_receivable
from app.extensions import db
from app.i18n import M_, N_, Message, message_of
from app.invoicing.issuing import reverse_invoiced_excess
from app.money import ZERO, format_money
from app.network.models import BILLING_STATUSES, VALVE_STATES
from app.payments.services import amount_owed
from app.processes.audit import record_event
from app.processes.models import ProcessEvent
from app.processes.definitions import back_charge_amount, connection_amount, reheating_amount, season_charge
from app.processes.access import InputError
from app.processes.registry import (
    ACCOUNT_INPUT, SEAL_NO_INPUT, VALVE_STATE_INPUT, VALVE_STATE_OUTPUT, ServiceError, current_season, instance_account,
    register_service, set_valve_state,
)
from app.tariffs.models import Season

logger = logging.getLogger(__name__)

POSTING_OUTPUTS = {
    "season": N_("记账的供暖季名称"),
    "posted_amount": N_("Decimal：记入台账的行（负数减少应收）"),
    "receivable_after": N_("Decimal：记账后该供暖季的应收（减免滞纳金时为该季滞纳金）"),
}


def _key(context):
    return f"{context.instance.process_type}:{context.instance.id}"


def _posted_line(account, key):
    return db.session.scalar(
        sa.select(LedgerEntry).where(LedgerEntry.company_id == account.company_id, LedgerEntry.idempotency_key == key)
    )


def _replay(account, line):
    """Outputs of a step whose line is already posted."""
    season = db.session.get(Season, line.season_id)
    measure = late_fee_receivable if line.kind == "late_fee_waiver" else season_receivable
    return {"season": season.name, "posted_amount": line.amount, "receivable_after": measure(account.id, season.id)}


def _season(account):
    season = current_season(account.company_id)
    if season is None:
        raise ServiceError(f"Company {account.company_id} has no heating season; set up the season and its tariff first.")
    return season


def _post(context, account, season, kind, amount, task_name, memo, key=None):
    """Post one line for the instance, record a `rebilled` event, and return the operator outputs.

    `key` tells apart several lines of one instance; the default is the instance's own key.
    """
    before = season_receivable(account.id, season.id)
    entry = LedgerEntry(
        company_id=account.company_id, account_id=account.id, season_id=season.id, kind=kind, amount=amount,
        cause_type="process_instance", cause_id=context.instance.id, idempotency_key=key or _key(context),
        **memo_columns(memo), created_by_id=context.user.id if context.user else None,
    )
    db.session.add(entry)
    db.session.flush()
    after = season_receivable(account.id, season.id)
    record_event(
        context.instance, "rebilled", user=context.user, task_name=task_name,
        data={
            "season": season.name, "ledger_entry_id": entry.id, "amount": format_money(amount),
            "receivable_before": format_money(before), "receivable_after": format_money(after),
        },
    )
    logger.info("Process instance %s posted %s %s to account %s for season %s", context.instance.id, kind, amount, account.id, season.name)
    return {"season": season.name, "posted_amount": amount, "receivable_after": after}


# Action of a status-checked operator -> the message naming the account's status that forbids it.
STATUS_ERRORS = {
    "forced_shutoff": N_("账户 %(account)s 当前状态为「%(status)s」，不能强停；请驳回本申请。"),
    "reheating": N_("账户 %(account)s 当前状态为「%(status)s」，不能复热；请驳回本申请。"),
    "back_charge": N_("账户 %(account)s 当前状态为「%(status)s」，不能追补；请驳回本申请。"),
    "connection": N_("账户 %(account)s 当前状态为「%(status)s」，不能入网；请驳回本申请。"),
}


def _require_status(account, allowed, action):
    if account.billing_status not in allowed:
        label = BILLING_STATUSES.get(account.billing_status, account.billing_status)
        raise ServiceError(Message(STATUS_ERRORS[action], account=account.account_no, status=Message(label)))


def _day_in_season(season, day):
    if not isinstance(day, date):
        raise ServiceError(f"The date parameter is {day!r}; the field task must record a date.")
    if not season.start_on <= day <= season.end_on:
        raise ServiceError(M_(
            "日期 %(day)s 不在供暖季 %(season)s（%(start)s 至 %(end)s）之内，请核对现场日期。",
            day=day, season=season.name, start=season.start_on, end=season.end_on,
        ))


# -- 减免 waiver


@register_service(
    "post_waiver",
    inputs={
        "account_id": ACCOUNT_INPUT,
        "amount": N_("Decimal：减免金额（元）"),
        "target": N_("charge（该季采暖费）或 late_fee（该季已记滞纳金）"),
        "season": N_("减免所属供暖季的名称，与发起数据一致"),
    },
    outputs=POSTING_OUTPUTS,
    optional=("target", "season"),
)
def post_waiver(context, account_id, amount, target=None, season=None):
    """Post the approved waiver once per instance: a negative `waiver` line, or `late_fee_waiver` for late fees.

    A diagram deployed before `target` and `season` existed passes neither, so the
    request's `started` event supplies them. A request started before then waives the
    charge of the current season.
    """
    account = instance_account(context, account_id)
    posted = _posted_line(account, _key(context))
    if posted is not None:
        return _replay(account, posted)
    if target is None:
        target, season = _requested_waiver(context.instance)
    amount = Decimal(amount)
    if target == "late_fee":
        return _post_late_fee_waiver(context, account, amount, _named_season(account, season))
    if target != "charge":
        raise ServiceError(f"target={target!r} is invalid; the waiver diagram must pass charge or late_fee.")
    season = _named_season(account, season) if season else _season(account)
    receivable = season_receivable(account.id, season.id)
    if amount <= ZERO or amount > receivable:
        raise ServiceError(M_(
            "减免金额 %(amount)s 元超过该户 %(season)s 当前应收 %(receivable)s 元（申请后应收已变化）；请驳回后按现有应收重新申请。",
            amount=format_money(amount), season=season.name, receivable=format_money(receivable),
        ))
    outputs = _post(context, account, season, "waiver", -amount, "减免入账", M_("减免审批通过（流程 %(instance)s）", instance=context.instance.id))
    # A waiver on a season already paid and invoiced leaves more invoiced than owed: reverse the excess.
    _reverse_excess(context, account, season, outputs["receivable_after"], "charge")
    return outputs




def _requested_waiver(instance):
    """Return (target, season name) of a waiver as its `started` event recorded them, or ("charge", None)."""
    data = db.session.scalar(
        sa.select(ProcessEvent.data).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "started")
    ) or {}
    return data.get("target", "charge"), data.get("season")


def _named_season(account, name):
    season = db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name=name)) if name else None
    if season is None:
        raise ServiceError(f"Season {name!r} of the waiver does not exist in company {account.company_id}; reject the request.")
    return season


def _post_late_fee_waiver(context, account, amount, season):
    """Post a negative `late_fee_waiver` line on the season and record the late fees before and after."""
    before = late_fee_receivable(account.id, season.id)
    if amount <= ZERO or amount > before:
        raise ServiceError(M_(
            "减免金额 %(amount)s 元超过该户 %(season)s 当前滞纳金 %(late_fees)s 元（申请后滞纳金已变化）；请驳回后按现有滞纳金重新申请。",
            amount=format_money(amount), season=season.name, late_fees=format_money(before),
        ))
    entry = LedgerEntry(
        company_id=account.company_id, account_id=account.id, season_id=season.id, kind="late_fee_waiver",
        amount=-amount, cause_type="process_instance", cause_id=context.instance.id, idempotency_key=_key(context),
        **memo_columns(M_("滞纳金减免审批通过（流程 %(instance)s）", instance=context.instance.id)), created_by_id=context.user.id if context.user else None,
    )
    db.session.add(entry)
    db.session.flush()
    after = late_fee_receivable(account.id, season.id)
    record_event(
        context.instance, "rebilled", user=context.user, task_name="减免入账",
        data={
            "season": season.name, "ledger_entry_id": entry.id, "amount": format_money(-amount), "target": "late_fee",
            "late_fee_before": format_money(before), "late_fee_after": format_money(after),
        },
    )
    logger.info("Process instance %s waived late fee %s on account %s for season %s", context.instance.id, amount, account.id, season.name)
    # A waiver of late fees already paid and invoiced leaves more invoiced than owed: reverse the excess.
    _reverse_excess(context, account, season, after, "late_fee")
    return {"season": season.name, "posted_amount": -amount, "receivable_after": after}


def _reverse_excess(context, account, season, owed_after, item):
    """Issue red invoices for what the season's `item` is invoiced beyond `owed_after`, and record them on the request."""
    reds = reverse_invoiced_excess(
        account, season, owed_after, "process_instance", context.instance.id,
        reason=M_("销售折让：减免审批通过（流程 %(instance)s）", instance=context.instance.id), item=item,
    )
    if reds:
        record_event(
            context.instance, "red_invoice", user=context.user, task_name="减免入账",
            data={"invoices": [{"order_no": red.order_no, "amount": format_money(red.amount)} for red in reds]},
        )


# -- 强停 forced shutoff


@register_service(
    "check_arrears",
    inputs={"account_id": ACCOUNT_INPUT},
    outputs={"arrears_paid": N_("bool：该户当前已无欠费"), "arrears_now": N_("Decimal：该户当前欠费")},
)
def check_arrears(context, account_id):
    """Report whether the account still owes anything; a forced shutoff ends as cancelled once it does not."""
    account = instance_account(context, account_id)
    owed = amount_owed(account).total
    if owed <= ZERO:
        reason = N_("该户欠费已结清，强停流程自动取消。")
        record_event(
            context.instance, "cancelled", user=None, task_name="核对欠费", comment=reason,
            data={"message": Message(reason).as_data()},
        )
    return {"arrears_paid": owed <= ZERO, "arrears_now": owed}


@register_service(
    "apply_forced_shutoff",
    inputs={"account_id": ACCOUNT_INPUT, "valve_state": VALVE_STATE_INPUT, "seal_no": SEAL_NO_INPUT},
    outputs={"billing_status": N_("账户的新收费状态"), "valve_state": VALVE_STATE_OUTPUT},
)
def apply_forced_shutoff(context, account_id, valve_state, seal_no):
    """Set the account to 强停 with the closed valve; the season receivable stays as it is."""
    if valve_state not in ("closed", "sealed"):
        raise ServiceError(f"valve_state={valve_state!r} is invalid; the field task must record closed or sealed.")
    if not seal_no:
        raise ServiceError("seal_no is empty; the field task must record the seal number.")
    account = instance_account(context, account_id)
    if account.billing_status != "forced_off":
        _require_status(account, ("normal",), "forced_shutoff")
    account.billing_status = "forced_off"
    set_valve_state(context, account, valve_state)
    record_event(
        context.instance, "status_changed", user=context.user, task_name="登记强停",
        data={"billing_status": "forced_off", "valve_state": valve_state, "valve_label": VALVE_STATES[valve_state], "seal_no": seal_no},
    )
    return {"billing_status": "forced_off", "valve_state": valve_state}


# -- 调整面积 area adjustment


@register_service(
    "apply_area_change",
    inputs={"account_id": ACCOUNT_INPUT, "new_area": N_("Decimal：批准的建筑面积（m²）")},
    outputs=POSTING_OUTPUTS,
)
def apply_area_change(context, account_id, new_area):
    """Set the new building area and post the season charge difference (± line) at the account's status.

    The line is the charge at the new area minus the charge at the old area, both computed
    as the billing run computes them. An account that owes no fee at its status
    (未入网) only gets the new area.
    """
    account = instance_account(context, account_id)
    posted = _posted_line(account, _key(context))
    if posted is not None:
        return _replay(account, posted)
    new_area = Decimal(new_area)
    old_area = account.building_area
    season = current_season(account.company_id)
    old_charge = season_charge(account, season) if season is not None else None
    account.building_area = new_area
    record_event(
        context.instance, "area_changed", user=context.user, task_name="变更建筑面积",
        data={"old_area": f"{old_area.normalize():f}", "new_area": f"{new_area.normalize():f}"},
    )
    if old_charge is None:
        return {"season": season.name if season else "", "posted_amount": ZERO, "receivable_after": ZERO}
    # NOTE: after a mid-season 复热 or 入网 the receivable is prorated, and this full-season
    # difference does not prorate it again.
    difference = season_charge(account, season) - old_charge
    memo = M_(
        "面积由 %(old_area)s ㎡ 调整为 %(new_area)s ㎡（流程 %(instance)s）",
        old_area=format(old_area.normalize(), "f"), new_area=format(new_area.normalize(), "f"), instance=context.instance.id,
    )
    return _post(context, account, season, "rerate", difference, "按新面积重算应收", memo)


# -- 复热 reheating


@register_service(
    "reheat_account",
    inputs={"account_id": ACCOUNT_INPUT, "opened_on": N_("开栓日期，取自现场任务")},
    outputs=POSTING_OUTPUTS,
)
def reheat_account(context, account_id, opened_on):
    """Set the account to 正常 with an open valve and bill the rest of the season by days.

    The line is (full fee − fee at the current status) × days from `opened_on` to the
    season end / statutory days, rounded once (see definitions.reheating_amount).
    """
    account = instance_account(context, account_id)
    posted = _posted_line(account, _key(context))
    if posted is not None:
        return _replay(account, posted)
    _require_status(account, ("suspended", "forced_off"), "reheating")
    season = _season(account)
    _day_in_season(season, opened_on)
    try:
        amount, days = reheating_amount(account, season, opened_on)
    except InputError as error:
        raise ServiceError(message_of(error) or str(error)) from error
    previous = account.billing_status
    account.billing_status = "normal"
    set_valve_state(context, account, "open")
    record_event(
        context.instance, "valve_opened", user=context.user, task_name="登记复热",
        data={"billing_status": "normal", "previous_status": previous, "opened_on": opened_on.isoformat(), "days": days},
    )
    memo = M_(
        "复热：自 %(start)s 起 %(days)s/%(statutory_days)s 天按全额补计（流程 %(instance)s）",
        start=opened_on, days=days, statutory_days=season.statutory_days, instance=context.instance.id,
    )
    return _post(context, account, season, "rerate", amount, "按天补计复热热费", memo)


# -- 稽查追补 back-charge


@register_service(
    "post_back_charge",
    inputs={
        "account_id": ACCOUNT_INPUT, "inspected_on": N_("发现违规的稽查日期"),
        "netting": N_("发起申请时确定的抵扣方式（difference 或 full）；省略时用公司当前的方式"),
    },
    outputs=POSTING_OUTPUTS,
    optional=("netting",),
)
def post_back_charge(context, account_id, inspected_on, netting=None):
    """Post the back-charge up to the inspection day, set the account to 正常 and bill the remaining days.

    Two `rerate` lines, each posted once per instance: the back-charge
    (definitions.back_charge_amount) and the reheating difference from the day after the
    inspection to the season end (definitions.reheating_amount).
    """
    account = instance_account(context, account_id)
    posted = _posted_line(account, _key(context))
    if posted is not None:
        # Both lines and the status change are written in the one transaction of this step.
        return _replay(account, posted)
    _require_status(account, ("suspended", "forced_off"), "back_charge")
    season = _season(account)
    _day_in_season(season, inspected_on)
    try:
        amount, days = back_charge_amount(account, season, inspected_on, netting)
        rest, rest_days = (ZERO, 0)
        if inspected_on < season.end_on:
            rest, rest_days = reheating_amount(account, season, inspected_on + timedelta(days=1))
    except InputError as error:
        raise ServiceError(message_of(error) or str(error)) from error
    memo = M_(
        "稽查追补：%(start)s 至 %(end)s 共 %(days)s/%(statutory_days)s 天（流程 %(instance)s）",
        start=season.start_on, end=inspected_on, days=days, statutory_days=season.statutory_days, instance=context.instance.id,
    )
    result = _post(context, account, season, "rerate", amount, "稽查追补热费", memo)
    previous = account.billing_status
    account.billing_status = "normal"
    set_valve_state(context, account, "open")
    record_event(
        context.instance, "valve_opened", user=context.user, task_name="恢复正常供热",
        data={"billing_status": "normal", "previous_status": previous, "inspected_on": inspected_on.isoformat()},
    )
    if rest > ZERO:
        first_day = inspected_on + timedelta(days=1)
        memo = M_(
            "稽查后恢复供热：%(start)s 起 %(days)s/%(statutory_days)s 天按全额补计（流程 %(instance)s）",
            start=first_day, days=rest_days, statutory_days=season.statutory_days, instance=context.instance.id,
        )
        result = _post(context, account, season, "rerate", rest, "按天补计其余热费", memo, key=f"{_key(context)}:rest")
    return result


# -- 入网 connection


@register_service(
    "connect_account",
    inputs={
        "account_id": ACCOUNT_INPUT,
        "area": N_("Decimal：实测建筑面积（m²）"),
        "connected_on": N_("入网日期，取自现场任务"),
    },
    outputs=POSTING_OUTPUTS,
)
def connect_account(context, account_id, area, connected_on):
    """Set the surveyed area, status 正常 and an open valve, and post the first-season charge from the connection date by days.

    The charge is the full season fee × days from `connected_on` to the season end /
    statutory days, rounded once (see definitions.connection_amount). It is a `charge`
    line, so a later billing run does not charge the season again.
    """
    account = instance_account(context, account_id)
    posted = _posted_line(account, _key(context))
    if posted is not None:
        return _replay(account, posted)
    _require_status(account, ("not_connected",), "connection")
    season = _season(account)
    _day_in_season(season, connected_on)
    account.building_area = Decimal(area)
    try:
        amount, days = connection_amount(account, season, account.building_area, connected_on)
    except InputError as error:
        raise ServiceError(message_of(error) or str(error)) from error
    account.billing_status = "normal"
    set_valve_state(context, account, "open")
    record_event(
        context.instance, "status_changed", user=context.user, task_name="登记入网",
        data={"billing_status": "normal", "connected_on": connected_on.isoformat(), "days": days,
              "area": f"{account.building_area.normalize():f}"},
    )
    memo = M_(
        "入网：自 %(start)s 起 %(days)s/%(statutory_days)s 天（流程 %(instance)s）",
        start=connected_on, days=days, statutory_days=season.statutory_days, instance=context.instance.id,
    )
    return _post(context, account, season, "charge", amount, "按天计收入网当季热费", memo)
