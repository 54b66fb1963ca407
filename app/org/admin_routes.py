"""Administration pages: function grants (group), roles and role assignments (company), audit log."""

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.extensions import db
from app.ids import parse_row_id
from app.org.admin import (
    RoleError,
    companies_with_functions,
    company_users,
    grantable_permissions,
    save_role,
    set_company_functions,
    set_user_roles,
)
from app.org.audit import EVENT_LABELS, AuthEvent
from app.org.models import Company, Role, User
from app.org.permissions import FUNCTIONS, PERMISSIONS
from app.org.services import AccessError, has_permission

bp = Blueprint("admin", __name__, url_prefix="/admin")

# Audit entries per page of /admin/audit.
AUDIT_PAGE_SIZE = 100


@bp.route("/companies", methods=["GET", "POST"])
@login_required
def companies():
    """Group administrators grant functions to each subsidiary."""
    if not has_permission(current_user, "company.manage"):
        abort(403, _("只有集团管理员可以分配分公司功能。"))
    if request.method == "POST":
        company = db.session.scalar(sa.select(Company).filter_by(id=parse_row_id(request.form.get("company_id"))))
        if company is None:
            abort(404, _("未找到该公司。"))
        try:
            set_company_functions(current_user, company, request.form.getlist("functions"))
        except (RoleError, AccessError) as error:
            flash(str(error), "error")
        else:
            flash(_("已更新 %(company)s 的功能授权。", company=company.name), "success")
        return redirect(url_for("admin.companies"))
    return render_template("admin/companies.html", rows=companies_with_functions(), functions=FUNCTIONS)


@bp.route("/roles", methods=["GET", "POST"])
@login_required
def roles():
    """Company administrators define roles and assign them to their staff."""
    if not has_permission(current_user, "role.manage"):
        abort(403, _("您没有管理角色的权限。"))
    if request.method == "POST":
        role = None
        role_id = parse_row_id(request.form.get("role_id"))
        if role_id is None and (request.form.get("role_id") or "").strip():
            abort(404, _("未找到该角色。"))
        if role_id:
            role = db.session.scalar(sa.select(Role).filter_by(id=role_id, company_id=current_user.company_id))
            if role is None:
                abort(404, _("未找到该角色。"))
        try:
            save_role(current_user, request.form.get("code"), request.form.get("name"), request.form.getlist("permissions"), role)
        except (RoleError, AccessError) as error:
            db.session.rollback()
            flash(str(error), "error")
        else:
            flash(_("角色已保存。"), "success")
        return redirect(url_for("admin.roles"))
    company_roles = db.session.scalars(sa.select(Role).filter_by(company_id=current_user.company_id).order_by(Role.id)).all()
    return render_template(
        "admin/roles.html", roles=company_roles, users=company_users(current_user.company_id),
        permissions=PERMISSIONS, grantable=grantable_permissions(current_user),
    )


@bp.route("/users/<int:user_id>/roles", methods=["POST"])
@login_required
def user_roles(user_id):
    """Replace the roles of one user of the administrator's company."""
    if not has_permission(current_user, "role.manage"):
        abort(403, _("您没有管理角色的权限。"))
    user = db.session.scalar(sa.select(User).filter_by(id=user_id, company_id=current_user.company_id))
    if user is None:
        abort(404, _("未找到该用户，或该用户不属于您的公司。"))
    role_ids = [role_id for role_id in map(parse_row_id, request.form.getlist("role_ids")) if role_id is not None]
    try:
        set_user_roles(current_user, user, role_ids)
    except (RoleError, AccessError) as error:
        db.session.rollback()
        flash(str(error), "error")
    else:
        flash(_("已更新 %(name)s 的角色。", name=user.name), "success")
    return redirect(url_for("admin.roles"))


def _may_read_audit(user):
    """Group administrators read every company's entries; company administrators their own.

    A headquarters user sees every company, so role.manage alone is not enough there.
    """
    if user.company.is_headquarters:
        return has_permission(user, "company.manage")
    return has_permission(user, "role.manage")


@bp.route("/audit")
@login_required
def audit():
    """Security audit log, newest first; the tenant scope limits company administrators to their company."""
    if not _may_read_audit(current_user):
        abort(403, _("只有集团管理员和分公司管理员可以查看安全审计记录。"))
    event = request.args.get("event", "")
    page = min(max(request.args.get("page", 1, type=int), 1), 10_000)
    query = sa.select(AuthEvent).order_by(AuthEvent.at.desc(), AuthEvent.id.desc())
    if event in EVENT_LABELS:
        query = query.filter_by(event=event)
    # Fetching one row more than a page shows whether a next page exists.
    rows = db.session.scalars(query.offset((page - 1) * AUDIT_PAGE_SIZE).limit(AUDIT_PAGE_SIZE + 1)).all()
    return render_template(
        "admin/audit.html", events=rows[:AUDIT_PAGE_SIZE], has_next=len(rows) > AUDIT_PAGE_SIZE,
        page=page, event=event, labels=EVENT_LABELS,
    )
