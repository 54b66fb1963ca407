"""Rounding, exact storage and amounts in Chinese capitals."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.money import MoneyError, ScaledDecimal, amount_in_words, round_money


@pytest.mark.parametrize(
    "amount, words",
    [
        ("2918.25", "贰仟玖佰壹拾捌元贰角伍分"),
        ("0.00", "零元整"),
        ("0.05", "伍分"),
        ("10.00", "壹拾元整"),
        ("1001.01", "壹仟零壹元零壹分"),
        ("10010000.00", "壹仟零壹万元整"),
        ("20.30", "贰拾元叁角整"),
        ("105000000.00", "壹亿零伍佰万元整"),
        ("2183.75", "贰仟壹佰捌拾叁元柒角伍分"),
    ],
)
def test_amount_in_words(amount, words):
    assert amount_in_words(Decimal(amount)) == words


def test_round_money_half_up_once():
    assert round_money(Decimal("2101.475")) == Decimal("2101.48")
    assert round_money(Decimal("1808.845")) == Decimal("1808.85")
    assert round_money(Decimal("-0.005")) == Decimal("-0.01")


def test_float_is_rejected():
    with pytest.raises(MoneyError):
        round_money(0.1)


def test_scaled_decimal_refuses_extra_places():
    column = ScaledDecimal(2)

    with pytest.raises(MoneyError):
        column.process_bind_param(Decimal("1.005"), None)


@given(st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"), places=2))
def test_scaled_decimal_round_trip(value):
    column = ScaledDecimal(2)

    stored = column.process_bind_param(value, None)

    assert isinstance(stored, int)
    assert column.process_result_value(stored, None) == value


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_amount_in_words_uses_only_capitals(fen):
    words = amount_in_words(Decimal(fen).scaleb(-2))

    assert set(words) <= set("零壹贰叁肆伍陆柒捌玖拾佰仟万亿元角分整")
    assert words.endswith(("整", "分"))
