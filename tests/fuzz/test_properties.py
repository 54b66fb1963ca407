"""hypothesis properties of amount parsing and formatting, the ledger parser and unified account numbers.

Rounding once and payment allocation have their properties in tests/billing
(test_precision.py, test_arrears.py); this file covers the input side.
"""

import io
import string
from decimal import Decimal

import openpyxl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.ledger.parser import TEXT_LIMITS, parse_ledger
from app.money import CENT, MoneyError, ScaledDecimal, format_money, round_money, to_decimal
from app.network.numbering import PARTS, format_account_no, parse_account_no
from app.payments.services import MAX_COUNTER_AMOUNT, PaymentError, parse_amount
from tests.fuzz.conftest import FUZZ_EXAMPLES

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEN_COLUMN = ScaledDecimal(2)
AMOUNTS = st.decimals(min_value=CENT, max_value=MAX_COUNTER_AMOUNT, places=2)


def _grouped(amount):
    """Write an amount with thousands separators, e.g. 1234567.80 → '1,234,567.80'."""
    return f"{amount:,.2f}"


# -- amounts


@FUZZ
@given(amount=AMOUNTS, style=st.sampled_from(["plain", "grouped", "padded", "short"]))
def test_parse_amount_round_trips(amount, style):
    text = {
        "plain": f"{amount:.2f}",
        "grouped": _grouped(amount),
        "padded": f"  {amount:.2f}\t",
        "short": format(amount.normalize(), "f"),
    }[style]

    parsed = parse_amount(text)

    assert parsed == amount
    assert parsed.as_tuple().exponent == -2


@FUZZ
@given(text=st.one_of(st.text(max_size=40), st.from_regex(r"-?[0-9,.]{0,20}(e[0-9]{1,3})?", fullmatch=True)))
def test_parse_amount_rejects_or_returns_storable_fen(text):
    try:
        amount = parse_amount(text)
    except PaymentError as error:
        assert str(error)
        return
    assert CENT <= amount <= MAX_COUNTER_AMOUNT
    assert amount == amount.quantize(CENT)
    assert FEN_COLUMN.process_bind_param(amount, None) == int(amount * 100)


@FUZZ
@given(value=st.one_of(st.floats(allow_nan=True), st.booleans(), st.text(max_size=20), st.none(), st.lists(st.integers())))
def test_to_decimal_raises_only_money_error(value):
    try:
        result = to_decimal(value)
    except MoneyError as error:
        assert str(error)
        return
    assert isinstance(result, Decimal)


@FUZZ
@given(value=st.decimals(min_value=Decimal("-99999999.999"), max_value=Decimal("99999999.999"), places=3))
def test_format_money_shows_the_rounded_amount(value):
    text = format_money(value)

    assert Decimal(text) == round_money(value)
    assert text.rpartition(".")[2].isdigit()
    assert len(text.rpartition(".")[2]) == 2


# -- ledger parser

LEDGER_HEADER = ["原用户编号", "户主姓名", "联系电话", "小区名称", "楼号", "单元", "房号", "建筑面积", "使用面积",
                 "是否有电梯", "用户类型", "供热状态", "往年欠费", "备注"]
# Characters openpyxl can write into a cell (XML 1.0 forbids most control characters).
CELL_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f"), max_size=30,
) | st.sampled_from(["", " ", "合计", "３号楼", "12单元", "101室", "80㎡", "1,234.50", "居民", "报停", "是", "无", "-0", "NaN", "1e3"])
CELL = st.one_of(
    st.none(), CELL_TEXT, st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64), st.booleans(),
)
VALID_ROW = st.fixed_dictionaries({
    "legacy_no": st.one_of(st.none(), st.text(alphabet=string.ascii_uppercase + string.digits, min_size=1, max_size=12)),
    "customer_name": st.text(alphabet="张王李赵刘陈杨黄周吴", max_size=4),
    "community": st.sampled_from(["幸福小区", "和平里", "Garden 1"]),
    "building": st.integers(1, 999),
    "unit": st.integers(1, 99),
    "room": st.integers(1, 9999),
    "building_area": st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999.99"), places=2),
    "user_type": st.sampled_from(["居民", "非居民", "低保"]),
    "billing_status": st.sampled_from(["正常", "报停", "未入网"]),
    "prior_arrears": st.decimals(min_value=Decimal("0"), max_value=Decimal("99999.99"), places=2),
})
CODES = {"居民": "residential", "非居民": "non_residential", "低保": "low_income", "正常": "normal", "报停": "suspended",
         "未入网": "not_connected"}


def _ledger_bytes(rows):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(LEDGER_HEADER)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


@FUZZ
@given(rows=st.lists(st.lists(CELL, min_size=0, max_size=len(LEDGER_HEADER)), min_size=1, max_size=8))
def test_ledger_parser_reports_every_invalid_row(rows):
    parsed = parse_ledger(_ledger_bytes(rows))

    valid_rows = {row.excel_row for row in parsed.rows}
    invalid_rows = {error.excel_row for error in parsed.errors}
    assert not valid_rows & invalid_rows
    assert len(valid_rows) + len(invalid_rows) == parsed.data_rows
    assert all(2 <= number <= len(rows) + 1 for number in valid_rows | invalid_rows)
    for error in parsed.errors:
        assert error.column in LEDGER_HEADER, error
        assert error.reason
        assert f"第 {error.excel_row} 行" in error.message()
    for row in parsed.rows:
        assert row.building_area > 0
        assert row.prior_arrears >= 0
        assert all(len(getattr(row, name) or "") <= limit for name, limit in TEXT_LIMITS.items())


@FUZZ
@given(rows=st.lists(VALID_ROW, min_size=1, max_size=8, unique_by=lambda r: (r["community"], r["building"], r["unit"], r["room"])),
       as_text=st.booleans())
def test_ledger_parser_round_trips_valid_rows(rows, as_text):
    legacy = [row["legacy_no"] for row in rows if row["legacy_no"]]
    assume(len(legacy) == len(set(legacy)))
    cells = [
        [row["legacy_no"], row["customer_name"], None, row["community"], row["building"], row["unit"],
         f"{row['room']}室" if as_text else row["room"],
         f"{row['building_area']}㎡" if as_text else str(row["building_area"]), None, None,
         row["user_type"], row["billing_status"], str(row["prior_arrears"]), None]
        for row in rows
    ]

    parsed = parse_ledger(_ledger_bytes(cells))

    assert parsed.errors == []
    assert len(parsed.rows) == len(rows)
    for expected, got in zip(rows, parsed.rows):
        assert got.legacy_no == expected["legacy_no"]
        assert got.customer_name == expected["customer_name"]
        assert (got.community, got.building, got.unit, got.room) == (
            expected["community"], expected["building"], expected["unit"], expected["room"])
        assert got.building_area == expected["building_area"]
        assert got.user_type == CODES[expected["user_type"]]
        assert got.billing_status == CODES[expected["billing_status"]]
        assert got.prior_arrears == expected["prior_arrears"]


@FUZZ
@given(number=st.text(alphabet=string.digits, min_size=1, max_size=10))
def test_full_width_legacy_number_duplicates(number):
    full_width = "".join(chr(ord(digit) + 0xFEE0) for digit in number)
    rows = [[number, "", None, "幸福小区", 1, 1, 101, "80", None, None, "居民", "正常", None, None],
            [full_width, "", None, "幸福小区", 1, 1, 102, "80", None, None, "居民", "正常", None, None]]

    parsed = parse_ledger(_ledger_bytes(rows))

    assert [row.legacy_no for row in parsed.rows] == [number]
    assert [(error.excel_row, error.column) for error in parsed.errors] == [(3, "原用户编号")]


# -- unified account numbers

ACCOUNT_PARTS = st.tuples(*(st.integers(smallest, 10**digits - 1) for _, digits, smallest in PARTS))


@FUZZ
@given(parts=ACCOUNT_PARTS)
def test_account_number_round_trips(parts):
    company, community, building, unit, room = parts

    number = format_account_no(f"{company:02d}", f"{community:04d}", building, unit, room)

    assert len(number) == 15
    assert number.isdigit()
    assert tuple(vars(parse_account_no(number)).values()) == parts


@FUZZ
@given(first=ACCOUNT_PARTS, second=ACCOUNT_PARTS)
def test_account_numbers_sort_by_address(first, second):
    numbers = [format_account_no(f"{p[0]:02d}", f"{p[1]:04d}", *p[2:]) for p in (first, second)]

    assert (numbers[0] < numbers[1]) == (first < second)
    assert (numbers[0] == numbers[1]) == (first == second)


@FUZZ
@given(text=st.text(max_size=20))
def test_parse_account_number_rejects_with_message(text):
    try:
        parsed = parse_account_no(text)
    except ValueError as error:
        assert "用户编号" in str(error)
        return
    assert str(parsed) == text


@pytest.mark.parametrize(("parts", "part_label"), [
    (("1", "0001", 1, 1, 1), "公司编号"),
    (("11", "0000", 1, 1, 1), "小区编码"),
    (("11", "0001", 1000, 1, 1), "楼号"),
    (("11", "0001", 1, 0, 1), "单元"),
    (("11", "0001", 1, 1, 10000), "房号"),
])
def test_account_number_part_out_of_range(parts, part_label):
    with pytest.raises(ValueError, match=part_label):
        format_account_no(*parts)
