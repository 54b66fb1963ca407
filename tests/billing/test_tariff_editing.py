"""Tariffs are data: administrators read and edit them; billed tariffs get a new version."""

from decimal import Decimal

import sqlalchemy as sa

from app.billing.services import run_billing
from app.extensions import db
from app.tariffs.models import Tariff
from app.tariffs.services import get_season, tariff_in_force

FORM = {
    "effective_from": "2025-11-15", "suspension_ratio": "0.25",
    "price_residential": "26.50", "basis_residential": "building_area", "factor_residential": "1",
    "price_non_residential": "41", "basis_non_residential": "building_area", "factor_non_residential": "1",
    "late_fee_starts_after": "2025-12-31", "late_fee_rate_per_day": "0.002",
}


def _tj_tariff(demo):
    return tariff_in_force(get_season(demo["TJ"].id, "2025-2026"))


def test_admin_edits_unbilled_tariff(demo, login):
    tariff = _tj_tariff(demo)

    response = login("tj_admin").post(f"/tariffs/{tariff.id}", data=FORM)
    db.session.expire_all()

    assert response.status_code == 302
    prices = {p.category: p.unit_price for p in _tj_tariff(demo).prices}
    assert prices == {"residential": Decimal("26.50"), "non_residential": Decimal("41")}
    assert _tj_tariff(demo).suspension_ratio == Decimal("0.25")


def test_billed_tariff_needs_new_version(import_fixture, demo, login):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    tariff = _tj_tariff(demo)
    client = login("tj_admin")

    in_place = client.post(f"/tariffs/{tariff.id}", data=FORM, follow_redirects=True)
    new_version = client.post(f"/tariffs/{tariff.id}", data=dict(FORM, effective_from="2026-01-10"))

    versions = db.session.scalars(sa.select(Tariff.effective_from).filter_by(company_id=demo["TJ"].id).order_by(Tariff.effective_from)).all()
    assert "新的生效日期" in in_place.get_data(as_text=True)
    assert new_version.status_code == 302
    assert [d.isoformat() for d in versions] == ["2025-11-15", "2026-01-10"]
    db.session.expire_all()
    assert {p.category: p.unit_price for p in _tj_tariff(demo).prices}["residential"] == Decimal("25.00")


def test_bad_tariff_value_rejected(demo, login):
    tariff = _tj_tariff(demo)

    response = login("tj_admin").post(f"/tariffs/{tariff.id}", data=dict(FORM, price_residential="abc"), follow_redirects=True)

    assert "abc" in response.get_data(as_text=True)
    db.session.expire_all()
    assert {p.category: p.unit_price for p in _tj_tariff(demo).prices}["residential"] == Decimal("25.00")


def test_other_company_cannot_edit(demo, login):
    tariff = _tj_tariff(demo)

    response = login("qd_admin").post(f"/tariffs/{tariff.id}", data=FORM)

    assert response.status_code == 404
