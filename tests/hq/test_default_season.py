"""One default season for the HQ pages and the arrears page: the latest billed season."""

from datetime import date

from app.billing.arrears import arrears_by_account
from app.billing.seasons import default_season, default_season_name
from app.extensions import db
from app.tariffs.models import Season
from tests.hq.conftest import SEASON


def _add_unbilled_season(company, name, start, end):
    db.session.add(Season(company_id=company.id, name=name, start_on=start, end_on=end,
                          statutory_days=(end - start).days + 1))
    db.session.commit()


def test_default_season_without_charges(demo):
    assert default_season_name(date(2026, 12, 5)) == "2026-2027"
    assert default_season_name(date(2026, 6, 30)) == "2025-2026"
    assert default_season_name(date(2026, 7, 1)) == "2026-2027"


def test_default_season_is_latest_billed(hq_ledger, demo):
    _add_unbilled_season(demo["TJ"], "2026-2027", date(2026, 11, 15), date(2027, 3, 15))

    assert default_season_name(date(2026, 12, 5)) == SEASON
    assert default_season_name(date(2026, 12, 5), demo["TJ"].id) == SEASON
    assert default_season(demo["TJ"].id, date(2026, 12, 5)).name == SEASON
    # A billed season later than the as-of date's own season is not the default.
    assert default_season_name(date(2025, 3, 1)) == "2024-2025"
    # BJ has posted no charges, so it falls back to the season of the date.
    assert default_season_name(date(2026, 12, 5), demo["BJ"].id) == "2026-2027"


def test_arrears_ages_from_billed_season(hq_ledger, demo):
    _add_unbilled_season(demo["TJ"], "2026-2027", date(2026, 11, 15), date(2027, 3, 15))

    items = [item for item in arrears_by_account(demo["TJ"].id) if item.by_season.get(SEASON)]

    # Unpaid 2025-2026 charges are current arrears, not one season old.
    assert items
    assert {item.oldest_age for item in items} == {0}
    assert sum(item.buckets["1"] for item in items) == 0


def test_hq_pages_open_on_same_season(hq_ledger, demo, login):
    _add_unbilled_season(demo["TJ"], "2026-2027", date(2026, 11, 15), date(2027, 3, 15))
    client = login("hq_auditor")

    dashboard = client.get("/hq/dashboard?as_of=2026-12-05").get_data(as_text=True)
    collection = client.get("/hq/collection").get_data(as_text=True)

    assert f"{SEASON} 供暖季 · 截至 2026-12-05 日终" in dashboard
    assert f"集团收费汇总 {SEASON}" in collection
