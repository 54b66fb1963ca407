"""Meter-reading import: every row checked first, nothing half-stored, settlements posted once."""

import io
from decimal import Decimal

import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from app.billing.meter_import import MeterImportError, import_meter_readings
from app.billing.models import LedgerEntry, SeasonMeterReading
from app.billing.services import run_billing
from app.extensions import db

SEASON = "2025-2026"


def _workbook(rows, header=("用户编号", "上期读数", "本期读数")):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["2025-2026 供暖季计量读数"])
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _settlements(company_id):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(company_id=company_id, kind="settlement").order_by(LedgerEntry.account_id)
    ).all()


@pytest.fixture
def two_metered(add_account, qd_season):
    """Two metered QD residents of 92.17 m² (usable area blank: 69.1275 m², 2101.48 billed each)."""
    first = add_account("QD", "92.17", billing_method="metered")
    second = add_account("QD", "92.17", billing_method="metered")
    run_billing("QD", SEASON)
    return first, second, qd_season("refund_and_surcharge")


def test_valid_file_stores_and_settles(two_metered):
    # 30 GJ: 69.1275 × 9 + 30 × 41.73 = 1874.05, so −227.43. 50 GJ: 2708.65 capped at 2101.48, so 0.00.
    first, second, season = two_metered
    content = _workbook([(first.account_no, "1000", "1030"), (second.account_no, "500.5", "550.5")])

    result = import_meter_readings(first.company_id, season, content, "读数.xlsx")

    assert result.errors == []
    assert result.stored == 2
    assert result.settled_total == Decimal("-227.43")
    readings = db.session.scalars(sa.select(SeasonMeterReading).order_by(SeasonMeterReading.account_id)).all()
    assert [(r.heat_gj, r.excel_row) for r in readings] == [(Decimal("30.000"), 3), (Decimal("50.000"), 4)]
    assert [line.amount for line in _settlements(first.company_id)] == [Decimal("-227.43"), Decimal("0.00")]
    assert _settlements(first.company_id)[0].cause_type == "meter_reading"


def test_reimport_posts_nothing_twice(two_metered):
    first, second, season = two_metered
    content = _workbook([(first.account_no, "1000", "1030"), (second.account_no, "500.5", "550.5")])
    import_meter_readings(first.company_id, season, content, "读数.xlsx")

    again = import_meter_readings(first.company_id, season, content, "读数.xlsx")

    assert (again.stored, again.unchanged, again.errors) == (0, 2, [])
    assert len(_settlements(first.company_id)) == 2


def test_bad_rows_store_nothing(two_metered, add_account):
    # Charge area 69.1275 m² × 2 GJ/m² = 138.255 GJ is the most one season may use.
    first, second, season = two_metered
    area_billed = add_account("QD", "80")
    third = add_account("QD", "92.17", billing_method="metered")
    content = _workbook([
        (first.account_no, "1000", "1030"),                 # row 3: valid, but the file is rejected as a whole
        (second.account_no, "1000", ""),                    # row 4: missing end reading
        ("120002999010101", "1", "2"),                      # row 5: unknown account
        (area_billed.account_no, "1", "2"),                 # row 6: area-billed
        (first.account_no, "1030", "1000"),                 # row 7: duplicate and decreasing
        (third.account_no, "0", "200"),                     # row 8: 200 GJ out of range
        (second.account_no, "1.2345", "abc"),               # row 9: too many places, not a number
    ])

    result = import_meter_readings(first.company_id, season, content, "读数.xlsx")

    messages = [str(error) for error in result.errors]
    assert result.stored == 0
    assert "第 4 行「结束读数」值「」：读数为空" in messages[0]
    assert any(m.startswith("第 5 行「用户编号」值「120002999010101」：本公司没有该用户") for m in messages)
    assert any(m.startswith(f"第 6 行「用户编号」值「{area_billed.account_no}」：该用户按面积计费") for m in messages)
    assert any(m.startswith("第 7 行「用户编号」") and "与第 3 行重复" in m for m in messages)
    assert any(m.startswith("第 7 行「结束读数」值「1000」：小于起始读数 1030（读数倒走）") for m in messages)
    assert any(m.startswith("第 8 行「结束读数」值「200」：用热 200 吉焦超出合理范围") and "138.255" in m for m in messages)
    assert any(m.startswith("第 9 行「起始读数」值「1.2345」：读数超过三位小数") for m in messages)
    assert any(m.startswith("第 9 行「结束读数」值「abc」：不是数字") for m in messages)
    assert db.session.scalar(sa.select(sa.func.count(SeasonMeterReading.id))) == 0
    assert _settlements(first.company_id) == []


def test_changed_reading_rejected(two_metered):
    first, _second, season = two_metered
    import_meter_readings(first.company_id, season, _workbook([(first.account_no, "1000", "1030")]), "一.xlsx")

    result = import_meter_readings(first.company_id, season, _workbook([(first.account_no, "1000", "1040")]), "二.xlsx")

    assert len(result.errors) == 1
    assert "已导入读数 1000.000–1030.000（一.xlsx 第 3 行）" in str(result.errors[0])
    assert db.session.scalar(sa.select(SeasonMeterReading.end_reading)) == Decimal("1030.000")


def test_unreadable_file_rejected(two_metered):
    first, _second, season = two_metered

    with pytest.raises(MeterImportError, match="不是 Excel .xlsx 工作簿"):
        import_meter_readings(first.company_id, season, b"not a workbook", "x.xlsx")
    with pytest.raises(MeterImportError, match="没有找到表头"):
        import_meter_readings(first.company_id, season, _workbook([(first.account_no, "1", "2")], header=("户名", "读数")), "x.xlsx")
    with pytest.raises(MeterImportError, match="表头下没有读数行"):
        import_meter_readings(first.company_id, season, _workbook([]), "x.xlsx")


def test_uncached_formula_reading_reported(two_metered):
    first, second, season = two_metered
    content = _workbook([(first.account_no, "1000", "=B3+30"), (second.account_no, "500.5", "550.5")])

    result = import_meter_readings(first.company_id, season, content, "formula.xlsx")

    assert [(e.excel_row, e.column, e.value) for e in result.errors] == [(3, "结束读数", "=B3+30")]
    assert result.errors[0].message.startswith("公式 =B3+30 没有保存计算结果")
    assert db.session.scalars(sa.select(SeasonMeterReading)).all() == []


def test_merged_account_and_percent_reported(two_metered):
    first, second, season = two_metered
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["用户编号", "上期读数", "本期读数"])
    sheet.append([first.account_no, "1000", "1030"])
    sheet.append([None, 0.5, "1040"])
    sheet.merge_cells("A2:A3")
    sheet["B3"].number_format = "0%"
    buffer = io.BytesIO()
    workbook.save(buffer)

    result = import_meter_readings(first.company_id, season, buffer.getvalue(), "merged.xlsx")

    assert [(e.excel_row, e.column, e.value) for e in result.errors] == [(3, "用户编号", ""), (3, "起始读数", "50%")]
    assert "合并单元格 A2:A3" in result.errors[0].message
    assert "这一列不接受百分数" in result.errors[1].message
    assert db.session.scalars(sa.select(SeasonMeterReading)).all() == []


def test_reading_text_read_by_rule(two_metered):
    first, second, season = two_metered
    content = _workbook([(first.account_no, "１，０００", "1,030.000"), (second.account_no, "(500.5)", "550.5")])

    result = import_meter_readings(first.company_id, season, content, "text.xlsx")

    assert [(e.excel_row, e.column, e.value, e.message) for e in result.errors] == [
        (4, "起始读数", "(500.5)", "读数须为不小于 0 的数字"),
    ]


def test_reading_precision_from_cell_number(two_metered):
    first, second, season = two_metered
    # 1030.0004 has four places and is rejected; 0.1 + 1029.9 is stored by openpyxl as
    # 1030.0000000000002 and read at Excel's 15 digits as 1030.
    content = _workbook([(first.account_no, 1000, 1030.0004), (second.account_no, 500.5, 0.1 + 550.4)])

    result = import_meter_readings(first.company_id, season, content, "precision.xlsx")

    assert [(e.excel_row, e.value, e.message) for e in result.errors] == [(3, "1030.0004", "读数超过三位小数；请精确到 0.001 吉焦")]

    fixed = _workbook([(first.account_no, 1000, 1030.0), (second.account_no, 500.5, 0.1 + 550.4)])
    result = import_meter_readings(first.company_id, season, fixed, "precision.xlsx")
    assert result.errors == []
    readings = db.session.scalars(sa.select(SeasonMeterReading).order_by(SeasonMeterReading.account_id)).all()
    assert [r.end_reading for r in readings] == [Decimal("1030"), Decimal("550.5")]


def test_hidden_first_sheet_not_read(two_metered):
    first, second, season = two_metered
    workbook = Workbook()
    workbook.active.title = "旧读数"
    workbook.active.append(["用户编号", "上期读数", "本期读数"])
    workbook.active.append([first.account_no, "1", "2"])
    workbook.active.sheet_state = "hidden"
    current = workbook.create_sheet("本季读数")
    current.append(["用户编号", "上期读数", "本期读数"])
    current.append([first.account_no, "1000", "1030"])
    buffer = io.BytesIO()
    workbook.save(buffer)

    result = import_meter_readings(first.company_id, season, buffer.getvalue(), "hidden.xlsx")

    assert result.errors == []
    assert [r.end_reading for r in db.session.scalars(sa.select(SeasonMeterReading))] == [Decimal("1030")]
