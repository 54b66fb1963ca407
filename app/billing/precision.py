"""The group's money precision rule, loaded from the Group row into `round_money`."""

import contextlib
import logging
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from app.extensions import db
from app.money import MoneyRule, to_decimal, use_money_rule
from app.org.models import Company, Group

logger = logging.getLogger(__name__)

# Quanta a group may choose, in yuan. Amounts are stored in fen, so nothing finer than 0.01.
MONEY_QUANTA = (Decimal("0.01"), Decimal("0.1"), Decimal("1"))
ROUNDING_MODES = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN}
ROUNDING_LABELS = {"half_up": "四舍五入", "half_even": "银行家舍入（四舍六入五成双）"}


class PrecisionError(ValueError):
    """A group precision rule that the platform cannot apply."""


def build_money_rule(quantum, rounding):
    """Validate a quantum and rounding mode name and return the MoneyRule."""
    quantum = to_decimal(quantum)
    if quantum not in MONEY_QUANTA:
        choices = "、".join(str(q) for q in MONEY_QUANTA)
        raise PrecisionError(f"金额精度 {quantum} 元无效；请选择 {choices} 元之一。")
    if rounding not in ROUNDING_MODES:
        choices = "、".join(f"{code}（{label}）" for code, label in ROUNDING_LABELS.items())
        raise PrecisionError(f"舍入方式「{rounding}」无效；请选择 {choices}。")
    # Stored quanta come back with two places (1.00), and quantize() keeps the exponent it is given.
    return MoneyRule(quantum.normalize(), ROUNDING_MODES[rounding])


def set_group_precision(group, quantum, rounding="half_up"):
    """Store a validated precision rule on `group`. The caller commits."""
    build_money_rule(quantum, rounding)
    group.money_quantum = to_decimal(quantum)
    group.money_rounding = rounding


def money_rule_of_group(group):
    """Return the MoneyRule stored on a Group row."""
    return build_money_rule(group.money_quantum, group.money_rounding)


def money_rule_of_company(company_id):
    """Return the MoneyRule of the group that `company_id` belongs to."""
    group = db.session.scalar(sa.select(Group).join(Company, Company.group_id == Group.id).where(Company.id == company_id))
    if group is None:
        raise PrecisionError(f"公司 {company_id} 不存在或未归属任何集团；请先在集团设置中建立该公司。")
    return money_rule_of_group(group)


@contextlib.contextmanager
def company_money_rule(company_id):
    """Round every amount inside the block by the precision rule of the company's group."""
    with use_money_rule(money_rule_of_company(company_id)) as rule:
        yield rule
