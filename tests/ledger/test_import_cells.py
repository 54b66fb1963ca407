"""Ledger cells read by the shared cell reader: other sheets' formulas, hidden and protected
sheets, merged cells, percentages, number text and exact decimals."""

import io
from decimal import Decimal

import openpyxl
import sqlalchemy as sa

from app.extensions import db
from app.ledger.services import import_ledger
from app.network.models import Account
from tests.ledger.test_import import TJ_HEADER

NEW_ROW = ["TJ-9900001", "新用户甲", "13900000001", "海河花园", "6号楼", 2, "901", "88.5", "居民", "正常",
           "津南一站", "津南热电厂", None, None]


def _row(legacy_no="TJ-9900001", room="901", **cells):
    row = list(NEW_ROW)
    row[0], row[TJ_HEADER.index("房号")] = legacy_no, room
    for header, value in cells.items():
        row[TJ_HEADER.index(header)] = value
    return row


def _save(workbook):
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _ledger(*rows):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "台账"
    sheet.append(TJ_HEADER)
    for row in rows:
        sheet.append(row)
    return workbook


def _accounts(*legacy_numbers):
    return db.session.scalars(sa.select(Account).where(Account.legacy_no.in_(legacy_numbers))).all()


def _errors(result):
    return [(e.excel_row, e.column, e.value) for e in result.errors]


def test_station_sheet_formula_reported(demo):
    workbook = _ledger(_row())
    stations = workbook.create_sheet("换热站")
    stations.append(["换热站名称", "热源名称"])
    stations.append(["津南一站", "津南热电厂"])
    stations.append(['=CONCAT("津南","二站")', "津南热电厂"])

    result = import_ledger(demo["TJ"], _save(workbook), "stations.xlsx")

    assert not result.ok
    assert _errors(result) == [(3, "换热站!换热站名称", '=CONCAT("津南","二站")')]
    assert result.errors[0].reason.startswith('公式 =CONCAT("津南","二站") 没有保存计算结果')
    assert _accounts("TJ-9900001") == []


def test_heat_source_sheet_formula_and_invisible_reported(demo):
    workbook = _ledger(_row())
    sources = workbook.create_sheet("热源")
    sources.append(["热源名称", "热源类型"])
    sources.append(["津南热电厂", "=B3"])
    sources.append(["津南\u200b燃气锅炉房", "燃气锅炉"])

    result = import_ledger(demo["TJ"], _save(workbook), "sources.xlsx")

    assert _errors(result) == [(2, "热源!热源类型", "=B3"), (3, "热源!热源名称", "津南[U+200B]燃气锅炉房")]
    assert "U+200B ZERO WIDTH SPACE" in result.errors[1].reason


def test_hidden_ledger_sheet_rejected(demo):
    workbook = _ledger(_row())
    workbook.active.sheet_state = "hidden"
    workbook.create_sheet("说明").append(["本表由营业厅导出"])

    result = import_ledger(demo["TJ"], _save(workbook), "hidden.xlsx")

    assert "工作表「台账」是隐藏的" in str(result.file_error)
    assert _accounts("TJ-9900001") == []


def test_hidden_unrelated_sheet_ignored(demo):
    workbook = _ledger(_row())
    options = workbook.create_sheet("下拉选项")
    options.append(["居民", "非居民"])
    options.sheet_state = "veryHidden"

    result = import_ledger(demo["TJ"], _save(workbook), "dropdowns.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    assert len(_accounts("TJ-9900001")) == 1


def test_protected_ledger_sheet_imported(demo):
    workbook = _ledger(_row())
    workbook.active.protection.sheet = True
    workbook.active.protection.password = "tj2025"

    result = import_ledger(demo["TJ"], _save(workbook), "protected.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    assert len(_accounts("TJ-9900001")) == 1


def test_merged_community_reported_per_row(demo):
    workbook = _ledger(_row(), _row("TJ-9900002", "902", 小区名称=None), _row("TJ-9900003", "903", 小区名称=None))
    workbook.active.merge_cells("D2:D4")

    result = import_ledger(demo["TJ"], _save(workbook), "merged.xlsx")

    assert _errors(result) == [(3, "小区名称", ""), (4, "小区名称", "")]
    assert result.errors[0].reason == (
        "单元格 D3 在合并单元格 D2:D4 中，合并后只有左上角的 D2 有值，这里读出来是空的；请取消合并，在每一行填上该值后重新上传"
    )
    assert _accounts("TJ-9900001", "TJ-9900002", "TJ-9900003") == []


def test_percent_formatted_area_rejected(demo):
    workbook = _ledger(_row(建筑面积=0.885))
    workbook.active["H2"].number_format = "0.0%"

    result = import_ledger(demo["TJ"], _save(workbook), "percent.xlsx")

    assert _errors(result) == [(2, "建筑面积", "88.5%")]
    assert "这一列不接受百分数" in result.errors[0].reason


def test_number_text_read_by_rule(demo):
    content = _save(_ledger(
        _row(建筑面积="１，０８８．５０", 往年欠费="1,234.50"),
        _row("TJ-9900002", "902", 建筑面积="88.5㎡", 往年欠费="(120.50)"),
        _row("TJ-9900003", "903", 建筑面积="88,5"),
        _row("TJ-9900004", "904", 往年欠费="5%"),
    ))

    result = import_ledger(demo["TJ"], content, "number-text.xlsx")

    assert _errors(result) == [(3, "往年欠费", "(120.50)"), (4, "建筑面积", "88,5"), (5, "往年欠费", "5%")]
    assert result.errors[0].reason == "往年欠费须为不小于 0 的金额，最多两位小数"
    assert result.errors[1].reason.startswith("千位分隔符的位置不对")
    assert result.errors[2].reason.startswith("是百分数")


def test_number_text_with_separators_imported(demo):
    content = _save(_ledger(_row(建筑面积="１，０８８．５０", 往年欠费="1,234.50")))

    result = import_ledger(demo["TJ"], content, "separators.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    account = _accounts("TJ-9900001")[0]
    assert account.building_area == Decimal("1088.50")


def test_excess_places_rejected_not_rounded(demo):
    content = _save(_ledger(_row(建筑面积=88.12345, 往年欠费=120.505)))

    result = import_ledger(demo["TJ"], content, "places.xlsx")

    assert _errors(result) == [(2, "建筑面积", "88.12345"), (2, "往年欠费", "120.505")]
    assert result.errors[0].reason == "建筑面积最多 4 位小数"
    assert _accounts("TJ-9900001") == []


def test_binary_float_noise_read_as_shown(demo):
    # openpyxl stores 0.1 + 0.2 as 0.30000000000000004; Excel shows 0.3, and so does the import.
    content = _save(_ledger(_row(建筑面积=88.2 + 0.3, 往年欠费=0.1 + 0.2)))

    result = import_ledger(demo["TJ"], content, "noise.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    assert _accounts("TJ-9900001")[0].building_area == Decimal("88.5")
