"""Company escalation settings: the values /processes/settings edits per process type.

Each company keeps one EscalationRule row per process type, with the columns listed for
it in RULE_FIELDS. The row is not evaluated itself: app.processes.dmn builds the
"settings rules" of the company's escalation decision table from it, and the table
decides at run time.
"""

from decimal import Decimal

import sqlalchemy as sa

from app.extensions import db
from app.i18n import N_
from app.processes.models import EscalationRule

# Waiver reason categories: code -> Chinese label.
WAIVER_CATEGORIES = {
    "low_income": N_("低保减免"),
    "hardship": N_("困难救助"),
    "temperature_refund": N_("温度退费"),
    "short_supply": N_("少供退费"),
    "late_fee": N_("滞纳金减免"),
    "policy": N_("政策性减免"),
    "other": N_("其他"),
}

# Rule column -> (Chinese label, kind) as the settings page shows it.
RULE_COLUMNS = {
    "escalate_non_residential": (N_("非居民用户一律报集团"), "flag"),
    "escalate_low_income": (N_("低保户一律报集团"), "flag"),
    "area_threshold": (N_("建筑面积超过（㎡）报集团"), "area"),
    "amount_threshold": (N_("金额超过（元）报集团"), "money"),
    "percent_threshold": (N_("超过本季应收的百分比（%）报集团"), "percent"),
    "area_decrease_threshold": (N_("面积减少超过（㎡）报集团"), "area"),
    "area_decrease_percent": (N_("面积减少超过（%）报集团"), "percent"),
    "policy_categories": (N_("政策内的减免类别（其余报集团）"), "categories"),
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
