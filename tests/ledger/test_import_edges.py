"""Ledger cells that used to be lost or misreported: long notes, formulas without values, invisible characters."""

import io
import re
import zipfile
from decimal import Decimal

import openpyxl
import sqlalchemy as sa
from flask_babel import force_locale

from app.billing.models import LedgerEntry
from app.extensions import db
from app.ledger.models import LedgerImport
from app.ledger.parser import NOTE_MAX_CHARS
from app.ledger.services import import_ledger
from app.network.models import Account
from app.network.valves import ValveChange
from tests.ledger.test_import import CHENG_ROW, TJ_HEADER, _tj_workbook

NEW_ROW = ["TJ-9900001", "新用户甲", "13900000001", "海河花园", "6号楼", 2, "901", "88.5", "居民", "正常",
           "津南一站", "津南热电厂", None, None]


def _row(**cells):
    row = list(NEW_ROW)
    for header, value in cells.items():
        row[TJ_HEADER.index(header)] = value
    return row


def _workbook(header, *rows):
    workbook = openpyxl.Workbook()
    workbook.active.append(header)
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _account(legacy_no="TJ-9900001"):
    return db.session.scalar(sa.select(Account).filter_by(legacy_no=legacy_no))


def test_long_note_stored_and_shown_whole(demo, login):
    # Longer than the old 255-character column, with a line break typed with Alt+Enter.
    note = "2019 年换表，" + "户主多次反映暖气不热，已派员检查管道。" * 60 + "\n末行"
    assert 255 < len(note) <= NOTE_MAX_CHARS

    result = import_ledger(demo["TJ"], _tj_workbook(_row(备注=note)), "long-note.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    account = _account()
    assert account.note == note
    page = login("tj_clerk").get(f"/accounts/{account.id}").get_data(as_text=True)
    shown = page.split('id="account-note" class="long-text">', 1)[1].split("</td>", 1)[0]
    assert shown == note


def test_note_over_limit_rejected(demo):
    note = "备" * (NOTE_MAX_CHARS + 1)

    result = import_ledger(demo["TJ"], _tj_workbook(_row(备注=note)), "huge-note.xlsx")

    assert not result.ok
    assert [(e.excel_row, e.column) for e in result.errors] == [(2, "备注")]
    assert result.errors[0].reason == (
        f"备注过长（{NOTE_MAX_CHARS + 1} 个字），最多 {NOTE_MAX_CHARS} 个字；备注不会被截断，请精简后重新导入"
    )
    assert _account() is None


def test_long_filename_keeps_row_in_memo(demo):
    filename = "津南供热公司二〇二五年台账" * 20 + ".xlsx"
    content = _workbook([*TJ_HEADER, "阀门状态"], [*_row(往年欠费="120.50"), "关栓"])

    result = import_ledger(demo["TJ"], content, filename)

    assert result.ok, [e.message() for e in result.errors]
    account = _account()
    memo = db.session.scalar(sa.select(LedgerEntry.memo).filter_by(account_id=account.id, kind="prior_arrears"))
    valve_note = db.session.scalar(sa.select(ValveChange.note).filter_by(account_id=account.id))
    assert memo == f"{filename[:99]}…{filename[-99:]} 第 2 行"
    assert valve_note == memo


def test_zero_width_space_in_legacy_no_shown(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    row = list(CHENG_ROW)
    row[0] = "TJ-0001520\u200b"

    result = import_ledger(demo["TJ"], _tj_workbook(row), "zwsp.xlsx")

    assert not result.ok
    assert [(e.excel_row, e.column, e.value) for e in result.errors] == [(2, "原用户编号", "TJ-0001520[U+200B]")]
    assert result.errors[0].reason == (
        "含有看不见的字符：U+200B ZERO WIDTH SPACE（值中标为 [U+…]），所以与看起来相同的值不一致；"
        "请清空单元格后重新输入（不要粘贴），或在 Excel 中用 =SUBSTITUTE(单元格,UNICHAR(8203),\"\") 去掉该字符"
    )
    assert db.session.scalar(sa.select(sa.func.count(Account.id)).filter(Account.legacy_no.like("TJ-0001520%"))) == 1


def test_byte_order_mark_in_community_rejected(demo):
    result = import_ledger(demo["TJ"], _tj_workbook(_row(小区名称="\ufeff海河花园")), "bom.xlsx")

    assert [(e.column, e.value) for e in result.errors] == [("小区名称", "[U+FEFF]海河花园")]
    assert "U+FEFF ZERO WIDTH NO-BREAK SPACE" in result.errors[0].reason
    assert "UNICHAR(65279)" in result.errors[0].reason
    assert _account() is None


def test_spaces_around_legacy_no_trimmed_and_reported(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    cheng_id = _account("TJ-0001520").id
    row = list(CHENG_ROW)
    row[0] = "\u3000TJ-0001520\u00a0"

    result = import_ledger(demo["TJ"], _tj_workbook(row), "spaces.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    assert (result.created, result.updated, result.unchanged) == (0, 0, 1)
    assert _account("TJ-0001520").id == cheng_id
    assert [(n.excel_row, n.column, n.value) for n in result.notices] == [(2, "原用户编号", "[U+3000]TJ-0001520[U+00A0]")]
    assert result.notices[0].reason == "已去掉原用户编号首尾的空白字符（空格、全角空格或不换行空格），按「TJ-0001520」导入"


def test_full_width_legacy_no_reported(demo):
    result = import_ledger(demo["TJ"], _tj_workbook(_row(原用户编号="ＴＪ－９９００００１")), "full-width.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    assert _account("TJ-9900001") is not None
    assert [(n.column, n.value) for n in result.notices] == [("原用户编号", "ＴＪ－９９００００１")]
    assert "按「TJ-9900001」导入" in result.notices[0].reason


def test_notices_on_import_page_in_english(demo, login):
    client = login("tj_clerk")
    client.post("/language", data={"locale": "en"})
    content = _tj_workbook(_row(原用户编号=" TJ-9900001\u3000"))

    page = client.post(
        "/ledger/", data={"file": (io.BytesIO(content), "spaces.xlsx")}, content_type="multipart/form-data", follow_redirects=True,
    ).get_data(as_text=True)
    job = db.session.scalar(sa.select(LedgerImport).order_by(LedgerImport.id.desc()))

    assert job.status == "succeeded"
    assert job.notice_count == 1
    assert job.notices[0]["value"] == " TJ-9900001[U+3000]"
    table = page.split('id="notice-table"', 1)[1].split("</table>", 1)[0]
    assert "TJ-9900001[U+3000]" in table
    assert "Removed the spaces around the legacy number" in table


def _with_cached_values(content, values):
    """Rewrite an openpyxl workbook as Excel saves it: each formula cell in `values` gets its computed value."""
    source = zipfile.ZipFile(io.BytesIO(content))
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            data = source.read(member)
            if member.filename == "xl/worksheets/sheet1.xml":
                for reference, value in values.items():
                    data = re.sub(rf'(<c r="{reference}"[^>]*><f>[^<]*</f>)<v\s*/?>(</v>)?'.encode(), rf"\1<v>{value}</v>".encode(), data)
            target.writestr(member, data)
    return output.getvalue()


def test_formula_without_value_reported(demo):
    content = _tj_workbook(_row(建筑面积="=80+8.5"), _row(原用户编号="TJ-9900002", 房号="902", 备注='=CONCAT("换表","2019")'))

    result = import_ledger(demo["TJ"], content, "formulas.xlsx")

    assert not result.ok
    assert [(e.excel_row, e.column, e.value) for e in result.errors] == [(2, "建筑面积", "=80+8.5"), (3, "备注", '=CONCAT("换表","2019")')]
    assert result.errors[0].reason == (
        "公式 =80+8.5 没有保存计算结果，读出来是空的；请用 Excel 或 WPS 打开文件并保存一次（保存时会计算公式），或把公式换成数值，再重新上传"
    )
    with force_locale("en"):
        assert result.errors[0].message() == (
            'Row 2, column "建筑面积", value "=80+8.5": The formula =80+8.5 was saved without its computed value, so it reads '
            "as empty. Open the file in Excel or WPS and save it once (saving computes the formulas), or replace the formula "
            "with its value, then upload again."
        )
    assert _account() is None


def test_formula_with_saved_value_imported(demo):
    content = _with_cached_values(_tj_workbook(_row(建筑面积="=80+8.5")), {"H2": "88.5"})

    result = import_ledger(demo["TJ"], content, "computed.xlsx")

    assert result.ok, [e.message() for e in result.errors]
    assert _account().building_area == Decimal("88.5")
