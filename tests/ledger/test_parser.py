"""Normalisation and validation of single ledger cells and rows."""

import io
from decimal import Decimal

import openpyxl
import pytest

from app.ledger.parser import LedgerFileError, normalise_header, normalise_phone, parse_decimal, parse_ledger, parse_ordinal


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("５４７．０７", Decimal("547.07")),
        ("65.46平米", Decimal("65.46")),
        ("56.80㎡", Decimal("56.80")),
        (" 111.64 ", Decimal("111.64")),
        (95.32, Decimal("95.32")),
        (87, Decimal("87")),
        ("1,111.28", Decimal("1111.28")),
    ],
)
def test_parse_decimal_normalises(raw, expected):
    assert parse_decimal(raw) == expected


@pytest.mark.parametrize("raw", ["待核实", "12.3.4", "NaN", "inf", True])
def test_parse_decimal_rejects_text(raw):
    with pytest.raises(ValueError):
        parse_decimal(raw)


@pytest.mark.parametrize(
    "raw, expected", [("3号楼", 3), (15, 15), ("1单元", 1), ("０４", 4), (12.0, 12)]
)
def test_parse_ordinal_strips_units(raw, expected):
    assert parse_ordinal(raw, ("号楼", "单元"), 999) == expected


def test_header_and_phone_normalisation():
    assert normalise_header("建筑面积(㎡)") == "建筑面积"
    assert normalise_header(" 使用面积（㎡） ") == "使用面积"
    assert normalise_phone("+86 185-1163-7265") == "18511637265"


def _workbook(rows):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


HEADER = ["原用户编号", "户主姓名", "小区名称", "楼号", "单元", "房号", "建筑面积", "用户类型", "供热状态"]


def test_title_blank_and_total_rows_skipped():
    content = _workbook(
        [
            ["某公司 2025-2026 台账"],
            HEADER,
            ["A1", "张三", "柳林里", "3号楼", "1单元", "101", "80.00㎡", "住宅", "正常供热"],
            [],
            ["A2", "李四", " 柳林里", 3, 2, "1701", "９０．５", "公建", "停供"],
            ["合计", None, None, None, None, None, 170.5],
        ]
    )

    parsed = parse_ledger(content)

    assert parsed.header_row == 2
    assert parsed.data_rows == 2
    assert parsed.errors == []
    assert [r.excel_row for r in parsed.rows] == [3, 5]
    assert parsed.rows[1].community == "柳林里"
    assert parsed.rows[1].user_type == "non_residential"
    assert parsed.rows[1].billing_status == "suspended"
    assert parsed.rows[1].building_area == Decimal("90.5")


def test_duplicate_dwelling_and_bad_room_reported():
    content = _workbook(
        [
            HEADER,
            ["A1", "张三", "柳林里", 3, 1, "101", 80, "居民", "正常"],
            ["A2", "李四", "柳林里", 3, 1, "101", 80, "居民", "正常"],
            ["A3", "王五", "柳林里", 3, 1, "门市", 80, "居民", "正常"],
        ]
    )

    parsed = parse_ledger(content)

    assert [(e.excel_row, e.column) for e in parsed.errors] == [(3, "房号"), (4, "房号")]


def test_missing_required_column_is_a_file_error():
    content = _workbook([["原用户编号", "小区名称", "楼号", "单元", "房号", "用户类型", "供热状态"], ["A1", "x", 1, 1, 1, "居民", "正常"]])

    with pytest.raises(LedgerFileError, match="建筑面积"):
        parse_ledger(content)


@pytest.mark.parametrize("content", [b"", b"not a workbook", b"PK\x03\x04broken zip"])
def test_non_xlsx_content_is_a_file_error(content):
    with pytest.raises(LedgerFileError):
        parse_ledger(content)


def test_ledger_sheet_found_after_network_sheets():
    workbook = openpyxl.Workbook()
    sources = workbook.active
    sources.title = "热源"
    sources.append(["热源名称", "热源类型"])
    sources.append(["西山燃气锅炉房", "燃气锅炉"])
    ledger = workbook.create_sheet("台账")
    ledger.append(HEADER + ["热源"])
    ledger.append(["A1", "张三", "金顶街", 1, 1, "101", 80, "居民", "正常", "西山燃气锅炉房"])
    buffer = io.BytesIO()
    workbook.save(buffer)

    parsed = parse_ledger(buffer.getvalue())

    assert parsed.sheet == "台账"
    assert len(parsed.rows) == 1
    assert parsed.heat_sources == {"西山燃气锅炉房": "燃气锅炉"}


def test_total_labels_and_float_noise():
    content = _workbook(
        [
            HEADER,
            ["A1", "张三", "柳林里", 3, 1, "101", 95.32000000000001, "居民", "正常"],
            [None, "总计", None, None, None, None, 95.32],
        ]
    )

    parsed = parse_ledger(content)

    assert parsed.errors == []
    assert parsed.data_rows == 1
    assert parsed.rows[0].building_area == Decimal("95.32")


def test_area_with_too_many_places_rejected():
    content = _workbook([HEADER, ["A1", "张三", "柳林里", 3, 1, "101", "80.123456", "居民", "正常"]])

    parsed = parse_ledger(content)

    assert [(e.excel_row, e.column) for e in parsed.errors] == [(2, "建筑面积")]


def test_legacy_number_moved_onto_other_dwelling_rejected(demo):
    from app.ledger.services import import_ledger

    first = _workbook([HEADER, ["A1", "张三", "柳林里", 3, 1, "101", 80, "居民", "正常"], ["A2", "李四", "柳林里", 3, 1, "102", 80, "居民", "正常"]])
    moved = _workbook([HEADER, ["A1", "张三", "柳林里", 3, 1, "102", 80, "居民", "正常"]])

    assert import_ledger(demo["TJ"], first, "first.xlsx").ok
    result = import_ledger(demo["TJ"], moved, "moved.xlsx")

    assert [(e.excel_row, e.column) for e in result.errors] == [(2, "房号")]
