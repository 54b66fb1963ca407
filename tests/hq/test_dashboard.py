"""HQ dashboards: daily totals kept exact on posting, figures as of a date, drill-down, export and access."""

import io
from datetime import timedelta
from decimal import Decimal

import openpyxl
import pytest
import sqlalchemy as sa

from app.clock import local_time
from app.extensions import db
from app.hq.dashboard import robust_z_scores, today
from app.hq.models import CommunityDailyTotal, CompanyDailyTotal
from app.hq.services import collection_summary
from app.hq.totals import rebuild_daily_totals
from app.network.models import Account, Building, Unit
from tests.hq.conftest import SEASON

GROUP_VIEWS = ("companies", "collection", "arrears", "waivers", "processes")


def _table(model):
    columns = [c for c in model.__table__.c if c.name != "id"]
    return sorted(db.session.execute(sa.select(*columns)).all())


def _row(view, code):
    return next(r for r in view["rows"] if r.get("code") == code)


def test_incremental_totals_equal_a_rebuild_from_the_ledger(hq_ledger):
    incremental = (_table(CommunityDailyTotal), _table(CompanyDailyTotal))
    assert incremental[0] and incremental[1]
    rebuild_daily_totals(db.session.connection())
    db.session.commit()
    assert (_table(CommunityDailyTotal), _table(CompanyDailyTotal)) == incremental


def test_company_figures_match_the_collection_summary(hq_ledger, login):
    client = login("hq_auditor")
    data = client.get(f"/hq/dashboard/companies.json?season={SEASON}").get_json()
    summary = {r["code"]: r for r in collection_summary(SEASON)["companies"]}
    for code in ("TJ", "QD"):
        row = _row(data, code)
        assert row["receivable"] == summary[code]["receivable"]
        assert row["received"] == summary[code]["received"]
        assert row["collection_rate"] == summary[code]["collection_rate"]
    assert _row(data, "TJ")["received"] == "300.00"
    group = data["rows"][-1]
    assert group["name"] == "集团合计"
    assert Decimal(group["receivable"]) == sum(Decimal(summary[c]["receivable"]) for c in summary)


def test_as_of_yesterday_leaves_out_todays_payments(hq_ledger, login):
    client = login("hq_auditor")
    yesterday = (today() - timedelta(days=1)).isoformat()
    now = client.get(f"/hq/dashboard/companies.json?season={SEASON}").get_json()
    before = client.get(f"/hq/dashboard/companies.json?season={SEASON}&as_of={yesterday}").get_json()
    assert _row(now, "TJ")["received"] == "300.00"
    assert _row(before, "TJ")["received"] == "0.00"
    assert _row(before, "TJ")["receivable"] == _row(now, "TJ")["receivable"] or local_time(hq_ledger["two_days_ago"]).date() < today()
    long_ago = client.get(f"/hq/dashboard/waivers.json?season={SEASON}&as_of=2025-01-01").get_json()
    assert _row(long_ago, "QD")["amount"] == "0.00"


def test_waivers_are_counted_and_the_outlier_flagged(hq_ledger, login):
    client = login("hq_auditor")
    data = client.get(f"/hq/dashboard/waivers.json?season={SEASON}").get_json()
    assert _row(data, "QD")["amount"] == "1500.00"
    assert _row(data, "QD")["count"] == 5
    assert _row(data, "TJ")["amount"] == "50.00"
    assert _row(data, "TJ")["count"] == 1
    assert _row(data, "QD")["outlier"] is True
    assert _row(data, "TJ")["outlier"] is False
    assert "3.5" in data["rule"]
    # No late fee was posted or waived, so the late-fee rate has no base.
    assert _row(data, "QD")["late_fee_waiver_amount"] == "0.00"
    assert _row(data, "QD")["late_fee_waiver_count"] == 0
    assert _row(data, "QD")["late_fee_waiver_rate"] is None


def test_robust_z_score_uses_the_median_absolute_deviation():
    scores = robust_z_scores([Decimal("1.0"), Decimal("1.1"), Decimal("0.9"), Decimal("10"), None])
    assert scores[4] is None
    assert scores[3] > Decimal("3.5")
    assert all(abs(z) < Decimal("1.5") for z in scores[:3])
    # More than half equal: the MAD is 0 and the mean absolute deviation takes over.
    assert robust_z_scores([Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(20)])[4] == Decimal("3.99")
    assert robust_z_scores([Decimal(2), Decimal(2)]) == [Decimal(0), Decimal(0)]


def test_robust_z_score_bounded():
    # The spread of the first three is 1e-27, so the last rate is about 1e30 spreads away:
    # more digits than Decimal's 28 can round to 0.01.
    rates = [Decimal("1"), Decimal("1.000000000000000000000000001"), Decimal("1.000000000000000000000000002"), Decimal("1000")]
    scores = robust_z_scores(rates)
    assert scores[3] == Decimal("9999.99")
    assert abs(scores[0]) < 2


def test_arrears_split_by_age_and_category_add_up(hq_ledger, login):
    client = login("hq_auditor")
    data = client.get(f"/hq/dashboard/arrears.json?season={SEASON}").get_json()
    companies = client.get(f"/hq/dashboard/companies.json?season={SEASON}").get_json()
    tj = _row(data, "TJ")
    ages = sum(Decimal(tj[k]) for k in ("current", "previous", "older"))
    categories = sum(Decimal(tj[k]) for k in ("residential", "low_income", "non_residential"))
    assert ages == categories == Decimal(tj["total"]) == Decimal(_row(companies, "TJ")["all_arrears"])
    assert Decimal(tj["current"]) == Decimal(_row(companies, "TJ")["arrears"])


def test_drill_down_to_account_adds_up(hq_ledger, login, demo):
    client = login("hq_auditor")
    company = _row(client.get(f"/hq/dashboard/companies.json?season={SEASON}").get_json(), "TJ")
    communities = client.get(f"/hq/dashboard/companies/TJ.json?season={SEASON}").get_json()
    assert sum(Decimal(r["receivable"]) for r in communities["rows"]) == Decimal(company["receivable"])
    assert sum(Decimal(r["received"]) for r in communities["rows"]) == Decimal("300.00")
    paid = hq_ledger["paid"][0]
    community_id = db.session.scalar(
        sa.select(Building.community_id).join(Unit, Unit.building_id == Building.id).where(Unit.id == paid.unit_id)
    )
    community = next(r for r in communities["rows"] if r["id"] == community_id)
    accounts = client.get(f"/hq/dashboard/companies/TJ/communities/{community_id}.json?season={SEASON}").get_json()
    assert sum(Decimal(r["receivable"]) for r in accounts["rows"]) == Decimal(community["receivable"])
    assert sum(Decimal(r["received"]) for r in accounts["rows"]) == Decimal(community["received"])
    row = next(r for r in accounts["rows"] if r["account_no"] == paid.account_no)
    assert row["received"] == "100.00"
    page = client.get(f"/hq/dashboard/companies/TJ/communities/{community_id}?season={SEASON}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    # The page lists the 200 accounts with the largest arrears, the first one first.
    assert f'href="/accounts/{accounts["rows"][0]["id"]}"' in text
    assert text.count('data-id="') == min(200, len(accounts["rows"]))
    assert client.get(f"/hq/dashboard/companies/TJ/communities/{community_id + 10_000}").status_code == 404
    assert client.get("/hq/dashboard/companies/XX").status_code == 404


@pytest.mark.parametrize("view", GROUP_VIEWS)
def test_each_view_exports_the_figures_it_shows(hq_ledger, login, view):
    client = login("hq_auditor")
    data = client.get(f"/hq/dashboard/{view}.json?season={SEASON}").get_json()
    response = client.get(f"/hq/dashboard/{view}.xlsx?season={SEASON}")
    assert response.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(response.data)).active
    values = list(sheet.values)
    header = [label for _key, label in data["columns"]]
    start = values.index(tuple(header)) + 1
    exported = values[start:]
    assert len(exported) == len(data["rows"])
    for row, cells in zip(data["rows"], exported):
        for (key, _label), cell in zip(data["columns"], cells):
            expected = row[key]
            if expected is None or expected == "":
                assert cell in (None, "")
            elif isinstance(expected, str) and expected.replace(".", "", 1).lstrip("-").isdigit() and "." in expected:
                assert Decimal(str(cell)).quantize(Decimal("0.01")) == Decimal(expected).quantize(Decimal("0.01"))
            else:
                assert cell == expected


def test_dashboard_page_shows_every_chart(hq_ledger, login):
    client = login("hq_auditor")
    page = client.get("/hq/dashboard").get_data(as_text=True)
    for chart in ("collection", "arrears", "waivers", "processes"):
        assert f'data-chart="{chart}"' in page
    assert 'id="hq-chart-data"' in page
    assert "集团看板" in page
    assert "/hq/dashboard/companies/TJ?" in page


@pytest.mark.parametrize("url", [
    "/hq/dashboard", "/hq/dashboard/companies.json", "/hq/dashboard/waivers.xlsx", "/hq/dashboard/companies/TJ",
    "/hq/dashboard/companies/TJ.json", "/hq/audit",
])
def test_company_users_are_refused(demo, login, url):
    assert login("tj_admin").get(url).status_code == 403


@pytest.mark.parametrize("query, message", [
    ("as_of=2026-13-01", "截止日期「2026-13-01」无效"),
    ("season=2025", "供暖季「2025」无效"),
])
def test_bad_period_is_named_in_400(demo, login, query, message):
    response = login("hq_auditor").get(f"/hq/dashboard/companies.json?{query}")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


@pytest.mark.parametrize("as_of", ["0001-01-01", "0002-03-01", "1899-12-31", "9999-12-31"])
@pytest.mark.parametrize("url", [
    "/hq/dashboard", "/hq/dashboard/companies.json", "/hq/dashboard/collection.json", "/hq/dashboard/processes.xlsx",
    "/hq/dashboard/companies/TJ", "/hq/dashboard/companies/TJ.json",
])
def test_far_as_of_date_is_refused_with_400(demo, login, url, as_of):
    response = login("hq_auditor").get(f"{url}?as_of={as_of}")
    assert response.status_code == 400
    assert f"截止日期「{as_of}」超出范围" in response.get_data(as_text=True)


def test_accounts_only_count_in_their_own_company(hq_ledger):
    tj_accounts = db.session.scalar(sa.select(sa.func.count()).select_from(Account).where(Account.company_id == hq_ledger["paid"][0].company_id))
    charges = db.session.scalar(
        sa.select(sa.func.sum(CompanyDailyTotal.entries)).where(
            CompanyDailyTotal.company_id == hq_ledger["paid"][0].company_id, CompanyDailyTotal.kind == "charge"
        )
    )
    assert 0 < charges <= tj_accounts


def test_rebuild_command_recomputes_same_totals(hq_ledger, app):
    before = (_table(CommunityDailyTotal), _table(CompanyDailyTotal))
    db.session.execute(CommunityDailyTotal.__table__.delete())
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["heat", "hq-rebuild-totals"])
    assert result.exit_code == 0, result.output
    assert f"{len(before[0])} community-day rows" in result.output
    db.session.expire_all()
    assert (_table(CommunityDailyTotal), _table(CompanyDailyTotal)) == before
