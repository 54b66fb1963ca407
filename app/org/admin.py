"""Administration services: function grants per company and roles per company."""

import logging

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import join_items
from app.org.audit import record_event
from app.org.models import Company, CompanyFunction, Role, User, UserRole
from app.org.permissions import FUNCTIONS, PERMISSIONS
from app.org.services import AccessError, granted_functions, require_permission, user_permissions
from app.texts import clean_text


logger = logging.getLogger(__name__)

# Permissions only the group may hold; no company role can carry them.
GROUP_ONLY_PERMISSIONS = {"company.manage", "hq.view", "process.group_approve"}


class RoleError(ValueError):
    """A role definition that cannot be saved as requested."""


def set_company_functions(admin, company, functions):
    """Replace the functions granted to a subsidiary (group administrators only)."""
    require_permission(admin, "company.manage")
    unknown = set(functions) - set(FUNCTIONS)
    if unknown:
        raise RoleError(_("未知的功能：%(functions)s。", functions=join_items(sorted(unknown))))
    if company.is_headquarters:
        raise RoleError(_("集团总部的功能是固定的；只能给分公司授权。"))
    current = {g.function: g for g in db.session.scalars(sa.select(CompanyFunction).filter_by(company_id=company.id))}
    added = set(functions) - set(current)
    removed = set(current) - set(functions)
    for function in added:
        db.session.add(CompanyFunction(company_id=company.id, function=function, granted_by_id=admin.id))
    for function in removed:
        db.session.delete(current[function])
    if added or removed:
        record_event("functions_changed", company_id=company.id, actor=admin, added=sorted(added), removed=sorted(removed))
    db.session.commit()
    logger.info("User %s set functions of company %s to %s", admin.id, company.code, sorted(functions))


def grantable_permissions(admin):
    """Permissions an administrator may put into roles of their own company.

    Only permissions the administrator holds themselves, whose function is granted to the
    company, and which are not reserved to headquarters (unless the company is HQ).
    """
    company = admin.company
    own = user_permissions(admin)
    if company.is_headquarters:
        return {p for p in PERMISSIONS if p in own}
    functions = granted_functions(company.id)
    return {
        p for p, (function, _label) in PERMISSIONS.items()
        if function in functions and p not in GROUP_ONLY_PERMISSIONS and (p in own or function != "admin")
    }


def save_role(admin, code, name, permissions, role=None):
    """Create or update a role of the administrator's company."""
    require_permission(admin, "role.manage")
    code = (code or "").strip()
    name = clean_text(name)
    if not code or not code.replace("_", "").isalnum() or not code.isascii():
        raise RoleError(_("角色代码「%(code)s」无效；只能用英文字母、数字和下划线，如 senior_cashier。", code=code))
    if not name:
        raise RoleError(_("请填写角色名称。"))
    allowed = grantable_permissions(admin)
    beyond = set(permissions) - allowed
    if beyond:
        raise AccessError(_("您不能授予这些权限：%(permissions)s。", permissions=join_items(sorted(beyond))))
    if role is None:
        clash = db.session.scalar(sa.select(Role.id).filter_by(company_id=admin.company_id, code=code))
        if clash:
            raise RoleError(_("本公司已有代码为 %(code)s 的角色；请换一个代码。", code=code))
        role = Role(company_id=admin.company_id, code=code, name=name, permissions=sorted(permissions))
        db.session.add(role)
        db.session.flush()
        record_event("role_created", actor=admin, company_id=role.company_id, role_id=role.id, code=code, name=name,
                     permissions=role.permissions)
    else:
        if role.company_id != admin.company_id:
            raise AccessError(_("不能修改其他公司的角色。"))
        before = {"name": role.name, "permissions": list(role.permissions)}
        role.name = name
        role.permissions = sorted(permissions)
        if before != {"name": role.name, "permissions": role.permissions}:
            record_event("role_changed", actor=admin, company_id=role.company_id, role_id=role.id, code=role.code,
                         before=before, after={"name": role.name, "permissions": role.permissions})
    db.session.commit()
    logger.info("User %s saved role %s of company %s with %s", admin.id, role.code, admin.company_id, role.permissions)
    return role


def set_user_roles(admin, user, role_ids):
    """Replace the roles of a user of the administrator's own company."""
    require_permission(admin, "role.manage")
    if user.company_id != admin.company_id:
        raise AccessError(_("不能修改其他公司的人员。"))
    roles = db.session.scalars(sa.select(Role).where(Role.company_id == admin.company_id, Role.id.in_(role_ids))).all()
    if len(roles) != len(set(role_ids)):
        raise RoleError(_("所选角色中有不属于本公司的角色。"))
    allowed = grantable_permissions(admin)
    for role in roles:
        if set(role.permissions) - allowed:
            raise AccessError(_("角色「%(role)s」包含您没有的权限，您不能分配它。", role=role.name))
    current = {ur.role_id: ur for ur in db.session.scalars(sa.select(UserRole).filter_by(user_id=user.id))}
    added = [role for role in roles if role.id not in current]
    removed = [link for role_id, link in current.items() if role_id not in {r.id for r in roles}]
    for role in added:
        db.session.add(UserRole(company_id=admin.company_id, user_id=user.id, role_id=role.id))
    for link in removed:
        db.session.delete(link)
    if added or removed:
        record_event("user_roles_changed", user=user, actor=admin, added=sorted(r.code for r in added),
                     removed=sorted(link.role.code for link in removed))
    db.session.commit()
    logger.info("User %s set roles of user %s to %s", admin.id, user.id, sorted(r.code for r in roles))


def companies_with_functions():
    """Subsidiaries with the set of functions granted to each."""
    companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)).all()
    return [(company, granted_functions(company.id)) for company in companies]


def company_users(company_id):
    """Users of a company with their role ids."""
    users = db.session.scalars(sa.select(User).filter_by(company_id=company_id).order_by(User.user_no)).all()
    links = db.session.execute(sa.select(UserRole.user_id, UserRole.role_id).filter_by(company_id=company_id)).all()
    roles_by_user = {}
    for user_id, role_id in links:
        roles_by_user.setdefault(user_id, set()).add(role_id)
    return [(user, roles_by_user.get(user.id, set())) for user in users]
