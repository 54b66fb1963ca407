"""Pages of the billing desk: collection work lists (清欠), write-offs (核销), retroactive
re-rating approvals, what-if runs of draft tariffs, meter-reading import and the payment
allocation order. Every page works on the signed-in user's own company."""

import logging
from datetime import date
from decimal import Decimal
from urllib.parse import quote

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.billing.arrears import (
    AGE_BUCKETS, ArrearsError, WorkListFilter, ageing_totals, assign_collector, export_work_list, parse_work_list_filter,
    work_list, write_off,
)
from app.billing.meter_import import MeterImportError, import_meter_readings
from app.billing.models import ALLOCATION_ORDERS, RERATE_CHANGE_KINDS, RERATE_STATUSES, AllocationPolicy, RerateChange, utcnow
from app.billing.rerating import RerateError, create_change, pending_tariff, post_change, proposal_total, reject_change
from app.billing.whatif import draft_from_form, export_what_if, run_what_if
from app.extensions import db
from app.i18n import join_items, translate_label
from app.network.models import BILLING_STATUSES, USER_TYPES, Account, Community
from app.network.terms import TermsError
from app.org.models import User
from app.org.services import has_permission
from app.payments.services import allocation_rule, amount_owed
from app.tariffs.editing import BASES, CATEGORIES, TariffEditError
from app.tariffs.models import Season
from app.tariffs.services import TariffError, tariff_in_force

logger = logging.getLogger(__name__)

bp = Blueprint("billing_desk", __name__, url_prefix="/billing")

XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Rows listed on the what-if and collection pages; their Excel exports have all of them.
WHAT_IF_PAGE_ROWS = 200
ARREARS_PAGE_ROWS = 200


def _require(*permissions):
    if not any(has_permission(current_user, permission) for permission in permissions):
        abort(403, _("您没有使用此功能的权限。"))


def _seasons():
    return db.session.scalars(
        sa.select(Season).where(Season.company_id == current_user.company_id).order_by(Season.start_on.desc())
    ).all()


def _season_named(name):
    return next((season for season in _seasons() if season.name == name), None)


def _xlsx(content, filename):
    response = Response(content, mimetype=XLSX_MIMETYPE)
    # RFC 5987 encoding keeps the Chinese file name intact; `filename` is the ASCII fallback.
    response.headers["Content-Disposition"] = f"attachment; filename=export.xlsx; filename*=UTF-8''{quote(filename)}"
    return response


def _account_by_number(number):
    number = (number or "").strip()
    if not number:
        return None
    return db.session.scalar(
        sa.select(Account).where(
            Account.company_id == current_user.company_id, sa.or_(Account.account_no == number, Account.legacy_no == number)
        )
    )


# -- collection work lists


def _own_tasks_only():
    """Field staff without list rights see only the accounts assigned to them."""
    return not has_permission(current_user, "arrears.manage") and not has_permission(current_user, "billing.read")


def _work_list_from_request():
    try:
        filters = parse_work_list_filter(request.args)
    except ArrearsError as error:
        flash(str(error), "error")
        filters = WorkListFilter()
    if _own_tasks_only():
        filters = WorkListFilter(**{**filters.__dict__, "collector_id": current_user.id, "unassigned_only": False})
    return filters, work_list(current_user.company_id, filters)


def _collectors():
    """Active staff of the company who do field work, or every active staff member when none does."""
    staff = db.session.scalars(sa.select(User).where(User.company_id == current_user.company_id).order_by(User.user_no)).all()
    staff = [user for user in staff if user.is_active]
    field_staff = [user for user in staff if has_permission(user, "fieldwork.do")]
    return field_staff or staff


@bp.route("/arrears")
@login_required
def arrears():
    """Accounts in arrears by age, filtered, with assignment to collectors."""
    _require("arrears.manage", "billing.read", "fieldwork.do")
    filters, items = _work_list_from_request()
    communities = db.session.scalars(
        sa.select(Community).where(Community.company_id == current_user.company_id).order_by(Community.code)
    ).all()
    return render_template(
        "billing/arrears.html", items=items[:ARREARS_PAGE_ROWS], item_count=len(items), totals=ageing_totals(items), buckets=AGE_BUCKETS, filters=filters,
        communities=communities, collectors=_collectors(), args=request.args,
        can_assign=has_permission(current_user, "arrears.manage"),
        can_write_off=has_permission(current_user, "billing.write_off"),
    )


@bp.route("/arrears/export")
@login_required
def arrears_export():
    """The filtered work list as an Excel file for field staff."""
    _require("arrears.manage", "fieldwork.do")
    _filters, items = _work_list_from_request()
    return _xlsx(export_work_list(items), _("清欠清单-%(date)s.xlsx", date=date.today().strftime("%Y%m%d")))


@bp.route("/arrears/assign", methods=["POST"])
@login_required
def arrears_assign():
    """Assign the ticked accounts to one collector."""
    _require("arrears.manage")
    raw_ids = request.form.getlist("account_id")
    try:
        account_ids = sorted({int(value) for value in raw_ids})
    except ValueError:
        account_ids = []
    collector_id = request.form.get("collector_id", "")
    collector = db.session.get(User, int(collector_id)) if collector_id.isdigit() else None
    try:
        count = assign_collector(current_user.company_id, account_ids, collector, current_user, request.form.get("note", ""))
        db.session.commit()
    except ArrearsError as error:
        db.session.rollback()
        flash(str(error), "error")
    else:
        flash(_("已将 %(count)s 户分派给 %(name)s。", count=count, name=collector.name), "success")
    return redirect(url_for("billing_desk.arrears", **request.args))


# -- write-offs


@bp.route("/write-off", methods=["GET", "POST"])
@login_required
def write_off_page():
    """Write off an account's outstanding receivable of one season, with a reason."""
    _require("billing.write_off")
    account_id = request.values.get("account", "")
    account = (
        db.session.scalar(sa.select(Account).filter_by(id=int(account_id), company_id=current_user.company_id))
        if account_id.isdigit() else None
    )
    if account is None:
        flash(_("请从清欠清单中选择要核销的用户。"), "error")
        return redirect(url_for("billing_desk.arrears"))
    if request.method == "POST":
        choice = request.form.get("season", "")
        season = None if choice == "imported" else _season_named(choice)
        if choice != "imported" and season is None:
            flash(_("供暖季「%(season)s」不存在；请从列表中选择。", season=choice), "error")
        else:
            try:
                entry = write_off(account, season, request.form.get("amount", ""), request.form.get("reason", ""), current_user)
                db.session.commit()
            except ArrearsError as error:
                db.session.rollback()
                flash(str(error), "error")
            else:
                flash(_("已核销 %(amount)s 元。", amount=-entry.amount), "success")
                return redirect(url_for("billing_desk.write_off_page", account=account.id))
    return render_template("billing/write_off.html", account=account, owed=amount_owed(account))


# -- retroactive re-rating


@bp.route("/rerates")
@login_required
def rerates():
    """Retroactive changes with their difference lines; approvers post or reject them."""
    _require("billing.run", "billing.rerate_approve", "account.edit")
    changes = db.session.scalars(
        sa.select(RerateChange).where(RerateChange.company_id == current_user.company_id).order_by(RerateChange.id.desc()).limit(100)
    ).all()
    selected_id = request.args.get("change", "")
    selected = next((c for c in changes if str(c.id) == selected_id), None) or next(
        (c for c in changes if c.status == "pending"), None
    )
    accounts = {}
    if selected is not None:
        ids = [p.account_id for p in selected.proposals]
        accounts = {a.id: a for a in db.session.scalars(sa.select(Account).where(Account.id.in_(ids)))} if ids else {}
    season_names = {s.id: s.name for s in _seasons()}
    return render_template(
        "billing/rerates.html", changes=changes, selected=selected, accounts=accounts, season_names=season_names,
        seasons=_seasons(), kinds=RERATE_CHANGE_KINDS, statuses=RERATE_STATUSES, billing_statuses=BILLING_STATUSES,
        user_types=USER_TYPES, total=proposal_total(selected) if selected else None,
        can_submit=has_permission(current_user, "billing.run") or has_permission(current_user, "account.edit"),
        can_decide=has_permission(current_user, "billing.rerate_approve"),
    )


def _parse_date(text, label):
    try:
        return date.fromisoformat((text or "").strip())
    except ValueError:
        raise RerateError(_("%(field)s「%(value)s」不是有效日期；请填写如 2026-01-10 的日期。", field=label, value=text)) from None


def _area(text, label):
    text = (text or "").strip()
    if not text:
        return None
    try:
        return Decimal(text)
    except ArithmeticError:
        raise RerateError(_("%(field)s「%(value)s」不是数字；请填写如 87.35 的平方米数。", field=label, value=text)) from None


def _submit_change(form):
    kind = form.get("kind", "")
    description = (form.get("description") or "").strip()
    if kind == "tariff":
        season = _season_named(form.get("season", ""))
        if season is None:
            raise RerateError(_("供暖季「%(season)s」不存在；请从列表中选择。", season=form.get("season", "")))
        named = (form.get("effective_from") or "").strip()
        effective_from = _parse_date(named, _("生效日期")) if named else None
        # A pending version (saved on the tariff page for a billed season) is billed by this
        # change and takes effect only when the change is posted.
        tariff = pending_tariff(season, effective_from)
        if tariff is None:
            effective_from = effective_from or season.start_on
            tariff_in_force(season, effective_from)
        return create_change(current_user.company_id, "tariff", effective_from, current_user, season=season,
                             description=description, tariff=tariff)
    account = _account_by_number(form.get("account_no"))
    if account is None:
        raise RerateError(_("用户编号「%(account)s」在本公司不存在；请核对 15 位编号或原户号。", account=form.get("account_no", "")))
    if kind == "status":
        season = _season_named(form.get("season", ""))
        if season is None:
            raise RerateError(_("供暖季「%(season)s」不存在；请从列表中选择。", season=form.get("season", "")))
        return create_change(current_user.company_id, "status", None, current_user, account=account, season=season,
                             billing_status=form.get("billing_status"), description=description)
    if kind == "account_terms":
        effective_from = _parse_date(form.get("effective_from"), _("生效日期"))
        changes = {}
        for name, label in (("building_area", _("建筑面积")), ("usable_area", _("使用面积"))):
            value = _area(form.get(name), label)
            if value is not None:
                changes[name] = value
        if form.get("user_type"):
            changes["user_type"] = form.get("user_type")
        return create_change(current_user.company_id, "account_terms", effective_from, current_user, account=account,
                             description=description, terms=changes)
    raise RerateError(_(
        "变更类型「%(kind)s」无效；请选择 %(choices)s。",
        kind=kind, choices=join_items(translate_label(label) for label in RERATE_CHANGE_KINDS.values()),
    ))


@bp.route("/rerates/new", methods=["POST"])
@login_required
def rerate_new():
    """Record a retroactive change and compute its difference lines for approval."""
    _require("billing.run", "account.edit")
    try:
        change = _submit_change(request.form)
        db.session.commit()
    except (RerateError, TermsError, TariffError) as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("billing_desk.rerates"))
    flash(_(
        "已提交调整单 %(id)s：%(count)s 条差额，合计 %(total)s 元，待审批。",
        id=change.id, count=len(change.proposals), total=proposal_total(change),
    ), "success")
    return redirect(url_for("billing_desk.rerates", change=change.id))


@bp.route("/rerates/decide", methods=["POST"])
@login_required
def rerate_decide():
    """Post or reject a pending change."""
    _require("billing.rerate_approve")
    change_id = request.form.get("change_id", "")
    change = db.session.scalar(
        sa.select(RerateChange).filter_by(id=int(change_id), company_id=current_user.company_id)
    ) if change_id.isdigit() else None
    if change is None:
        abort(404, _("未找到该调整单，或您无权查看。"))
    try:
        if request.form.get("decision") == "approve":
            posted = post_change(change, current_user)
            message = _("调整单 %(id)s 已过账 %(count)s 条调整应收。", id=change.id, count=posted)
        else:
            reject_change(change, current_user)
            message = _("调整单 %(id)s 已驳回。", id=change.id)
        db.session.commit()
    except RerateError as error:
        db.session.commit()
        flash(str(error), "error")
    else:
        flash(message, "success")
    return redirect(url_for("billing_desk.rerates", change=change.id))


# -- what-if


@bp.route("/what-if", methods=["GET", "POST"])
@login_required
def what_if():
    """Run a draft tariff against a billed season and show the differences; nothing is stored."""
    _require("tariff.edit")
    seasons = _seasons()
    season = _season_named(request.values.get("season", "")) or (seasons[1] if len(seasons) > 1 else (seasons[0] if seasons else None))
    tariff = None
    if season is not None:
        try:
            tariff = tariff_in_force(season, season.end_on)
        except TariffError as error:
            flash(str(error), "error")
    result = None
    if request.method == "POST" and season is not None:
        try:
            result = run_what_if(current_user.company_id, season, draft_from_form(season, request.form))
        except TariffEditError as error:
            flash(str(error), "error")
        else:
            if request.form.get("export"):
                content = export_what_if(result, current_user.company.name)
                return _xlsx(content, _("调价测算-%(season)s.xlsx", season=season.name))
    return render_template(
        "billing/what_if.html", seasons=seasons, season=season, tariff=tariff, result=result, form=request.form,
        categories=CATEGORIES, bases=BASES, user_types=USER_TYPES, household_rows=WHAT_IF_PAGE_ROWS,
    )


# -- meter readings


@bp.route("/meter-readings", methods=["GET", "POST"])
@login_required
def meter_readings():
    """Upload a season's heat-meter readings; valid files post the metered settlement."""
    _require("billing.run")
    seasons = _seasons()
    result = None
    if request.method == "POST":
        season = _season_named(request.form.get("season", ""))
        upload = request.files.get("file")
        if season is None:
            flash(_("供暖季「%(season)s」不存在；请从列表中选择。", season=request.form.get("season", "")), "error")
        elif upload is None or not upload.filename:
            flash(_("请选择要上传的 .xlsx 读数文件。"), "error")
        else:
            content = upload.read(MAX_UPLOAD_BYTES + 1)
            if len(content) > MAX_UPLOAD_BYTES:
                flash(_("文件超过 %(max)s MB；请分成几个文件上传。", max=MAX_UPLOAD_BYTES // 1024 // 1024), "error")
            else:
                try:
                    result = import_meter_readings(current_user.company_id, season, content, upload.filename, current_user.id)
                except (MeterImportError, TariffError) as error:
                    flash(str(error), "error")
                else:
                    if not result.errors:
                        flash(_(
                            "已导入 %(stored)s 户读数（%(unchanged)s 户与已导入相同），结算差额合计 %(total)s 元。",
                            stored=result.stored, unchanged=result.unchanged, total=result.settled_total,
                        ), "success")
    return render_template("billing/meter_readings.html", seasons=seasons, result=result)


# -- allocation order


@bp.route("/allocation", methods=["GET", "POST"])
@login_required
def allocation():
    """The order in which the company's payments pay an account's seasons."""
    _require("tariff.edit")
    if request.method == "POST":
        order = request.form.get("order", "")
        if order not in ALLOCATION_ORDERS:
            flash(_("分配顺序「%(order)s」无效；请从列表中选择。", order=order), "error")
        else:
            policy = db.session.scalar(sa.select(AllocationPolicy).filter_by(company_id=current_user.company_id))
            if policy is None:
                policy = AllocationPolicy(company_id=current_user.company_id)
                db.session.add(policy)
            policy.order = order
            policy.late_fees_last = request.form.get("late_fees_last") == "1"
            policy.updated_by_id = current_user.id
            policy.updated_at = utcnow()
            db.session.commit()
            logger.info("User %s set allocation order of company %s to %s (late fees last: %s)", current_user.id,
                        current_user.company_id, order, policy.late_fees_last)
            late_fees = _("滞纳金最后冲抵") if policy.late_fees_last else _("各季滞纳金随本季欠费冲抵")
            flash(_("付款分配顺序已改为：%(order)s，%(late_fees)s。", order=translate_label(ALLOCATION_ORDERS[order]), late_fees=late_fees),
                  "success")
        return redirect(url_for("billing_desk.allocation"))
    return render_template("billing/allocation.html", orders=ALLOCATION_ORDERS, rule=allocation_rule(current_user.company_id))
