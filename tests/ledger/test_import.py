"""Ledger import against the companies' real ledgers and their expected figures."""

import json

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import receivables_report, run_billing
from app.extensions import db
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
