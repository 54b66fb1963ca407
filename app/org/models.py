"""Group, companies, users and roles."""

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa
from flask_login import UserMixin

from app.extensions import db
from app.money import Money
from app.tenancy import CompanyOwned


def utcnow():
    return datetime.now(timezone.utc)


class Group(db.Model):
    """The heating group (集团) that owns the platform and sets group-wide rules."""

    id = sa.Column(sa.Integer, primary_key=True)
    code = sa.Column(sa.String(16), nullable=False, unique=True)
    name = sa.Column(sa.String(100), nullable=False)
    # Precision rule of every amount the platform computes: the quantum in yuan (0.01, 0.1 or 1)
    # and the rounding mode (half_up or half_even). Read through app/billing/precision.py.
    money_quantum = sa.Column(Money(), nullable=False, default=Decimal("0.01"))
    money_rounding = sa.Column(sa.String(16), nullable=False, default="half_up")


class Company(db.Model):
    """A company of the group: a subsidiary (the tenant) or the headquarters itself."""

    id = sa.Column(sa.Integer, primary_key=True)
    group_id = sa.Column(sa.Integer, sa.ForeignKey("group.id"), nullable=False)
    code = sa.Column(sa.String(16), nullable=False, unique=True)
    # Two-digit prefix of every unified account number of this company.
    number = sa.Column(sa.String(2), nullable=False, unique=True)
    name = sa.Column(sa.String(100), nullable=False)
    city = sa.Column(sa.String(50), nullable=False, default="")
    is_headquarters = sa.Column(sa.Boolean, nullable=False, default=False)
    invoice_mode = sa.Column(sa.String(32), nullable=False, default="receipt")
    # When true, a refund waits for a user with payment.refund_approve other than the requester.
    refund_requires_approval = sa.Column(sa.Boolean, nullable=False, default=False)
    # Set to a new random value on every ORM write of the company's timer settings or working
    # calendar (app.processes.timers), so a worker process can tell whether its copy of them
    # is current. A counter could repeat after a restore from backup; a random value does not.
    # Empty means unknown. NOTE: raw SQL writes to those tables leave it unchanged.
    timing_stamp = sa.Column(sa.String(32), nullable=False, default=lambda: uuid.uuid4().hex, server_default="")
    # Stamps of the same kind for the company's tariffs with their prices and area rules
    # (app.tariffs.rates) and for its roles, role assignments and granted functions
    # (app.processes.access), renewed through app.stamps.CompanyStamp.
    tariff_stamp = sa.Column(sa.String(32), nullable=False, default=lambda: uuid.uuid4().hex, server_default="")
    rights_stamp = sa.Column(sa.String(32), nullable=False, default=lambda: uuid.uuid4().hex, server_default="")

    group = db.relationship(Group)


class CompanyFunction(CompanyOwned, db.Model):
    """A function (module) the group has granted to a company."""

    __table_args__ = (sa.UniqueConstraint("company_id", "function"),)

    id = sa.Column(sa.Integer, primary_key=True)
    function = sa.Column(sa.String(32), nullable=False)
    granted_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    granted_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class Role(CompanyOwned, db.Model):
    """A named permission set, defined by a company for its own staff."""

    __table_args__ = (sa.UniqueConstraint("company_id", "code"),)

    id = sa.Column(sa.Integer, primary_key=True)
    code = sa.Column(sa.String(32), nullable=False)
    name = sa.Column(sa.String(64), nullable=False)
    permissions = sa.Column(sa.JSON, nullable=False, default=list)


class User(UserMixin, CompanyOwned, db.Model):
    """A staff member of one company, seen only within the tenant scope like company data.

    Login names and staff numbers are unique across the group because one login page
    serves every company; the staff number starts with the company number.
    """

    id = sa.Column(sa.Integer, primary_key=True)
    # Unified staff number: company number + 4 digits, e.g. 110003.
    user_no = sa.Column(sa.String(6), nullable=False, unique=True)
    username = sa.Column(sa.String(64), nullable=False, unique=True)
    name = sa.Column(sa.String(64), nullable=False)
    password_hash = sa.Column(sa.String(255), nullable=False)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # Interface language the user chose (a key of app.i18n.LANGUAGES); None until they choose,
    # and then the login page's cookie or zh_CN applies.
    locale = sa.Column(sa.String(8), nullable=True)

    company = db.relationship(Company)

    @property
    def is_active(self):
        return self.active


class UserRole(CompanyOwned, db.Model):
    """Assignment of a role of one company to a user."""

    __table_args__ = (sa.UniqueConstraint("company_id", "user_id", "role_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=False)
    role_id = sa.Column(sa.Integer, sa.ForeignKey("role.id"), nullable=False)

    role = db.relationship(Role)
