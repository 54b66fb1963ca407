"""Onboarding an acquired company: create it from the group template, keep its legacy
wording and account numbers, import its ledgers and bill its first season.

The group template is what every subsidiary starts with: the default roles and their
permissions, every function except HQ supervision, the six process models with their
escalation rules, a tariff skeleton (the charge-area rules, plus the prices the operator
gives) and an invoice method.
"""

import logging
import secrets
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import join_items
from app.ledger.models import LedgerValueMap
from app.ledger.parser import (
    CODED_FIELDS,
    LedgerFileError,
    parse_ledger,
    scan_coded_values,
)
from app.ledger.services import company_value_maps
from app.org.audit import record_event
from app.processes.calendar import seed_calendar
from app.org.models import Company, CompanyFunction, Group, Role, User, UserRole
from app.org.permissions import DEFAULT_COMPANY_ROLES, FUNCTIONS
from app.org.services import hash_password
from app.processes.deployment import install_demo_processes
from app.tariffs.models import ChargeAreaRule, Season, Tariff, TariffPrice

logger = logging.getLogger(__name__)

# Functions a new subsidiary receives; HQ supervision stays with headquarters.
TEMPLATE_FUNCTIONS = [function for function in FUNCTIONS if function != "hq"]
ADMIN_ROLE = "company_admin"


class OnboardingError(ValueError):
    """An onboarding step that cannot be carried out as requested."""


@dataclass
class OnboardedCompany:
    """The new company, its administrator and the one-time password to hand over."""

    company: Company
    admin: User
    admin_password: str
    value_maps: dict = field(default_factory=dict)


def _group_for(actor):
    if actor is not None:
        return actor.company.group
    groups = db.session.scalars(sa.select(Group).order_by(Group.id).limit(2)).all()
    if not groups:
        raise OnboardingError(_("还没有集团；请先创建集团（演示环境运行 flask heat demo）。"))
    if len(groups) > 1:
        raise OnboardingError(_("库中有多个集团；请由集团管理员在网页上接入新公司。"))
    return groups[0]


def check_free(spec):
    """Raise OnboardingError when the spec's company code or number, or its administrator's login, is taken."""
    code, number, username = spec.company["code"], spec.company["number"], spec.admin["username"]
    if db.session.scalar(sa.select(Company.id).filter_by(code=code)) is not None:
        raise OnboardingError(_("公司代码 %(code)s 已被使用；请换一个代码。", code=code))
    taken = db.session.scalar(sa.select(Company.code).filter_by(number=number))
    if taken is not None:
        raise OnboardingError(_("公司编号 %(number)s 已被公司 %(company)s 使用；统一户号前缀不能重复，请换一个编号。", number=number, company=taken))
    if db.session.scalar(sa.select(User.id).filter_by(username=username)) is not None:
        raise OnboardingError(_("登录名 %(username)s 已被使用；请换一个登录名。", username=username))
    user_no = f"{number}0001"
    if db.session.scalar(sa.select(User.id).filter_by(user_no=user_no)) is not None:
        raise OnboardingError(_("人员编号 %(user_no)s 已被使用；请换一个公司编号。", user_no=user_no))


def _install_roles(company):
    roles = {}
    for code, (name, permissions) in DEFAULT_COMPANY_ROLES.items():
        role = Role(company_id=company.id, code=code, name=name, permissions=list(permissions))
        db.session.add(role)
        roles[code] = role
    db.session.flush()
    return roles


def _install_season(company, season_spec):
    season = Season(
        company_id=company.id, name=season_spec["name"], start_on=season_spec["start_on"], end_on=season_spec["end_on"],
        statutory_days=(season_spec["end_on"] - season_spec["start_on"]).days + 1,
    )
    db.session.add(season)
    db.session.flush()
    tariff = Tariff(
        company_id=company.id, season_id=season.id, effective_from=season.start_on,
        suspension_ratio=season_spec["suspension_ratio"],
        late_fee_starts_after=season_spec["late_fee_starts_after"],
        late_fee_rate_per_day=season_spec["late_fee_rate_per_day"],
    )
    db.session.add(tariff)
    db.session.flush()
    for price in season_spec["prices"]:
        db.session.add(TariffPrice(company_id=company.id, tariff_id=tariff.id, **price))
    for rule in season_spec["area_rules"]:
        db.session.add(ChargeAreaRule(company_id=company.id, tariff_id=tariff.id, **rule))
    return season


def save_value_maps(company, value_maps, actor=None):
    """Add or change a company's own ledger wording; returns the number of rows written.

    `value_maps` is {field: {ledger text: code}}; a text already mapped to another code
    is re-pointed, which changes only later imports.
    """
    written = 0
    existing = {
        (row.field, row.ledger_text): row
        for row in db.session.scalars(sa.select(LedgerValueMap).filter_by(company_id=company.id))
    }
    for field_name, mapping in value_maps.items():
        if field_name not in CODED_FIELDS:
            raise OnboardingError(_("旧系统编码映射只能用于：%(fields)s；%(field)s 无效。", fields=join_items(CODED_FIELDS), field=field_name))
        codes = set(CODED_FIELDS[field_name].values())
        for text, code in mapping.items():
            if code not in codes:
                raise OnboardingError(_("「%(text)s」映射到的编码 %(code)s 无效，应为：%(codes)s。", text=text, code=code, codes=join_items(sorted(codes))))
            row = existing.get((field_name, text))
            if row is None:
                db.session.add(LedgerValueMap(company_id=company.id, field=field_name, ledger_text=text, code=code))
                written += 1
            elif row.code != code:
                row.code = code
                written += 1
    if written:
        record_event("value_maps_changed", company_id=company.id, actor=actor, maps=value_maps)
    return written


def onboard_company(spec, actor=None):
    """Create a subsidiary from the group template and `spec` in one transaction.

    Returns OnboardedCompany with a generated password for the company administrator,
    who is asked for nothing else; nothing is stored when any step fails.
    """
    check_free(spec)
    group = _group_for(actor)
    try:
        company = Company(group_id=group.id, **spec.company)
        db.session.add(company)
        db.session.flush()
        for function in TEMPLATE_FUNCTIONS:
            db.session.add(CompanyFunction(company_id=company.id, function=function, granted_by_id=actor.id if actor else None))
        roles = _install_roles(company)
        password = secrets.token_urlsafe(12)
        admin = User(
            company_id=company.id, username=spec.admin["username"], name=spec.admin["name"],
            user_no=f"{company.number}0001", password_hash=hash_password(password),
        )
        db.session.add(admin)
        db.session.flush()
        db.session.add(UserRole(company_id=company.id, user_id=admin.id, role_id=roles[ADMIN_ROLE].id))
        _install_season(company, spec.season)
        save_value_maps(company, spec.legacy_values, actor=actor)
        install_demo_processes([company])
        seed_calendar(company.id, user=actor)
        record_event("company_onboarded", company_id=company.id, actor=actor, code=company.code, number=company.number)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    logger.info("Company %s (%s) onboarded with administrator %s", company.code, company.number, admin.username)
    return OnboardedCompany(company=company, admin=admin, admin_password=password, value_maps=spec.legacy_values)


def unmapped_value_messages(filename, unknown):
    """Describe each unknown ledger text with the line that maps it in a specification file."""
    messages = []
    for field_name, texts in unknown.items():
        for text, (count, first_row) in sorted(texts.items(), key=lambda item: item[1][1]):
            messages.append(_(
                "%(filename)s: 列 %(field)s 的值「%(text)s」无法识别（%(count)s 行，首见第 %(row)s 行）；"
                "请在规格文件 [legacy_values.%(field)s] 中写明它对应的编码，如 \"%(text)s\" = \"%(example)s\"。",
                filename=filename, field=field_name, text=text, count=count, row=first_row, example=_example_code(field_name),
            ))
    return messages


def _example_code(field_name):
    return next(iter(CODED_FIELDS[field_name].values()))


def preflight_ledger(filename, content, value_maps, max_rows=200_000):
    """Return the messages that would stop `content` from importing with `value_maps`; [] when it would import.

    Runs the parser only, so an acquired company's ledgers are checked before anything
    is created for it.
    """
    try:
        unknown = scan_coded_values(content, max_rows=max_rows, value_maps=value_maps)
        if any(unknown.values()):
            return unmapped_value_messages(filename, unknown)
        parsed = parse_ledger(content, max_rows=max_rows, value_maps=value_maps)
    except LedgerFileError as error:
        return [f"{filename}: {error}"]
    if parsed.errors:
        return [f"{filename}: {error.message()}" for error in parsed.errors]
    if not parsed.rows:
        return [_("%(filename)s: 台账只有表头，没有数据行。", filename=filename)]
    return []


def hold_or_queue(job, company):
    """Return the unknown coded texts of an uploaded ledger, and mark the job held or queued.

    A ledger that still has texts the company has not mapped waits ("held") until an
    operator maps them; otherwise it is queued for import.
    """
    try:
        unknown = scan_coded_values(job.content, value_maps=company_value_maps(company.id))
    except LedgerFileError:
        # The import itself reports a file that is no ledger, with the usual row report.
        unknown = {}
    job.status = "held" if any(unknown.values()) else "queued"
    return unknown
