"""Ledger import against the companies' real ledgers and their expected figures."""

import io
import json
from decimal import Decimal

import openpyxl
import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import receivables_report, run_billing
from app.extensions import db
from app.ledger.services import import_ledger
from app.network.models import Account, Community
from tests.conftest import LEDGERS

EXPECTED = {e["file"]: e for e in json.loads((LEDGERS / "expected.json").read_text())}
CLEAN_FILES = [name for name, e in EXPECTED.items() if "errors" not in e]


@pytest.mark.parametrize("filename", CLEAN_FILES)
def test_ledger_bills_to_expected_figures(import_fixture, filename):
    expected = EXPECTED[filename]
    result = import_fixture(expected["subsidiary"], filename)
    assert result.ok, result.summary()
    run_billing(expected["subsidiary"], expected["season"])

    report = receivables_report(expected["subsidiary"], expected["season"])

    assert report["accounts"] == expected["accounts"]
    assert report["receivable_total"] == expected["receivable_total"]
    assert report["by_status"] == expected["by_status"]
    for legacy_no, amount in expected["sample_accounts"].items():
        assert report["by_account"][legacy_no] == amount, legacy_no


@pytest.mark.parametrize("filename", CLEAN_FILES)
def test_ledger_area_and_arrears_totals(import_fixture, demo, filename):
    expected = EXPECTED[filename]
    import_fixture(expected["subsidiary"], filename)
    company_id = demo[expected["subsidiary"]].id

    areas = db.session.scalars(sa.select(Account.building_area).filter_by(company_id=company_id)).all()
    arrears = db.session.scalars(
        sa.select(LedgerEntry.amount).filter_by(company_id=company_id, kind="prior_arrears")
    ).all()

    assert f"{sum(areas):.2f}" == expected["total_building_area"]
    assert len(arrears) == expected["prior_arrears"]["accounts"]
    assert f"{sum(arrears):.2f}" == expected["prior_arrears"]["total"]


def test_dirty_ledger_rejected_with_each_row(import_fixture, demo):
    expected = EXPECTED["TJ-dirty-shared.xlsx"]

    result = import_fixture("TJ", "TJ-dirty-shared.xlsx")

    assert not result.ok
    named = sorted((e.excel_row, e.column) for e in result.errors)
    assert named == sorted((e["excel_row"], e["column"]) for e in expected["errors"])
    assert result.data_rows == expected["rows"]
    assert db.session.scalar(sa.select(sa.func.count(Account.id))) == 0
    assert db.session.scalar(sa.select(sa.func.count(Community.id))) == 0


def test_reimport_changes_nothing(import_fixture):
    first = import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    before = receivables_report("TJ", "2025-2026")
    lines_before = db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)))

    second = import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")

    assert first.created == 1743
    assert second.created == 0
    assert second.updated == 0
    assert second.unchanged == 1743
    assert db.session.scalar(sa.select(sa.func.count(LedgerEntry.id))) == lines_before
    assert receivables_report("TJ", "2025-2026") == before


def test_unified_account_number_layout(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")

    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-0001001"))

    # Row: 柳林里, 15号楼, unit 4, room 604; TJ is company 11.
    community = account.unit.building.community
    assert account.account_no == f"11{community.code}015040604"
    assert len(account.account_no) == 15
    assert account.unit.building.code == "015"
    assert account.room == "604"


def test_legacy_numbers_kept_and_searchable(import_fixture):
    from app.network.services import search_accounts

    import_fixture("SJZ", "SJZ-shared.xlsx")

    found = search_accounts("桥西花苑-13-1-1701")
    legacy = [a.legacy_no for a in search_accounts("桥西花苑-11-3-1504")]

    assert "桥西花苑-11-3-1504" in legacy
    assert all(a.legacy_no for a in found)


def test_same_file_into_two_companies_stays_apart(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    import_fixture("BJ", "TJ-shared.xlsx")

    counts = dict(
        db.session.execute(sa.select(Account.company_id, sa.func.count(Account.id)).group_by(Account.company_id)).all()
    )

    assert counts == {demo["TJ"].id: 1743, demo["BJ"].id: 1743}


def test_import_reports_progress_by_phase(demo):
    from app.ledger.services import import_ledger

    calls = []
    content = (LEDGERS / "TJ-shared.xlsx").read_bytes()

    result = import_ledger(demo["TJ"], content, "TJ-shared.xlsx", progress=lambda *call: calls.append(call))

    phases = [phase for phase, _done, _total in calls]
    assert result.ok
    assert phases[0] == "validating"
    assert calls[-1] == ("storing", 1743, 1743)
    assert phases.index("storing") > phases.index("validating")


TJ_HEADER = ["原用户编号", "户主姓名", "联系电话", "小区名称", "楼号", "单元", "房号", "建筑面积", "用户类型", "供热状态",
             "换热站", "热源", "往年欠费", "备注"]
# The stored row of TJ-0001520 in TJ-shared.xlsx: 海河花园 6号楼 2单元 303, 99.99 ㎡, 居民.
CHENG_ROW = ["TJ-0001520", "程春诺", "19545587209", "海河花园", "6号楼", 2, "303", "99.99", "居民", "正常",
             "津南一站", "津南热电厂", None, None]


def _tj_workbook(*rows):
    workbook = openpyxl.Workbook()
    workbook.active.append(TJ_HEADER)
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _cheng():
    return db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-0001520"))


def _account_snapshot(company):
    rows = db.session.execute(
        sa.select(Account.account_no, Account.legacy_no, Account.customer_name, Account.phone, Account.building_area,
                  Account.user_type, Account.billing_status).where(Account.company_id == company.id).order_by(Account.account_no)
    ).all()
    return [tuple(row) for row in rows]


def test_new_legacy_at_taken_address_rejected(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    before = _account_snapshot(demo["TJ"])
    cheng = _cheng()
    newcomer = ["TJ-9900003", "新用户丙", "13900000003", "海河花园", "6号楼", 2, "303", "210", "非居民", "正常",
                "津南一站", "津南热电厂", None, None]

    result = import_ledger(demo["TJ"], _tj_workbook(newcomer), "newcomer.xlsx")

    assert not result.ok
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.excel_row, error.column, error.value) == (2, "原用户编号", "TJ-9900003")
    assert error.reason == (
        f"该地址已是用户 {cheng.account_no}（原编号 TJ-0001520，户主 程春诺），与本行原编号 TJ-9900003 不符；"
        "若是同一户，请把原编号改为 TJ-0001520；若是另一户，请核对小区、楼号、单元和房号"
    )
    db.session.expire_all()
    assert _account_snapshot(demo["TJ"]) == before
    assert _cheng().building_area == Decimal("99.99")
    assert _cheng().user_type == "residential"


def test_billed_account_keeps_billing_fields(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    before = _account_snapshot(demo["TJ"])
    lines_before = db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)))
    account_no = _cheng().account_no
    changed = list(CHENG_ROW)
    changed[7], changed[8] = "210", "非居民"

    result = import_ledger(demo["TJ"], _tj_workbook(changed), "changed.xlsx")

    assert not result.ok
    assert [(e.excel_row, e.column, e.value) for e in result.errors] == [(2, "建筑面积", "210"), (2, "用户类型", "非居民")]
    assert result.errors[0].reason == (
        f"用户 {account_no} 已有 2025-2026 采暖季的已过账热费，导入不能把建筑面积从 99.99 改为 210；"
        "请在台账中保留 99.99，并在用户页提交“调整面积”申请，或在 /billing/rerates 提交追溯调整"
    )
    assert result.errors[1].reason == (
        f"用户 {account_no} 已有 2025-2026 采暖季的已过账热费，导入不能把用户类型从 居民 改为 非居民；"
        "请在台账中保留 居民，并在 /billing/rerates 提交追溯调整"
    )
    db.session.expire_all()
    assert _account_snapshot(demo["TJ"]) == before
    assert db.session.scalar(sa.select(sa.func.count(LedgerEntry.id))) == lines_before


def test_billed_account_name_phone_corrected(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    corrected = list(CHENG_ROW)
    corrected[1], corrected[2], corrected[13] = "程新诺", "13900000009", "电话已更正"

    result = import_ledger(demo["TJ"], _tj_workbook(corrected), "corrected.xlsx")

    assert result.ok, [e.reason for e in result.errors]
    assert result.updated == 1
    db.session.expire_all()
    cheng = _cheng()
    assert cheng.customer_name == "程新诺"
    assert cheng.phone == "13900000009"
    assert cheng.note == "电话已更正"
    assert cheng.building_area == Decimal("99.99")


def test_unbilled_account_area_corrected(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    changed = list(CHENG_ROW)
    changed[7], changed[8] = "210", "非居民"

    result = import_ledger(demo["TJ"], _tj_workbook(changed), "changed.xlsx")

    assert result.ok, [e.reason for e in result.errors]
    db.session.expire_all()
    assert _cheng().building_area == Decimal("210")
    assert _cheng().user_type == "non_residential"


def test_new_account_lines_and_totals(import_fixture, demo):
    from app.hq.models import CompanyAccountCount, CompanyDailyTotal
    from app.hq.totals import rebuild_account_counts, rebuild_daily_totals
    from app.network.valves import ValveChange

    import_fixture("TJ", "TJ-shared.xlsx")
    header = [*TJ_HEADER, "阀门状态"]
    workbook = openpyxl.Workbook()
    workbook.active.append(header)
    # Two new dwellings in 海河花园 6号楼 2单元. The first owes 120.50 and is shut off.
    workbook.active.append(["TJ-9000001", "甲", "", "海河花园", "6号楼", 2, "1901", "80.5", "居民", "正常",
                            "津南一站", "津南热电厂", "120.50", None, "关栓"])
    workbook.active.append(["TJ-9000002", "乙", "", "海河花园", "6号楼", 2, "1902", "60", "居民", "正常",
                            "津南一站", "津南热电厂", None, None, None])
    buffer = io.BytesIO()
    workbook.save(buffer)

    result = import_ledger(demo["TJ"], buffer.getvalue(), "two-new.xlsx")

    assert result.ok, [e.reason for e in result.errors]
    assert (result.created, result.updated, result.unchanged) == (2, 0, 0)
    first = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-9000001"))
    second = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-9000002"))
    assert first.valve_state == "closed"
    assert second.valve_state == "open"
    assert first.prior_arrears == Decimal("120.50")
    arrears = db.session.scalars(sa.select(LedgerEntry).filter_by(account_id=first.id, kind="prior_arrears")).all()
    assert [line.amount for line in arrears] == [Decimal("120.50")]
    assert arrears[0].memo == "two-new.xlsx 第 2 行"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LedgerEntry).filter_by(account_id=second.id)) == 0
    changes = db.session.scalars(sa.select(ValveChange).filter_by(account_id=first.id)).all()
    assert [(c.state, c.cause_type) for c in changes] == [("closed", "import")]
    assert changes[0].community_id == first.unit.building.community_id
    # The account count and the daily totals kept by the import equal a recount from the tables.
    counts = dict(db.session.execute(sa.select(CompanyAccountCount.company_id, CompanyAccountCount.accounts)).all())
    assert counts[demo["TJ"].id] == 1743 + 2
    daily = sorted(tuple(row) for row in db.session.execute(
        sa.select(CompanyDailyTotal.company_id, CompanyDailyTotal.season_id, CompanyDailyTotal.category,
                  CompanyDailyTotal.day, CompanyDailyTotal.kind, CompanyDailyTotal.amount, CompanyDailyTotal.entries)
    ))
    rebuild_account_counts(db.session.connection())
    rebuild_daily_totals(db.session.connection())
    assert dict(db.session.execute(sa.select(CompanyAccountCount.company_id, CompanyAccountCount.accounts)).all()) == counts
    assert sorted(tuple(row) for row in db.session.execute(
        sa.select(CompanyDailyTotal.company_id, CompanyDailyTotal.season_id, CompanyDailyTotal.category,
                  CompanyDailyTotal.day, CompanyDailyTotal.kind, CompanyDailyTotal.amount, CompanyDailyTotal.entries)
    )) == daily


def test_changed_prior_arrears_rejected(import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    newcomer = ["TJ-9000011", "丁", "", "海河花园", "6号楼", 2, "1911", "80.5", "居民", "正常", "津南一站", "津南热电厂", "120.50", None]
    assert import_ledger(demo["TJ"], _tj_workbook(newcomer), "first.xlsx").ok
    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-9000011"))

    changed = [*newcomer[:12], "250.00", "改过欠费"]
    result = import_ledger(demo["TJ"], _tj_workbook(changed), "second.xlsx")

    assert not result.ok
    assert len(result.errors) == 1
    error = result.errors[0]
    assert (error.excel_row, error.column, error.value) == (2, "往年欠费", "250.00")
    assert account.account_no in error.reason
    assert "已按 120.50 元入账" in error.reason
    db.session.expire_all()
    # Nothing of the rejected file is stored: neither the amount nor the note.
    assert db.session.get(Account, account.id).prior_arrears == Decimal("120.50")
    assert db.session.get(Account, account.id).note == ""
    lines = db.session.scalars(sa.select(LedgerEntry.amount).filter_by(account_id=account.id, kind="prior_arrears")).all()
    assert lines == [Decimal("120.50")]

    # The same amount again is no change, and the note alone is stored.
    again = import_ledger(demo["TJ"], _tj_workbook([*newcomer[:12], "120.50", "改过欠费"]), "third.xlsx")
    assert again.ok, [e.reason for e in again.errors]
    assert db.session.get(Account, account.id).note == "改过欠费"
    lines = db.session.scalars(sa.select(LedgerEntry.amount).filter_by(account_id=account.id, kind="prior_arrears")).all()
    assert lines == [Decimal("120.50")]
