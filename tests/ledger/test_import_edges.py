"""Ledger cells that used to be lost or misreported: long notes, formulas without values, invisible characters."""

import io

import openpyxl
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.ledger.parser import NOTE_MAX_CHARS
from app.ledger.services import import_ledger
from app.network.models import Account
from app.network.valves import ValveChange
from tests.ledger.test_import import TJ_HEADER, _tj_workbook

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
