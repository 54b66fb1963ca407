"""A new tariff version of a billed season takes effect only when its tariff re-rating is posted.

TJ bills 2025-11-15 to 2026-03-15 (121 statutory days) at 25.00 per m². A version at 22.00
from 2026-01-01 bills 87.35 m² as 2183.75 × 47 / 121 = 848.23 plus 87.35 × 22.00 × 74 / 121
= 1175.25, together 2023.48, so the re-rating line is 2023.48 − 2183.75 = −160.27. A 40 m²
account billed after the version is in force owes 1000.00 × 47 / 121 = 388.43 plus
880.00 × 74 / 121 = 538.18, together 926.61; under 25.00 alone it owes 40 × 25.00 = 1000.00.
"""

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from app.billing.late_fees import late_fee_as_of
from app.billing.models import LedgerEntry, RerateChange
from app.billing.proration import season_tariffs
from app.billing.services import run_billing, season_receivable
from app.extensions import db
from app.tariffs.models import Tariff
from app.tariffs.services import get_season, tariff_in_force

SEASON = "2025-2026"
NEW_VERSION = {
    "effective_from": "2026-01-01", "suspension_ratio": "0.20",
    "price_residential": "22.00", "basis_residential": "building_area", "factor_residential": "1",
    "price_non_residential": "40.00", "basis_non_residential": "building_area", "factor_non_residential": "1",
    "late_fee_starts_after": "2025-12-31", "late_fee_rate_per_day": "0.002",
}


def _billed_with_new_version(add_account, login):
    """A TJ account of 87.35 m² billed 2183.75, and a 22.00 version from 2026-01-01 saved on the tariff page."""
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    season = get_season(account.company_id, SEASON)
    first = tariff_in_force(season)
    response = login("tj_admin").post(f"/tariffs/{first.id}", data=NEW_VERSION)
    assert response.status_code == 302
    db.session.expire_all()
    version = db.session.scalar(sa.select(Tariff).filter_by(season_id=season.id, effective_from=date(2026, 1, 1)))
    return account, season, first, version


def _submit_tariff_change(login):
    response = login("tj_clerk").post("/billing/rerates/new", data={"kind": "tariff", "season": SEASON, "description": "调价文件"})
    assert response.status_code == 302
    db.session.expire_all()
    return db.session.scalar(sa.select(RerateChange).order_by(RerateChange.id.desc()))


def _decide(login, change, decision):
    response = login("tj_approver").post("/billing/rerates/decide", data={"change_id": change.id, "decision": decision})
    assert response.status_code in (302, 303)
    db.session.expire_all()


def _rerate_lines(account):
    return db.session.scalars(sa.select(LedgerEntry.amount).filter_by(account_id=account.id, kind="rerate")).all()


def test_new_version_waits_for_approval(add_account, login):
    account, season, first, version = _billed_with_new_version(add_account, login)
    assert version.status == "pending"
    assert tariff_in_force(season, date(2026, 2, 1)).id == first.id
    assert [t.id for t in season_tariffs(season)] == [first.id]
    # Late fees still accrue as under 25.00: 2183.75 × 0.002 × 31 = 135.39.
    assert late_fee_as_of(account, season, date(2026, 1, 31)) == Decimal("135.39")
    page = login("tj_clerk").get("/tariffs/").get_data(as_text=True)
    assert "2026-01-01（待追溯调整审批）" in page

    change = _submit_tariff_change(login)
    assert change.tariff_id == version.id
    assert change.effective_from == date(2026, 1, 1)
    assert [(p.account_id, p.billed, p.expected, p.difference) for p in change.proposals] == [
        (account.id, Decimal("2183.75"), Decimal("2023.48"), Decimal("-160.27")),
    ]
    # One pending change per version.
    response = login("tj_clerk").post(
        "/billing/rerates/new", data={"kind": "tariff", "season": SEASON}, follow_redirects=True,
    )
    assert f"已有待审批的调整单 {change.id}" in response.get_data(as_text=True)
    # The version cannot be edited while its change waits.
    response = login("tj_admin").post(f"/tariffs/{version.id}", data=NEW_VERSION, follow_redirects=True)
    assert f"待审批的追溯调整单 {change.id}" in response.get_data(as_text=True)


def test_rejected_tariff_rerating_changes_nothing(add_account, login):
    account, season, first, version = _billed_with_new_version(add_account, login)
    change = _submit_tariff_change(login)
    _decide(login, change, "reject")

    assert db.session.get(RerateChange, change.id).status == "rejected"
    assert db.session.get(Tariff, version.id).status == "withdrawn"
    assert _rerate_lines(account) == []
    assert season_receivable(account.id, season.id) == Decimal("2183.75")
    assert tariff_in_force(season, date(2026, 2, 1)).id == first.id
    # An account billed after the rejection pays the 25.00 in force before: 40 × 25.00 = 1000.00.
    later = add_account("TJ", "40")
    run_billing("TJ", SEASON)
    assert season_receivable(later.id, season.id) == Decimal("1000.00")
    assert "2026-01-01（已撤回）" in login("tj_clerk").get("/tariffs/").get_data(as_text=True)

    # Saving that date again makes a new pending version out of the withdrawn row.
    again = login("tj_admin").post(f"/tariffs/{first.id}", data=NEW_VERSION)
    assert again.status_code == 302
    db.session.expire_all()
    assert db.session.get(Tariff, version.id).status == "pending"


def test_approved_tariff_rerating_puts_version_in_force(add_account, login):
    account, season, first, version = _billed_with_new_version(add_account, login)
    change = _submit_tariff_change(login)
    _decide(login, change, "approve")

    assert db.session.get(RerateChange, change.id).status == "posted"
    assert db.session.get(Tariff, version.id).status == "active"
    assert _rerate_lines(account) == [Decimal("-160.27")]
    assert season_receivable(account.id, season.id) == Decimal("2023.48")
    assert tariff_in_force(season, date(2026, 2, 1)).id == version.id
    later = add_account("TJ", "40")
    run_billing("TJ", SEASON)
    assert season_receivable(later.id, season.id) == Decimal("926.61")
