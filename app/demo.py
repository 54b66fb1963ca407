"""The demo group NHG: four companies with their 2025-2026 tariffs, roles and one user per role.

The tariff figures are those of the group's policy file for season 2025-2026. Running the
setup twice changes nothing: every row is looked up by its natural key first.
"""

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from app.extensions import db
from app.org.models import Company, CompanyFunction, Group, Role, User, UserRole
from app.org.permissions import DEFAULT_COMPANY_ROLES, DEFAULT_HQ_ROLES, FUNCTIONS
from app.org.services import hash_password
from app.processes.calendar import seed_calendar
from app.processes.deployment import install_demo_processes
from app.tariffs.models import ChargeAreaRule, Season, Tariff, TariffPrice

DEMO_PASSWORD = "heatflow-demo"
D = Decimal

HEADQUARTERS = {"code": "HQ", "number": "10", "name": "北方热力集团总部", "city": "北京"}

# code, number, name, city, invoice mode, season start/end, suspension ratio,
# prices {(category, heat source kind): price}, area rules {category: (basis, factor, lift, fallback)},
# late fee (starts after, rate per day) or None, metered (base per m², per GJ) or None.
COMPANIES = [
    {
        "code": "TJ", "number": "11", "name": "津南热力有限公司", "city": "天津", "invoice_mode": "e_invoice",
        "season": (date(2025, 11, 15), date(2026, 3, 15)), "suspension_ratio": D("0.20"),
        "prices": {("residential", ""): D("25.00"), ("non_residential", ""): D("40.00")},
        "area_rules": {"residential": ("building_area", D(1), None, None), "non_residential": ("building_area", D(1), None, None)},
        "late_fee": (date(2025, 12, 31), D("0.002")), "metered": None,
    },
    {
        "code": "QD", "number": "12", "name": "胶州湾热电有限公司", "city": "青岛", "invoice_mode": "paper_tax_invoice",
        "season": (date(2025, 11, 16), date(2026, 4, 5)), "suspension_ratio": D("0.30"),
        "prices": {("residential", ""): D("30.40"), ("non_residential", ""): D("33.06")},
        "area_rules": {"residential": ("usable_area", D(1), None, D("0.75")), "non_residential": ("building_area", D(1), None, None)},
        "late_fee": None, "metered": (D("9.00"), D("41.73")),
    },
    {
        "code": "SJZ", "number": "13", "name": "石门热力有限公司", "city": "石家庄", "invoice_mode": "receipt",
        "season": (date(2025, 11, 15), date(2026, 3, 15)), "suspension_ratio": D("0.00"),
        "prices": {("residential", ""): D("22.00"), ("non_residential", ""): D("31.00")},
        "area_rules": {"residential": ("building_area", D("0.90"), D("0.85"), None), "non_residential": ("building_area", D(1), None, None)},
        "late_fee": None, "metered": None,
    },
    {
        "code": "BJ", "number": "14", "name": "京西供热有限公司", "city": "北京", "invoice_mode": "e_invoice",
        "season": (date(2025, 11, 15), date(2026, 3, 15)), "suspension_ratio": D("0.30"),
        "prices": {("residential", ""): D("24.00"), ("residential", "燃气锅炉"): D("30.00"), ("non_residential", ""): D("45.00")},
        "area_rules": {"residential": ("building_area", D(1), None, None), "non_residential": ("building_area", D(1), None, None)},
        "late_fee": None, "metered": None,
    },
]
SEASON_NAME = "2025-2026"

# username suffix per role
ROLE_USERNAMES = {
    "company_admin": "admin", "clerk": "clerk", "company_approver": "approver", "cashier": "cashier", "field_staff": "field",
    "finance": "finance",
    "group_admin": "admin", "group_approver": "approver", "hq_auditor": "auditor",
}


def _get_or_create(model, defaults=None, **keys):
    row = db.session.scalar(sa.select(model).filter_by(**keys))
    if row is None:
        row = model(**keys, **(defaults or {}))
        db.session.add(row)
        db.session.flush()
        return row, True
    return row, False


def _short_name(company):
    """Return the company name without 有限公司 (胶州湾热电), else its first four characters (北方热力)."""
    if company.name.endswith("有限公司"):
        return company.name.removesuffix("有限公司")
    return company.name[:4]


def _install_roles_and_users(company, role_table, prefix):
    for number, (code, (name, permissions)) in enumerate(role_table.items(), start=1):
        role, _ = _get_or_create(Role, {"name": name, "permissions": permissions}, company_id=company.id, code=code)
        username = f"{prefix}_{ROLE_USERNAMES[code]}"
        user = db.session.scalar(sa.select(User).filter_by(username=username))
        if user is None:
            user = User(
                company_id=company.id, username=username, name=f"{_short_name(company)}{name}",
                user_no=f"{company.number}{number:04d}", password_hash=hash_password(DEMO_PASSWORD),
            )
            db.session.add(user)
            db.session.flush()
        _get_or_create(UserRole, company_id=company.id, user_id=user.id, role_id=role.id)


def _install_tariff(company, spec):
    start, end = spec["season"]
    season, _ = _get_or_create(
        Season, {"start_on": start, "end_on": end, "statutory_days": (end - start).days + 1},
        company_id=company.id, name=SEASON_NAME,
    )
    tariff, created = _get_or_create(
        Tariff, {"suspension_ratio": spec["suspension_ratio"]}, company_id=company.id, season_id=season.id, effective_from=start
    )
    if not created:
        return
    if spec["late_fee"]:
        tariff.late_fee_starts_after, tariff.late_fee_rate_per_day = spec["late_fee"]
    if spec["metered"]:
        tariff.metered_base_per_m2, tariff.metered_per_gj = spec["metered"]
    for (category, kind), price in spec["prices"].items():
        db.session.add(TariffPrice(company_id=company.id, tariff_id=tariff.id, category=category, heat_source_kind=kind, unit_price=price))
    for category, (basis, factor, lift, fallback) in spec["area_rules"].items():
        db.session.add(
            ChargeAreaRule(
                company_id=company.id, tariff_id=tariff.id, category=category, basis=basis,
                factor=factor, lift_factor=lift, fallback_factor=fallback,
            )
        )


def install_demo():
    """Create or complete the demo group; returns the list of companies."""
    group, _ = _get_or_create(Group, {"name": "北方热力集团"}, code="NHG")
    headquarters, _ = _get_or_create(
        Company, {"group_id": group.id, "number": HEADQUARTERS["number"], "name": HEADQUARTERS["name"],
                  "city": HEADQUARTERS["city"], "is_headquarters": True},
        code=HEADQUARTERS["code"],
    )
    _install_roles_and_users(headquarters, DEFAULT_HQ_ROLES, "hq")
    companies = []
    for spec in COMPANIES:
        company, _ = _get_or_create(
            Company, {"group_id": group.id, "number": spec["number"], "name": spec["name"], "city": spec["city"],
                      "invoice_mode": spec["invoice_mode"]},
            code=spec["code"],
        )
        for function in FUNCTIONS:
            if function not in ("hq",):
                _get_or_create(CompanyFunction, company_id=company.id, function=function)
        _install_roles_and_users(company, DEFAULT_COMPANY_ROLES, spec["code"].lower())
        _install_tariff(company, spec)
        seed_calendar(company.id)
        companies.append(company)
    install_demo_processes(companies)
    db.session.commit()
    return companies
