"""Money and quantity arithmetic: Decimal only, one rounding rule, exact storage.

Amounts, areas and rates are stored as scaled integers (fen for money) so that SQLite and
PostgreSQL both keep them exactly and SUM() in SQL is exact on both; SQLite has no decimal
type and would otherwise store them as binary floats.
"""

import contextlib
import contextvars
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import sqlalchemy as sa

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

# Default precision rule: amounts to 0.01 yuan, half up. A group can set a coarser quantum
# (0.1 or 1 yuan) on its Group row, and app/billing/precision.py loads it into `use_money_rule`.
MONEY_QUANTUM = CENT
MONEY_ROUNDING = ROUND_HALF_UP


@dataclass(frozen=True)
class MoneyRule:
    """Precision rule: the step amounts are rounded to, in yuan, and a decimal rounding constant."""

    quantum: Decimal
    rounding: str


DEFAULT_MONEY_RULE = MoneyRule(MONEY_QUANTUM, MONEY_ROUNDING)
_current_money_rule = contextvars.ContextVar("money_rule", default=DEFAULT_MONEY_RULE)


class MoneyError(ValueError):
    """An amount or quantity that cannot be stored exactly."""


def to_decimal(value):
    """Convert an int, str or Decimal to Decimal; floats are rejected."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise MoneyError(f"{value!r} is a {type(value).__name__}; pass amounts as Decimal or str.")
    try:
        return Decimal(value)
    except (InvalidOperation, TypeError, ValueError, OverflowError) as error:
        # A list or tuple that is no (sign, digits, exponent) triple raises ValueError, or
        # OverflowError when an item exceeds a C long.
        raise MoneyError(f"{value!r} is not a number.") from error


def current_money_rule():
    """Return the precision rule of the running request, command or task."""
    return _current_money_rule.get()


def set_money_rule(rule):
    """Set the precision rule for the rest of this context (a request or a task)."""
    _current_money_rule.set(rule)


@contextlib.contextmanager
def use_money_rule(rule):
    """Round by `rule` inside a block, restoring the previous rule after it."""
    token = _current_money_rule.set(rule)
    try:
        yield rule
    finally:
        _current_money_rule.reset(token)


def round_money(value):
    """Round an exact Decimal result once, by the current group's precision rule."""
    rule = _current_money_rule.get()
    return to_decimal(value).quantize(rule.quantum, rounding=rule.rounding)


def plain_decimal(value):
    """Format a Decimal without exponent or trailing zeros, e.g. 40.00 → '40', 0.20 → '0.2'."""
    if value is None:
        return ""
    return format(Decimal(value).normalize(), "f")


def format_quantity(value):
    """Format an area, price or percentage with two decimals, or more where it has them."""
    if value is None:
        return ""
    value = value.normalize()
    if value.as_tuple().exponent > -2:
        value = value.quantize(CENT)
    return f"{value:f}"


def format_money(value):
    """Format an amount as a string with two decimals, e.g. '2183.75'."""
    return f"{round_money(value):.2f}"


class ScaledDecimal(sa.types.TypeDecorator):
    """A Decimal stored as an integer count of 10**-scale units (fen for scale 2)."""

    impl = sa.BigInteger
    cache_ok = True

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.unit = Decimal(1).scaleb(-scale)

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = to_decimal(value)
        units = value.scaleb(self.scale)
        if units != units.to_integral_value():
            raise MoneyError(f"{value} has more than {self.scale} decimal places and cannot be stored exactly.")
        return int(units)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return Decimal(int(value)).scaleb(-self.scale).quantize(self.unit)


def Money():
    """Column type for yuan amounts, stored in fen."""
    return ScaledDecimal(2)


def Area():
    """Column type for areas in m², to 0.0001 m²."""
    return ScaledDecimal(4)


def Rate():
    """Column type for prices, ratios and factors, to 6 decimal places."""
    return ScaledDecimal(6)


_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_SMALL_UNITS = ["", "拾", "佰", "仟"]
_BIG_UNITS = ["", "万", "亿", "万亿"]


def _four_digits(group):
    """Write 0..9999 in capitals, with 零 for inner zeros only."""
    text = ""
    zero_pending = False
    for position in range(3, -1, -1):
        digit = group // 10**position % 10
        if digit == 0:
            zero_pending = bool(text)
            continue
        if zero_pending:
            text += "零"
            zero_pending = False
        text += _DIGITS[digit] + _SMALL_UNITS[position]
    return text


def amount_in_words(amount):
    """Write an amount in Chinese financial capitals, e.g. 2918.25 → 贰仟玖佰壹拾捌元贰角伍分."""
    amount = round_money(amount)
    if amount < 0:
        return "负" + amount_in_words(-amount)
    fen_total = int(amount * 100)
    yuan, fen_part = divmod(fen_total, 100)
    jiao, fen = divmod(fen_part, 10)
    if yuan == 0 and fen_part == 0:
        return "零元整"

    words = ""
    if yuan:
        groups = []
        while yuan:
            yuan, group = divmod(yuan, 10000)
            groups.append(group)
        need_zero = False
        for index in range(len(groups) - 1, -1, -1):
            group = groups[index]
            if group == 0:
                need_zero = bool(words)
                continue
            if words and (need_zero or group < 1000):
                words += "零"
            words += _four_digits(group) + _BIG_UNITS[index]
            need_zero = False
        words += "元"

    if jiao == 0 and fen == 0:
        return words + "整"
    if jiao:
        words += _DIGITS[jiao] + "角"
    elif words:
        words += "零"
    if fen:
        words += _DIGITS[fen] + "分"
    else:
        words += "整"
    return words
