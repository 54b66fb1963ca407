"""Users, roles and permissions: password hashing and what a user may see and do."""

import logging

import sqlalchemy as sa
from sqlalchemy.orm.util import identity_key
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_request_context, request
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import translate_label
from app.org.models import Company, CompanyFunction, Role, User, UserRole
from app.org.permissions import PERMISSIONS, READ_ONLY_PERMISSIONS
from app.stamps import CompanyStamp
from app.tenancy import SYSTEM_SCOPE, TenantScope, scoped

logger = logging.getLogger(__name__)


def _rights_companies(session, row):
    """Return the companies whose rights_stamp a write of `row` renews: its own and, for a UserRole, the user's."""
    if not isinstance(row, UserRole):
        return {row.company_id}
    user = session.identity_map.get(identity_key(User, row.user_id))
    if user is None:
        user_company = session.connection().scalar(sa.select(User.__table__.c.company_id).where(User.__table__.c.id == row.user_id))
    else:
        user_company = user.company_id
    return {row.company_id, user_company}


# Renewed by every ORM write of a role, a role assignment or a granted function. A process
# keeps a user's roles and the company's functions under it (app.processes.access).
RIGHTS_STAMP = CompanyStamp("rights_stamp", (Role, UserRole, CompanyFunction), affected_companies=_rights_companies)


def _hasher():
    """Return the argon2id hasher. Tests set ARGON2_FAST to keep thousands of logins quick."""
    if current_app.config.get("ARGON2_FAST"):
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


class AccessError(PermissionError):
    """The user lacks a permission, or the company lacks the function, for an action."""


def hash_password(password):
    """Return an argon2id hash of `password`."""
    return _hasher().hash(password)


def check_password(user, password):
    """True when `password` matches the user's hash; rehashes outdated parameters."""
    hasher = _hasher()
    try:
        hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return True


def find_user(username):
    """Return the user with this login name in any company, or None."""
    with scoped(SYSTEM_SCOPE):
        return db.session.scalar(sa.select(User).filter_by(username=username))


def authenticate(username, password):
    """Return the active user with these credentials, or None.

    An unknown username still costs one argon2 hash, so response times do not reveal
    which usernames exist.
    """
    user = find_user(username)
    if user is None:
        _hasher().hash(password)
        return None
    if not check_password(user, password) or not user.active:
        return None
    return user


def user_permissions(user):
    """Permissions the user's roles carry (before company function grants).

    Within a web request the result is cached for the rest of the request, because the
    navigation bar alone checks a dozen permissions on every page.
    """
    cache = request.environ.setdefault("heatflow.user_permissions", {}) if has_request_context() else {}
    if user.id in cache:
        return cache[user.id]
    with scoped(SYSTEM_SCOPE):
        roles = db.session.scalars(sa.select(Role).join(UserRole, UserRole.role_id == Role.id).where(UserRole.user_id == user.id))
        permissions = frozenset(permission for role in roles for permission in role.permissions)
    cache[user.id] = permissions
    return permissions


def granted_functions(company_id):
    """Functions the group has granted to a company."""
    with scoped(SYSTEM_SCOPE):
        return set(db.session.scalars(sa.select(CompanyFunction.function).filter_by(company_id=company_id)))


def all_company_ids():
    with scoped(SYSTEM_SCOPE):
        return frozenset(db.session.scalars(sa.select(Company.id)))


def scope_for(user):
    """Tenant scope of a logged-in user: own company for staff, every company for HQ.

    Headquarters users read every company; they write only when one of their roles holds
    a permission beyond reading (for example group approval).
    """
    company = user.company
    if company.is_headquarters:
        writes = user_permissions(user) - READ_ONLY_PERMISSIONS
        return TenantScope(visible=None, writable=None if writes else frozenset(), label=f"user:{user.id}")
    ids = frozenset([user.company_id])
    return TenantScope(visible=ids, writable=ids, label=f"user:{user.id}")


def has_permission(user, permission, company_id=None):
    """True when the user holds `permission` and the target company has its function.

    For company staff the target is their own company. For headquarters users the function
    check uses `company_id` when given.
    """
    if permission not in PERMISSIONS:
        raise KeyError(f"Unknown permission {permission}")
    if permission not in user_permissions(user):
        return False
    function = PERMISSIONS[permission][0]
    company = user.company
    if company.is_headquarters:
        if company_id is None or function in ("hq", "admin"):
            return True
        return function in granted_functions(company_id)
    if company_id is not None and company_id != company.id:
        return False
    return function in granted_functions(company.id)


def require_permission(user, permission, company_id=None):
    """Raise AccessError unless `has_permission`."""
    if not has_permission(user, permission, company_id):
        label = translate_label(PERMISSIONS[permission][1])
        raise AccessError(_("您没有该公司的“%(label)s”（%(permission)s）权限。", label=label, permission=permission))


def users_with_permission(company_id, permission):
    """Users who hold a permission, within a company (HQ permissions: within the HQ company)."""
    with scoped(SYSTEM_SCOPE):
        rows = db.session.scalars(
            sa.select(User).join(UserRole, UserRole.user_id == User.id).join(Role, Role.id == UserRole.role_id)
            .where(User.company_id == company_id)
        ).unique()
        return [u for u in rows if permission in user_permissions(u)]
