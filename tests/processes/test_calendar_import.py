"""Import of a year's holidays and adjusted working days from CSV or .xlsx: checks per row, all-or-nothing storing, page and CLI.

The files are generated for 2031, a year no library covers, with made-up days; they are
not an official list.
"""

import io
from datetime import date, datetime, timedelta, timezone

import openpyxl
import pytest
import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.processes.calendar import add_working_days
from app.processes.calendar_import import CalendarImportError, import_calendar, parse_rows, read_rows
from app.processes.models import CalendarDay

YEAR = 2031
# First Saturday of October 2031 and the weekdays around it.
SATURDAY = next(date(YEAR, 10, 1) + timedelta(days=n) for n in range(7) if (date(YEAR, 10, 1) + timedelta(days=n)).weekday() == 5)
HOLIDAYS = [date(YEAR, 10, 1) + timedelta(days=n) for n in range(3)]


def _csv(rows, header=("日期", "类型", "名称"), encoding="utf-8"):
    lines = [",".join(header)] + [",".join(row) for row in rows]
    return ("\n".join(lines) + "\n").encode(encoding)


def _good_rows():
    rows = [(day.isoformat(), "假日", "测试节") for day in HOLIDAYS]
    rows.append((SATURDAY.isoformat(), "调休工作日", "测试节调休上班"))
    return rows


def _xlsx(rows, title="2031 年放假安排"):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([title])
    sheet.append(["日期", "类型", "名称"])
    for day, kind, name in rows:
        sheet.append([date.fromisoformat(day), kind, name])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _days(company_id):
    return {
        row.day: row for row in db.session.scalars(
            sa.select(CalendarDay).where(CalendarDay.company_id == company_id, sa.extract("year", CalendarDay.day) == YEAR)
        )
    }


def test_csv_rows_parse_to_days(app_ctx):
    year, days, errors = parse_rows(read_rows("2031.csv", _csv(_good_rows())))
    assert errors == []
    assert year == YEAR
    assert days[HOLIDAYS[0]] == ("holiday", "测试节")
    assert days[SATURDAY] == ("workday", "测试节调休上班")


def test_gbk_csv_and_xlsx_read_the_same(app_ctx):
    from_gbk = parse_rows(read_rows("2031.csv", _csv(_good_rows(), encoding="gb18030")))
    from_xlsx = parse_rows(read_rows("2031.xlsx", _xlsx(_good_rows())))
    assert from_gbk == from_xlsx
    assert len(from_xlsx[1]) == 4


def test_each_bad_row_names_row_field_and_fix(app_ctx):
    monday = SATURDAY + timedelta(days=2)
    rows = [
        ("2031-02-30", "假日", "测试节"),
        (HOLIDAYS[0].isoformat(), "放两天", "测试节"),
        (HOLIDAYS[1].isoformat(), "假日", ""),
        (monday.isoformat(), "调休工作日", "测试节调休上班"),
        ("2032-01-01", "假日", "元旦"),
        (HOLIDAYS[2].isoformat(), "假日", "测试节"),
        (HOLIDAYS[2].isoformat(), "假日", "测试节"),
    ]
    _year, _days_found, errors = parse_rows(read_rows("bad.csv", _csv(rows)))
    texts = [str(error) for error in errors]
    assert texts[0] == "第 2 行「日期」值「2031-02-30」：不是有效日期；请按 YYYY-MM-DD 填写，例如 2027-10-01。"
    assert texts[1].startswith("第 3 行「类型」值「放两天」：类型无效；请填写「假日」或「调休工作日」")
    assert texts[2].startswith("第 4 行「名称」值「」：名称为空")
    assert texts[3].startswith(f"第 5 行「日期」值「{monday.isoformat()}」：是星期一，本来就上班")
    assert texts[4].startswith("第 6 行「日期」值「2032-01-01」：不在 2031 年")
    assert texts[5].startswith(f"第 8 行「日期」值「{HOLIDAYS[2].isoformat()}」：与第 7 行重复")
    assert len(errors) == 6


@pytest.mark.parametrize(
    "filename, content, fragment",
    [
        ("empty.csv", b"", "文件为空"),
        ("days.txt", b"x", "不是 .csv 或 .xlsx"),
        ("noheader.csv", "2031-10-01,假日,测试节\n".encode(), "没有找到表头"),
        ("onlyheader.csv", "日期,类型,名称\n".encode(), "没有数据行"),
        ("broken.xlsx", b"PK\x03\x04 not a workbook", "不是 Excel .xlsx 工作簿"),
        ("latin.csv", b"\xff\xfe\xfa" * 10, "编码无法识别"),
    ],
)
def test_unreadable_file_is_rejected(app_ctx, filename, content, fragment):
    with pytest.raises(CalendarImportError, match=fragment):
        parse_rows(read_rows(filename, content))


def test_import_is_all_or_nothing(demo):
    tj = demo["TJ"]
    rows = _good_rows() + [("2031-13-01", "假日", "测试节")]
    result = import_calendar("2031.csv", _csv(rows), [tj])
    db.session.commit()
    assert len(result.errors) == 1
    assert not result.stored
    assert _days(tj.id) == {}


def test_import_sets_days_and_keeps_others(demo):
    tj = demo["TJ"]
    db.session.add(CalendarDay(company_id=tj.id, day=date(YEAR, 12, 24), kind="holiday", name="公司自定"))
    db.session.add(CalendarDay(company_id=tj.id, day=HOLIDAYS[0], kind="holiday", name="旧名称"))
    db.session.commit()
    result = import_calendar("2031.csv", _csv(_good_rows()), [tj])
    db.session.commit()
    assert result.added == {"TJ": 3}
    assert result.changed == {"TJ": 1}
    days = _days(tj.id)
    assert days[HOLIDAYS[0]].name == "测试节"
    assert days[date(YEAR, 12, 24)].name == "公司自定"
    assert days[SATURDAY].kind == "workday"
    # Deadlines now skip the imported holidays (Wednesday to Friday) and count the Saturday.
    day_before = _local(HOLIDAYS[0] - timedelta(days=1))
    assert add_working_days(tj.id, day_before, 1) == _local(SATURDAY).astimezone(timezone.utc)

    again = import_calendar("2031.csv", _csv(_good_rows()), [tj])
    assert again.added == {"TJ": 0}
    assert again.changed == {"TJ": 0}


def _local(day):
    return datetime(day.year, day.month, day.day, 10, tzinfo=LOCAL_TIME)


def test_page_upload_imports_for_own_company(demo, login):
    admin = login("tj_admin")
    response = admin.post(
        f"/processes/calendar?year={YEAR}",
        data={"action": "import", "file": (io.BytesIO(_xlsx(_good_rows())), "2031.xlsx")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    assert len(_days(demo["TJ"].id)) == 4
    assert _days(demo["QD"].id) == {}


def test_page_upload_reports_rows_and_stores_nothing(demo, login):
    admin = login("tj_admin")
    rows = _good_rows() + [("2031-10-40", "假日", "测试节")]
    response = admin.post(
        f"/processes/calendar?year={YEAR}",
        data={"action": "import", "file": (io.BytesIO(_csv(rows)), "2031.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "文件中有 1 处错误，未导入任何日期" in text
    assert "第 6 行「日期」值「2031-10-40」：不是有效日期" in text
    assert _days(demo["TJ"].id) == {}

    missing = admin.post(f"/processes/calendar?year={YEAR}", data={"action": "import"}, content_type="multipart/form-data")
    assert missing.status_code == 400
    assert "没有选择文件" in missing.get_data(as_text=True)


def test_hq_page_imports_for_every_subsidiary(demo, login):
    hq = login("hq_admin")
    page = hq.get("/processes/calendar")
    assert page.status_code == 200
    assert "为全部分公司导入" in page.get_data(as_text=True)
    assert hq.post("/processes/calendar", data={"day": f"{YEAR}-10-09", "kind": "holiday"}).status_code == 403
    response = hq.post(
        f"/processes/calendar?year={YEAR}",
        data={"action": "import", "file": (io.BytesIO(_csv(_good_rows())), "2031.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    for code, company in demo.items():
        expected = 0 if company.is_headquarters else 4
        assert len(_days(company.id)) == expected, code


def test_cli_imports_and_rejects(app_ctx, demo, tmp_path):
    runner = app_ctx.test_cli_runner()
    good = tmp_path / "2031.csv"
    good.write_bytes(_csv(_good_rows()))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_csv(_good_rows() + [("2031-10-02", "假日", "测试节")]))

    rejected = runner.invoke(args=["heat", "calendar-import", "--company", "TJ", str(bad)])
    assert rejected.exit_code == 1
    assert "nothing imported, 1 invalid rows" in rejected.stderr
    assert 'Row 6, column "Date", value "2031-10-02": repeats row 3' in rejected.stderr
    assert _days(demo["TJ"].id) == {}

    wrong_year = runner.invoke(args=["heat", "calendar-import", "--company", "TJ", "--year", "2030", str(good)])
    assert wrong_year.exit_code == 1
    assert "is not in 2030" in wrong_year.stderr

    imported = runner.invoke(args=["heat", "calendar-import", "--all-companies", str(good)])
    assert imported.exit_code == 0, imported.stderr
    assert "TJ: 2031 calendar, 4 days added, 0 changed, 4 in the file." in imported.output
    assert len(_days(demo["QD"].id)) == 4

    neither = runner.invoke(args=["heat", "calendar-import", str(good)])
    assert neither.exit_code == 2


def _xlsx_cells(rows):
    workbook = openpyxl.Workbook()
    workbook.active.append(["日期", "类型", "名称"])
    for row in rows:
        workbook.active.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_date_text_forms_read(app_ctx):
    content = _xlsx_cells([
        (f"{YEAR}/10/1", "假日", "测试节"), (f"{YEAR}.10.02", "假日", "测试节"), (f"{YEAR}年10月3日", "假日", "测试节"),
    ])

    year, days, errors = parse_rows(read_rows("2031.xlsx", content))

    assert errors == []
    assert (year, sorted(days)) == (YEAR, HOLIDAYS)


def test_date_cells_rejected_with_reason(app_ctx):
    serial = (HOLIDAYS[0] - date(1899, 12, 30)).days
    content = _xlsx_cells([
        (serial, "假日", "测试节"), ("=DATE(2031,10,2)", "假日", "测试节"), (f"03/10/{YEAR}", "假日", "测试节"),
        (HOLIDAYS[2].isoformat(), "假日\u200b", "测试节"),
    ])

    _year, _days, errors = parse_rows(read_rows("2031.xlsx", content))

    assert [(e.row, e.column, e.value) for e in errors] == [
        (2, "日期", str(serial)), (3, "日期", "=DATE(2031,10,2)"), (4, "日期", f"03/10/{YEAR}"), (5, "类型", "假日[U+200B]"),
    ]
    assert errors[0].message.startswith(f"是数字 {serial}，不是日期")
    assert errors[1].message.startswith("公式 =DATE(2031,10,2) 没有保存计算结果")
