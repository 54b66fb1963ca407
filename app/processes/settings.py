"""The company administrator's settings page data: reading and saving escalation rules, which rebuild the decision tables."""

import logging
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import N_, join_items, translate_label
from app.processes.decisions import save_settings
from app.processes.dmn import DecisionError
from app.processes.escalation import RULE_COLUMNS, RULE_FIELDS, WAIVER_CATEGORIES, ensure_rule, policy_codes
from app.processes.fields import MAX_AREA, MAX_MONEY, MAX_PERCENT
from app.processes.models import PROCESS_TYPES, ProcessOption, TimerSetting
from app.processes.options import PROCESS_OPTIONS
from app.processes.timers import MAX_TIMER_AMOUNT, TIMER_KEYS, UNITS, timer_setting

logger = logging.getLogger(__name__)

# Rule kind -> (decimal places, maximum, unit) of a threshold.
THRESHOLD_RULES = {"money": (2, MAX_MONEY, N_("元")), "area": (2, MAX_AREA, "㎡"), "percent": (2, MAX_PERCENT, "%")}


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
        raise RuleError(_("未知的业务类型「%(value)s」，请从设置页面提交。", value=process_type[:32]))
    values = {}
    for column in RULE_FIELDS[process_type]:
        label, kind = RULE_COLUMNS[column]
        if kind == "flag":
            values[column] = form.get(column) in ("on", "true", "1")
        elif kind == "categories":
            codes = form.getlist(column) if hasattr(form, "getlist") else list(form.get(column) or [])
            unknown = [code for code in codes if code not in WAIVER_CATEGORIES]
            if unknown:
                raise RuleError(_(
                    "%(field)s中有未知类别「%(value)s」；可选：%(choices)s。", field=translate_label(label), value=unknown[0][:32],
                    choices=join_items(translate_label(category) for category in WAIVER_CATEGORIES.values()),
                ))
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
        raise RuleError(_("本公司的%(process)s规则表无法按此设置更新：%(error)s", process=translate_label(rule.type_label), error=error)) from error
    logger.info("User %s set the %s escalation rule of company %s to %s", user.id, process_type, company_id, values)
    return rule


def _threshold(label, kind, raw):
    """Parse a threshold; empty means the rule never escalates on it."""
    text = (raw or "").strip()
    if not text:
        return None
    places, maximum, unit = THRESHOLD_RULES[kind]
    label, unit = translate_label(label), translate_label(unit)
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise RuleError(_("%(field)s「%(value)s」不是有效的数字；留空表示不按此项升级。", field=label, value=text[:20]))
    if number < 0 or number > maximum:
        raise RuleError(_("%(field)s须在 0 到 %(max)s %(unit)s之间，当前为 %(value)s。", field=label, max=maximum, unit=unit, value=text[:20]))
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise RuleError(_("%(field)s「%(value)s」最多 %(places)s 位小数。", field=label, value=text[:20], places=places))
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
            raise RuleError(_("%(field)s「%(value)s」无效：请填写 0 到 %(max)s 的整数。", field=translate_label(spec.label), value=text[:10], max=MAX_TIMER_AMOUNT))
        if unit not in UNITS:
            raise RuleError(_(
                "%(field)s的单位「%(value)s」无效；可选：%(choices)s。", field=translate_label(spec.label), value=unit[:16],
                choices=join_items(translate_label(label) for label in UNITS.values()),
            ))
        if int(text) == 0 and not spec.before_season:
            raise RuleError(_("%(field)s不能为 0，否则待办一生成就会到期；请至少填写 1。", field=translate_label(spec.label)))
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
            raise RuleError(_("%(field)s「%(value)s」无效；可选：%(choices)s。", field=translate_label(spec.label), value=value[:32], choices=join_items(spec.choices)))
        values[key] = value
    for key, value in values.items():
        row = db.session.scalar(sa.select(ProcessOption).where(ProcessOption.company_id == company_id, ProcessOption.option_key == key))
        if row is None:
            row = ProcessOption(company_id=company_id, option_key=key)
            db.session.add(row)
        row.value, row.updated_by_id = value, user.id
    db.session.flush()
    logger.info("User %s set the process options of company %s to %s", user.id, company_id, values)
