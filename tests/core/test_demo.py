"""The demo group carries exactly the 2025-2026 tariffs of the group's policy file."""

import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.models import Role, User, UserRole
from app.org.permissions import DEFAULT_COMPANY_ROLES, DEFAULT_HQ_ROLES
from app.tariffs.services import get_season, tariff_in_force
from tests.conftest import FIXTURES

POLICIES = json.loads((FIXTURES / "policies.json").read_text())
SUBSIDIARIES = {s["code"]: s for s in POLICIES["subsidiaries"]}
CATEGORY = {"居民": ("residential", ""), "非居民": ("non_residential", ""), "居民(燃气锅炉)": ("residential", "燃气锅炉")}


@pytest.mark.parametrize("code", sorted(SUBSIDIARIES))
def test_demo_tariff_matches_policy(demo, code):
    policy = SUBSIDIARIES[code]
    company = demo[code]
    season = get_season(company.id, POLICIES["season"])
    tariff = tariff_in_force(season)

    prices = {(p.category, p.heat_source_kind): p.unit_price for p in tariff.prices}
    expected_prices = {CATEGORY[label]: Decimal(value) for label, value in policy["prices"].items()}

    assert company.number == policy["number"]
    assert company.name == policy["name"]
    assert company.city == policy["city"]
    assert season.start_on.isoformat() == policy["season_start"]
    assert season.end_on.isoformat() == policy["season_end"]
    assert season.statutory_days == (season.end_on - season.start_on).days + 1
    assert prices == expected_prices
    assert tariff.suspension_ratio == Decimal(policy["suspension_ratio"])
    if policy["late_fee"]:
        assert tariff.late_fee_starts_after.isoformat() == policy["late_fee"]["starts_after"]
        assert tariff.late_fee_rate_per_day == Decimal(policy["late_fee"]["rate_per_day"])
    else:
        assert tariff.late_fee_rate_per_day is None
    if policy.get("metered_two_part"):
        assert tariff.metered_base_per_m2 == Decimal(policy["metered_two_part"]["base_per_m2"])
        assert tariff.metered_per_gj == Decimal(policy["metered_two_part"]["per_gj"])


def test_statutory_days_per_city(demo):
    assert get_season(demo["TJ"].id, "2025-2026").statutory_days == 121
    assert get_season(demo["QD"].id, "2025-2026").statutory_days == 141


def test_demo_user_for_every_role(demo):
    roles = db.session.execute(
        sa.select(Role.company_id, Role.code, sa.func.count(UserRole.id))
        .join(UserRole, UserRole.role_id == Role.id)
        .group_by(Role.company_id, Role.code)
    ).all()
    covered = {(company_id, code) for company_id, code, users in roles if users >= 1}

    for company in demo.values():
        for code in DEFAULT_COMPANY_ROLES:
            assert (company.id, code) in covered, (company.code, code)
    hq_company_id = db.session.scalar(sa.select(User.company_id).filter_by(username="hq_admin"))
    for code in DEFAULT_HQ_ROLES:
        assert (hq_company_id, code) in covered, code


@pytest.mark.parametrize("username, name", [
    ("tj_clerk", "津南热力营业员"),
    ("qd_clerk", "胶州湾热电营业员"),
    ("sjz_cashier", "石门热力收费员"),
    ("bj_approver", "京西供热分公司审批人"),
    ("hq_approver", "北方热力集团审批人"),
])
def test_demo_user_names(demo, username, name):
    assert db.session.scalar(sa.select(User.name).where(User.username == username)) == name
