"""Dirty and tricky ledgers: every bad row named, nothing half-stored, nothing doubled."""

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.ledger.services import import_ledger
from tests.ledger.test_import import CHENG_ROW, _account_snapshot, _cheng, _tj_workbook

# A new dwelling in 海河花园 6号楼 2单元, free in TJ-shared.xlsx.
NEW_ROW = ["TJ-9000001", "甲", "", "海河花园", "6号楼", 2, "1901", "80.5", "居民", "正常", "津南一站", "津南热电厂", None, None]
COLUMN_INDEX = {"legacy_no": 0, "customer_name": 1, "unit": 5, "building_area": 7, "prior_arrears": 12}


def _lines_count():
    return db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)))


@pytest.mark.parametrize("mover_first", [True, False], ids=["mover-first", "mover-last"])
def test_moved_address_reused_rejected(import_fixture, demo, mover_first):
    import_fixture("TJ", "TJ-shared.xlsx")
    before = _account_snapshot(demo["TJ"])
    cheng_account_no = _cheng().account_no
    # 程春诺 (TJ-0001520) moves from room 303 to 1999, and a household without a legacy number takes 303.
    moved = list(CHENG_ROW)
    moved[6] = "1999"
    newcomer = ["", "新户主", "", "海河花园", "6号楼", 2, "303", "50", "居民", "正常", "津南一站", "津南热电厂", None, None]
    rows = (moved, newcomer) if mover_first else (newcomer, moved)
    mover_row, newcomer_row = (2, 3) if mover_first else (3, 2)

    result = import_ledger(demo["TJ"], _tj_workbook(*rows), "move.xlsx")

    assert not result.ok
    assert [(e.excel_row, e.column, e.value) for e in result.errors] == [(newcomer_row, "房号", "303")]
    assert result.errors[0].reason == (
        f"该地址原是用户 {cheng_account_no}（原编号 TJ-0001520），第 {mover_row} 行把该用户改到了另一地址；"
        "一次导入不能同时迁出并新建同一地址，请先导入不含本行的台账，再导入本行"
    )
    db.session.expire_all()
    assert _account_snapshot(demo["TJ"]) == before
    assert _cheng().customer_name == "程春诺"
    assert _cheng().room == "303"


def test_move_then_reuse_in_two_files(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    accounts_before = len(_account_snapshot(demo["TJ"]))
    moved = list(CHENG_ROW)
    moved[6] = "1999"
    newcomer = ["", "新户主", "", "海河花园", "6号楼", 2, "303", "50", "居民", "正常", "津南一站", "津南热电厂", None, None]

    first = import_ledger(demo["TJ"], _tj_workbook(moved), "move.xlsx")
    second = import_ledger(demo["TJ"], _tj_workbook(newcomer), "newcomer.xlsx")

    assert first.ok, [e.reason for e in first.errors]
    assert second.ok, [e.reason for e in second.errors]
    assert (second.created, second.updated) == (1, 0)
    db.session.expire_all()
    assert _cheng().room == "1999"
    assert len(_account_snapshot(demo["TJ"])) == accounts_before + 1


@pytest.mark.parametrize(
    ("field", "value", "column", "shown", "reason"),
    [
        ("building_area", "八十", "建筑面积", "八十", "建筑面积不是数字，请填写大于 0 的数字（可带㎡或平米）"),
        ("building_area", 0, "建筑面积", "0", "建筑面积必须大于 0"),
        ("building_area", -5, "建筑面积", "-5", "建筑面积必须大于 0"),
        ("building_area", "NaN", "建筑面积", "NaN", "建筑面积不是数字，请填写大于 0 的数字（可带㎡或平米）"),
        ("building_area", "1" * 30, "建筑面积", "1" * 30, "建筑面积超过 1000000 ㎡，请核对单位和数值"),
        ("prior_arrears", "-3", "往年欠费", "-3", "往年欠费须为不小于 0 的金额，最多两位小数"),
        ("unit", "二单元", "单元", "二单元", "单元须为 1 到 99 的整数"),
        # A long value is shown cut to its first 100 characters.
        ("legacy_no", "L" * 500, "原用户编号", "L" * 100 + "…", "内容过长（500 个字），最多 64 个字"),
    ],
    ids=["area-text", "area-zero", "area-negative", "area-nan", "area-huge", "arrears-negative", "unit-text", "legacy-long"],
)
def test_dirty_cell_named_nothing_stored(import_fixture, demo, field, value, column, shown, reason):
    import_fixture("TJ", "TJ-shared.xlsx")
    before = _account_snapshot(demo["TJ"])
    lines_before = _lines_count()
    # A clean new row first, so a half-stored import would show up as one more account.
    dirty = list(NEW_ROW)
    dirty[COLUMN_INDEX[field]] = value
    dirty[6] = "1902"
    if field != "legacy_no":
        dirty[0] = "TJ-9000002"

    result = import_ledger(demo["TJ"], _tj_workbook(NEW_ROW, dirty), "dirty.xlsx")

    assert not result.ok
    assert [(e.excel_row, e.column, e.value, e.reason) for e in result.errors] == [(3, column, shown, reason)]
    db.session.expire_all()
    assert _account_snapshot(demo["TJ"]) == before
    assert _lines_count() == lines_before


def test_same_file_twice_adds_once(import_fixture, demo):
    from app.hq.models import CompanyAccountCount

    import_fixture("TJ", "TJ-shared.xlsx")
    with_arrears = list(NEW_ROW)
    with_arrears[12] = "120.50"
    content = _tj_workbook(with_arrears)

    first = import_ledger(demo["TJ"], content, "new.xlsx")
    lines_after_first = _lines_count()
    second = import_ledger(demo["TJ"], content, "new.xlsx")

    assert (first.created, first.updated, first.unchanged) == (1, 0, 0)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 1)
    assert _lines_count() == lines_after_first
    count = db.session.scalar(sa.select(CompanyAccountCount.accounts).filter_by(company_id=demo["TJ"].id))
    assert count == 1743 + 1
