"""Cell reading shared by the Excel imports: exact numbers, problem cells, number and date text."""

import io
from datetime import date, datetime
from decimal import Decimal

import openpyxl
import pytest

from app.spreadsheet import (
    BAD_GROUPING,
    DATE_NOT_NUMBER,
    NUMBER_NOT_DATE,
    PERCENT_TEXT,
    CellValueError,
    excel_number,
    first_visible_sheet,
    parse_date,
    parse_number,
    read_sheet,
    visible_text,
)
from app.uploads import open_xlsx


def _read(workbook, sheet_index=0):
    buffer = io.BytesIO()
    workbook.save(buffer)
    opened = open_xlsx(buffer.getvalue(), ValueError)
    try:
        return read_sheet(opened.worksheets[sheet_index], 1000, ValueError)
    finally:
        opened.close()


@pytest.mark.parametrize(
    "stored, expected",
    [
        ("95.320000000000007", Decimal("95.32")),
        ("0.30000000000000004", Decimal("0.3")),
        ("1E-3", Decimal("0.001")),
        ("1234.5678", Decimal("1234.5678")),
        ("100", 100),
        ("8.85E+1", Decimal("88.5")),
    ],
)
def test_excel_number_from_stored_text(stored, expected):
    number = excel_number(stored)
    assert number == expected
    assert type(number) is type(expected)


def test_read_sheet_returns_no_floats():
    workbook = openpyxl.Workbook()
    workbook.active.append([0.1 + 0.2, 95.32, 7, "7"])

    data = _read(workbook)

    assert data.rows[0] == (Decimal("0.3"), Decimal("95.32"), 7, "7")
    assert not any(isinstance(value, float) for value in data.rows[0])


def test_uncached_formula_listed():
    workbook = openpyxl.Workbook()
    workbook.active.append(["名称"])
    workbook.active.append(['=CONCAT("一","站")'])

    data = _read(workbook)

    assert data.rows[1] == (None,)
    problem = data.problems[(2, 0)]
    assert (problem.kind, problem.cell, problem.shown) == ("formula", "A2", '=CONCAT("一","站")')
    assert data.has_content(2)


def test_merged_cells_listed_except_top_left():
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["小区", "房号"])
    for room in (101, 102, 103):
        sheet.append([None, room])
    sheet["A2"] = "海河花园"
    sheet.merge_cells("A2:A4")

    data = _read(workbook)

    assert (2, 0) not in data.problems
    assert [data.problems[(row, 0)].cell for row in (3, 4)] == ["A3", "A4"]
    assert data.problems[(3, 0)].reason()[1] == {"cell": "A3", "range": "A2:A4", "anchor": "A2"}


def test_percent_format_listed():
    workbook = openpyxl.Workbook()
    workbook.active["A1"] = 0.05
    workbook.active["A1"].number_format = "0%"
    workbook.active["B1"] = 5
    workbook.active["B1"].number_format = '0.00"%"'

    data = _read(workbook)

    problem = data.problems[(1, 0)]
    assert (problem.kind, problem.shown) == ("percent", "5%")
    # A quoted % is literal text of the format, not a percentage.
    assert (1, 1) not in data.problems


def test_hidden_sheet_skipped_as_first():
    workbook = openpyxl.Workbook()
    workbook.active.title = "下拉选项"
    workbook.active.sheet_state = "hidden"
    workbook.create_sheet("读数")
    buffer = io.BytesIO()
    workbook.save(buffer)

    opened = open_xlsx(buffer.getvalue(), ValueError)

    assert first_visible_sheet(opened).title == "读数"
    opened.close()


def test_protected_sheet_read():
    workbook = openpyxl.Workbook()
    workbook.active.append(["户号", "88.5"])
    workbook.active.protection.sheet = True
    workbook.active.protection.password = "heatflow"

    assert _read(workbook).rows == [("户号", "88.5")]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1,234.50", Decimal("1234.50")),
        ("１，２３４．５０", Decimal("1234.50")),
        ("(1,234.50)", Decimal("-1234.50")),
        ("-12", Decimal("-12")),
        (" 88.5 ", Decimal("88.5")),
        (Decimal("88.5"), Decimal("88.5")),
        (88, Decimal("88")),
        (95.32, Decimal("95.32")),
        (None, None),
        ("", None),
    ],
)
def test_parse_number_accepts(value, expected):
    assert parse_number(value) == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        ("5%", PERCENT_TEXT),
        ("12,34", BAD_GROUPING),
        ("1,2345.6", BAD_GROUPING),
        ("1.234,50", None),
        ("1e3", None),
        ("NaN", None),
        ("待核实", None),
        (True, None),
        (datetime(2025, 11, 15), DATE_NOT_NUMBER),
    ],
)
def test_parse_number_rejects(value, reason):
    with pytest.raises(CellValueError) as raised:
        parse_number(value)
    assert raised.value.reason_id == reason


@pytest.mark.parametrize(
    "value", ["2025-11-15", "2025/11/15", "2025.11.15", "2025年11月15日", "２０２５年１１月１５日", "2025/11/15 ",
              datetime(2025, 11, 15), date(2025, 11, 15)],
)
def test_parse_date_accepts(value):
    assert parse_date(value) == date(2025, 11, 15)


@pytest.mark.parametrize("value", ["15/11/2025", "2025-02-30", "11月15日", "2025-11-15 08:00"])
def test_parse_date_rejects_text(value):
    with pytest.raises(CellValueError) as raised:
        parse_date(value)
    assert raised.value.reason_id is None


def test_parse_date_rejects_serial_number():
    with pytest.raises(CellValueError) as raised:
        parse_date(45976)
    assert raised.value.reason_id == NUMBER_NOT_DATE
    assert raised.value.params == {"number": "45976"}


def test_visible_text_marks_invisible():
    assert visible_text("TJ\u200b-01\u3000") == "TJ[U+200B]-01[U+3000]"
