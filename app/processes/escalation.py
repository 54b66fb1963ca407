"""Company escalation rules: which requests also need group approval, and why.

Each company keeps one EscalationRule row per process type. A process reads only the
columns listed for it in RULE_FIELDS. Every check that matches adds one Chinese reason,
and any reason sends the request to the group approver.
"""

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from app.extensions import db
from app.network.models import TARIFF_CATEGORY
from app.processes.models import PROCESS_TYPES, EscalationRule

HUNDRED = Decimal(100)

# Waiver reason categories: code -> Chinese label.
WAIVER_CATEGORIES = {
    "low_income": "低保减免",
    "hardship": "困难救助",
    "temperature_refund": "温度退费",
    "short_supply": "少供退费",
    "late_fee": "滞纳金减免",
    "policy": "政策性减免",
    "other": "其他",
}

# Rule column -> (Chinese label, kind) as the settings page shows it.
RULE_COLUMNS = {
    "escalate_non_residential": ("非居民用户一律报集团", "flag"),
    "escalate_low_income": ("低保户一律报集团", "flag"),
    "area_threshold": ("建筑面积超过（㎡）报集团", "area"),
    "amount_threshold": ("金额超过（元）报集团", "money"),
    "percent_threshold": ("超过本季应收的百分比（%）报集团", "percent"),
    "area_decrease_threshold": ("面积减少超过（㎡）报集团", "area"),
    "area_decrease_percent": ("面积减少超过（%）报集团", "percent"),
    "policy_categories": ("政策内的减免类别（其余报集团）", "categories"),
}
# Process type -> the rule columns it evaluates.
RULE_FIELDS = {
    "suspension": ("escalate_non_residential", "escalate_low_income", "area_threshold"),
    "waiver": ("escalate_non_residential", "escalate_low_income", "amount_threshold", "percent_threshold", "policy_categories"),
    "forced_shutoff": ("escalate_non_residential", "escalate_low_income", "amount_threshold"),
    "area_adjustment": ("escalate_non_residential", "area_decrease_threshold", "area_decrease_percent"),
    "reheating": ("escalate_non_residential", "escalate_low_income"),
    "connection": ("escalate_non_residential", "area_threshold"),
    "back_charge": ("escalate_non_residential", "escalate_low_income", "amount_threshold"),
}
# Demo defaults per process type, used when a company has no rule yet. The thresholds are
# a starting configuration for the demo group, not sourced figures.
DEFAULT_RULES = {
    "suspension": {"escalate_non_residential": True, "area_threshold": Decimal("200")},
    "waiver": {
        "escalate_non_residential": False, "amount_threshold": Decimal("1000"), "percent_threshold": Decimal("30"),
        "policy_categories": ",".join(code for code in WAIVER_CATEGORIES if code != "other"),
    },
    "forced_shutoff": {"escalate_non_residential": False, "escalate_low_income": True, "amount_threshold": Decimal("10000")},
    "area_adjustment": {
        "escalate_non_residential": False, "area_decrease_threshold": Decimal("10"), "area_decrease_percent": Decimal("10"),
    },
    "reheating": {"escalate_non_residential": False},
    "connection": {"escalate_non_residential": True, "area_threshold": Decimal("300")},
    "back_charge": {"escalate_non_residential": False, "amount_threshold": Decimal("5000")},
}


@dataclass(frozen=True)
class Facts:
    """The request values a rule compares; each process type fills the ones it has."""

    area: Decimal | None = None
    amount: Decimal | None = None
    receivable: Decimal | None = None
    category: str | None = None
    old_area: Decimal | None = None
    new_area: Decimal | None = None


def rule_for(company_id, process_type):
    """Return the company's rule for a process type, or None."""
    return db.session.scalar(
        sa.select(EscalationRule).where(EscalationRule.company_id == company_id, EscalationRule.process_type == process_type)
    )


def ensure_rule(company_id, process_type):
    """Create a company's rule for a process type from DEFAULT_RULES unless it has one."""
    rule = rule_for(company_id, process_type)
    if rule is None:
        values = {"escalate_non_residential": False, "escalate_low_income": False, **DEFAULT_RULES.get(process_type, {})}
        rule = EscalationRule(company_id=company_id, process_type=process_type, **values)
        db.session.add(rule)
        db.session.flush()
    return rule


def policy_codes(rule):
    """Waiver category codes a rule counts as inside policy."""
    return {code for code in (rule.policy_categories or "").split(",") if code}


def _number(value):
    return f"{value.normalize():f}"


def escalation_reasons(process_type, rule, account, facts):
    """Return the Chinese reasons why a request needs group approval; empty when the company decides alone."""
    if rule is None:
        return []
    columns = RULE_FIELDS[process_type]
    label = PROCESS_TYPES[process_type]
    reasons = []
    if "escalate_non_residential" in columns and rule.escalate_non_residential and TARIFF_CATEGORY[account.user_type] == "non_residential":
        reasons.append(f"非居民用户{label}需集团审批")
    if "escalate_low_income" in columns and rule.escalate_low_income and account.user_type == "low_income":
        reasons.append(f"低保户{label}需集团审批")
    if "area_threshold" in columns and rule.area_threshold is not None and facts.area is not None and facts.area > rule.area_threshold:
        subject = "入网面积" if process_type == "connection" else "建筑面积"
        reasons.append(f"{subject} {_number(facts.area)} ㎡ 超过 {_number(rule.area_threshold)} ㎡，需集团审批")
    if "amount_threshold" in columns and rule.amount_threshold is not None and facts.amount is not None and facts.amount > rule.amount_threshold:
        subject = {"forced_shutoff": "欠费", "back_charge": "追补金额"}.get(process_type, "减免金额")
        reasons.append(f"{subject} {facts.amount:.2f} 元超过 {rule.amount_threshold:.2f} 元，需集团审批")
    if "percent_threshold" in columns:
        reasons.extend(_percent_reasons(rule, facts))
    if "policy_categories" in columns and facts.category is not None and facts.category not in policy_codes(rule):
        category = WAIVER_CATEGORIES.get(facts.category, facts.category)
        reasons.append(f"减免类别「{category}」不在本公司减免政策内，需集团审批")
    if "area_decrease_threshold" in columns or "area_decrease_percent" in columns:
        reasons.extend(_area_decrease_reasons(rule, facts))
    return reasons


def _percent_reasons(rule, facts):
    if rule.percent_threshold is None or facts.amount is None or not facts.receivable:
        return []
    # Compare amount × 100 with receivable × threshold so that nothing is rounded first.
    if facts.amount * HUNDRED <= facts.receivable * rule.percent_threshold:
        return []
    share = (facts.amount * HUNDRED / facts.receivable).quantize(Decimal("0.01"))
    return [f"减免金额占本季应收 {share}%，超过 {_number(rule.percent_threshold)}%，需集团审批"]


def _area_decrease_reasons(rule, facts):
    if facts.old_area is None or facts.new_area is None or facts.new_area >= facts.old_area:
        return []
    decrease = facts.old_area - facts.new_area
    reasons = []
    if rule.area_decrease_threshold is not None and decrease > rule.area_decrease_threshold:
        reasons.append(f"面积减少 {_number(decrease)} ㎡，超过 {_number(rule.area_decrease_threshold)} ㎡，需集团审批")
    if rule.area_decrease_percent is not None and decrease * HUNDRED > facts.old_area * rule.area_decrease_percent:
        share = (decrease * HUNDRED / facts.old_area).quantize(Decimal("0.01"))
        reasons.append(f"面积减少 {share}%，超过 {_number(rule.area_decrease_percent)}%，需集团审批")
    return reasons
