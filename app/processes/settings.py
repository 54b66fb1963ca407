"""The company administrator's settings page data: reading and saving escalation rules, which rebuild the decision tables."""

import logging
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from app.extensions import db
from app.processes.decisions import save_settings
from app.processes.dmn import DecisionError
from app.processes.escalation import RULE_COLUMNS, RULE_FIELDS, WAIVER_CATEGORIES, ensure_rule, policy_codes
from app.processes.fields import MAX_AREA, MAX_MONEY, MAX_PERCENT
from app.processes.models import PROCESS_TYPES, ProcessOption, TimerSetting
from app.processes.options import PROCESS_OPTIONS
from app.processes.timers import MAX_TIMER_AMOUNT, TIMER_KEYS, UNITS, timer_setting

logger = logging.getLogger(__name__)

# Rule kind -> (decimal places, maximum, unit) of a threshold.
THRESHOLD_RULES = {"money": (2, MAX_MONEY, "元"), "area": (2, MAX_AREA, "㎡"), "percent": (2, MAX_PERCENT, "%")}


class RuleError(ValueError):
    """A submitted rule value is invalid; the message names the field and the fix."""


def rule_rows(company_id):
    """Return one row per process type, (rule, [(column, label, kind, current value)]), creating missing rules from the defaults."""
    rows = []
    for process_type in PROCESS_TYPES:
        rule = ensure_rule(company_id, process_type)
        columns = []
        for column in RULE_FIELDS[process_type]:
            label, kind = RULE_COLUMNS[column]
            value = policy_codes(rule) if kind == "categories" else getattr(rule, column)
            columns.append((column, label, kind, value))
        rows.append((rule, columns))
    db.session.commit()
    return rows


def save_rule(company_id, process_type, form, user):
    """Validate and store the rule of one process type from the settings form, and the decision table version built from it.

    Returns the rule (not committed).
    """
    if process_type not in PROCESS_TYPES:
        raise RuleError(f"未知的业务类型「{process_type[:32]}」，请从设置页面提交。")
    values = {}
    for column in RULE_FIELDS[process_type]:
        label, kind = RULE_COLUMNS[column]
        if kind == "flag":
            values[column] = form.get(column) in ("on", "true", "1")
        elif kind == "categories":
            codes = form.getlist(column) if hasattr(form, "getlist") else list(form.get(column) or [])
            unknown = [code for code in codes if code not in WAIVER_CATEGORIES]
            if unknown:
                raise RuleError(f"{label}中有未知类别「{unknown[0][:32]}」；可选：{'、'.join(WAIVER_CATEGORIES.values())}。")
            values[column] = ",".join(code for code in WAIVER_CATEGORIES if code in codes)
        else:
            values[column] = _threshold(label, kind, form.get(column))
    rule = ensure_rule(company_id, process_type)
    for column, value in values.items():
        setattr(rule, column, value)
    rule.updated_by_id = user.id
    db.session.flush()
    try:
        save_settings(company_id, rule, user)
    except DecisionError as error:
        raise RuleError(f"本公司的{rule.type_label}规则表无法按此设置更新：{error}") from error
    logger.info("User %s set the %s escalation rule of company %s to %s", user.id, process_type, company_id, values)
    return rule


def _threshold(label, kind, raw):
    """Parse a threshold; empty means the rule never escalates on it."""
    text = (raw or "").strip()
    if not text:
        return None
    places, maximum, unit = THRESHOLD_RULES[kind]
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise RuleError(f"{label}「{text[:20]}」不是有效的数字；留空表示不按此项升级。")
    if number < 0 or number > maximum:
        raise RuleError(f"{label}须在 0 到 {maximum} {unit}之间，当前为 {text[:20]}。")
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise RuleError(f"{label}「{text[:20]}」最多 {places} 位小数。")
    return number


def timer_rows(company_id):
    """Return (key, TimerKey, amount, unit) for every timer key, with the company's values or the defaults."""
    return [(key, spec, *timer_setting(company_id, key)) for key, spec in TIMER_KEYS.items()]


def save_timer_settings(company_id, form, user):
    """Validate and store every timer duration from the settings form (not committed); raises RuleError naming the bad field."""
    values = {}
    for key, spec in TIMER_KEYS.items():
        text = (form.get(f"{key}_amount") or "").strip()
        unit = spec.unit if spec.before_season else (form.get(f"{key}_unit") or "")
        if not text.isdigit() or int(text) > MAX_TIMER_AMOUNT:
            raise RuleError(f"{spec.label}「{text[:10]}」无效：请填写 0 到 {MAX_TIMER_AMOUNT} 的整数。")
        if unit not in UNITS:
            raise RuleError(f"{spec.label}的单位「{unit[:16]}」无效；可选：{'、'.join(UNITS.values())}。")
        if int(text) == 0 and not spec.before_season:
            raise RuleError(f"{spec.label}不能为 0，否则待办一生成就会到期；请至少填写 1。")
        values[key] = (int(text), unit)
    for key, (amount, unit) in values.items():
        row = db.session.scalar(sa.select(TimerSetting).where(TimerSetting.company_id == company_id, TimerSetting.timer_key == key))
        if row is None:
            row = TimerSetting(company_id=company_id, timer_key=key)
            db.session.add(row)
        row.amount, row.unit, row.updated_by_id = amount, unit, user.id
    db.session.flush()
    logger.info("User %s set the timer durations of company %s to %s", user.id, company_id, values)


def save_process_options(company_id, form, user):
    """Validate and store every calculation option from the settings form (not committed); raises RuleError naming the bad value."""
    values = {}
    for key, spec in PROCESS_OPTIONS.items():
        value = (form.get(key) or "").strip()
        if value not in spec.choices:
            raise RuleError(f"{spec.label}「{value[:32]}」无效；可选：{'、'.join(spec.choices)}。")
        values[key] = value
    for key, value in values.items():
        row = db.session.scalar(sa.select(ProcessOption).where(ProcessOption.company_id == company_id, ProcessOption.option_key == key))
        if row is None:
            row = ProcessOption(company_id=company_id, option_key=key)
            db.session.add(row)
        row.value, row.updated_by_id = value, user.id
    db.session.flush()
    logger.info("User %s set the process options of company %s to %s", user.id, company_id, values)
