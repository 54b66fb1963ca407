"""HQ views across companies: the collection summary, the dashboards with drill-down and
Excel export, the process audit explorer, the open ledger invariant findings and the
reconciliation differences of every company. Only headquarters users holding hq.view
may open them; a company user gets 403."""

import io
from decimal import Decimal
from urllib.parse import quote

import sqlalchemy as sa
from flask import Blueprint, Response, abort, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from openpyxl import Workbook
from openpyxl.styles import Font

from app.billing.invariants import open_findings
from app.extensions import db
from app.fieldwork.services import field_progress
from app.hq import dashboard
from app.hq.audit import AuditQueryError, parse_filters, search_instances
from app.i18n import N_
from app.hq.services import collection_summary
from app.network.models import Account
from app.org.models import Company
from app.org.services import has_permission
from app.payments.daily_reconciliation import statement_channel_label
from app.payments.models import ReconciliationItem, ReconciliationOrderCopy
from app.processes.models import INSTANCE_STATUSES, PROCESS_TYPES
from app.tariffs.models import Season

bp = Blueprint("hq", __name__, url_prefix="/hq")

# Invariant check code -> label, for the findings page.
INVARIANT_CHECKS = {
    "identity": N_("应收恒等式不平（应收 ≠ 实收 + 减免 + 核销 + 欠费，含滞纳金）"),
    "payment_allocation": N_("收款与台账收款行不符"),
    "sign": N_("台账行方向错误"),
    "company_total": N_("公司合计与应收报表不符"),
    "hq_totals": N_("集团汇总表与台账不符"),
    "hq_account_count": N_("集团汇总户数与账户数不符"),
}

# The reconciliation page lists this many differences, open ones first.
RECONCILIATION_ITEMS_SHOWN = 500

# The community page lists the accounts with the largest arrears; the export has them all.
PAGE_ACCOUNTS = 200

GROUP_VIEWS = {
    "companies": lambda season, as_of: dashboard.company_view(season, as_of),
    "collection": lambda season, as_of: dashboard.collection_by_day(season, as_of),
    "arrears": lambda season, as_of: dashboard.arrears_view(season, as_of),
    "waivers": lambda season, as_of: dashboard.waiver_view(season, as_of),
    "processes": lambda season, as_of: dashboard.process_view(as_of),
}


def _numeric(view):
    """Mark the view's columns holding numbers, which its table aligns right."""
    view["numeric"] = {
        key for key, _label in view["columns"]
        if any(isinstance(row.get(key), int | Decimal) and not isinstance(row.get(key), bool) for row in view["rows"])
    }
    return view


def _require_hq():
    if not current_user.company.is_headquarters or not has_permission(current_user, "hq.view"):
        abort(403, _("集团汇总仅供集团总部查看。"))


def _period():
    """(season name, as-of date) from the query string; 400 naming the field when invalid."""
    try:
        as_of = dashboard.parse_as_of(request.args.get("as_of"))
        season = request.args.get("season")
        season = dashboard.parse_season(season) if season else dashboard.default_season(as_of)
    except dashboard.DashboardInputError as error:
        abort(400, str(error))
    return season, as_of


def _company(code):
    try:
        return dashboard.company_by_code(code)
    except LookupError as error:
        abort(404, str(error))


def _community(company, community_id):
    try:
        return dashboard.community_of(company, community_id)
    except LookupError as error:
        abort(404, str(error))


@bp.route("/collection")
@login_required
def collection():
    """Receivable, received, arrears and collection rate per company and for the group."""
    _require_hq()
    season = request.args.get("season", "").strip() or dashboard.default_season(dashboard.today())
    return render_template("hq/collection.html", summary=collection_summary(season), field=field_progress())


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json(view, season, as_of):
    return jsonify(_plain({"season": season, "as_of": as_of.isoformat(), **{k: v for k, v in view.items() if k != "columns"},
                           "columns": [list(c) for c in view["columns"]]}))


def _xlsx(view, season, as_of, filename):
    """Write the view as one sheet: title, period, header and rows, with amounts as exact decimals."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = view["title"][:31]
    sheet.append([view["title"]])
    sheet["A1"].font = Font(bold=True)
    sheet.append([_("供暖季 %(season)s", season=season), _("截止 %(date)s", date=as_of.isoformat())])
    if view.get("rule"):
        sheet.append([view["rule"]])
    sheet.append([label for _key, label in view["columns"]])
    for cell in sheet[sheet.max_row]:
        cell.font = Font(bold=True)
    for row in view["rows"]:
        sheet.append([row.get(key) for key, _label in view["columns"]])
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, Decimal):
                cell.number_format = "0.00"
    buffer = io.BytesIO()
    workbook.save(buffer)
    name = f"{filename}-{as_of.isoformat()}.xlsx"
    return Response(
        buffer.getvalue(),
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f"attachment; filename=hq-{as_of.isoformat()}.xlsx; filename*=UTF-8''{quote(name)}"},
    )


def _answer(view, season, as_of, fmt, filename):
    if fmt == "json":
        return _json(view, season, as_of)
    return _xlsx(view, season, as_of, filename)


@bp.route("/dashboard")
@login_required
def dashboard_page():
    """Show the group dashboard: company figures, collection trend, arrears, waivers and process steps."""
    _require_hq()
    season, as_of = _period()
    views = {name: _numeric(build(season, as_of)) for name, build in GROUP_VIEWS.items()}
    for row in views["companies"]["rows"]:
        if row["code"]:
            row["link"] = url_for("hq.company_page", code=row["code"], season=season, as_of=as_of.isoformat())
    return render_template("hq/dashboard.html", season=season, as_of=as_of, views=views, chart_data=_plain({
        "collection": views["collection"]["chart"], "arrears": {"rows": views["arrears"]["rows"], **views["arrears"]["chart"]},
        "waivers": views["waivers"]["rows"], "processes": views["processes"]["rows"][:12],
    }))


@bp.route("/dashboard/<any(companies, collection, arrears, waivers, processes):view>.<any(json, xlsx):fmt>")
@login_required
def dashboard_view(view, fmt):
    """Return one group view as JSON or as an Excel workbook."""
    _require_hq()
    season, as_of = _period()
    return _answer(GROUP_VIEWS[view](season, as_of), season, as_of, fmt, view)


@bp.route("/dashboard/companies/<code>")
@login_required
def company_page(code):
    """Drill-down to one company: its communities."""
    _require_hq()
    season, as_of = _period()
    company = _company(code)
    view = _numeric(dashboard.community_view(company, season, as_of))
    for row in view["rows"]:
        row["link"] = url_for("hq.community_page", code=code, community_id=row["id"], season=season, as_of=as_of.isoformat())
    return render_template("hq/company.html", season=season, as_of=as_of, company=company, view=view,
                           chart_data=_plain([{"name": r["name"], "rate": r["collection_rate"]} for r in view["rows"]]))


@bp.route("/dashboard/companies/<code>.<any(json, xlsx):fmt>")
@login_required
def company_data(code, fmt):
    _require_hq()
    season, as_of = _period()
    company = _company(code)
    return _answer(dashboard.community_view(company, season, as_of), season, as_of, fmt, f"{code}-communities")


@bp.route("/dashboard/companies/<code>/communities/<int:community_id>")
@login_required
def community_page(code, community_id):
    """Drill-down to one community: its accounts."""
    _require_hq()
    season, as_of = _period()
    company = _company(code)
    community = _community(company, community_id)
    view = _numeric(dashboard.account_view(company, community, season, as_of))
    total = len(view["rows"])
    view["rows"] = view["rows"][:PAGE_ACCOUNTS]
    for row in view["rows"]:
        row["link"] = url_for("network.account", account_id=row["id"])
    return render_template("hq/community.html", season=season, as_of=as_of, company=company, community=community, view=view,
                           total=total)


@bp.route("/dashboard/companies/<code>/communities/<int:community_id>.<any(json, xlsx):fmt>")
@login_required
def community_data(code, community_id, fmt):
    _require_hq()
    season, as_of = _period()
    company = _company(code)
    community = _community(company, community_id)
    return _answer(dashboard.account_view(company, community, season, as_of), season, as_of, fmt, f"{code}-{community.code}-accounts")


@bp.route("/audit")
@login_required
def audit():
    """Find process instances of all companies; each hit opens its history and diagram replay.

    Without a query the page lists the most recent instances, paged newest first like a search.
    """
    _require_hq()
    error = None
    rows, next_cursor = [], ""
    try:
        filters = parse_filters(request.args)
    except AuditQueryError as exc:
        filters, error = {}, str(exc)
    if error is None:
        rows, next_cursor = search_instances(filters)
    searched = error is None and any(value for key, value in filters.items() if key != "after")
    next_url = ""
    if next_cursor:
        query = {key: value for key, value in request.args.items() if value and key != "after"}
        next_url = url_for("hq.audit", **query, after=next_cursor)
    return render_template(
        "hq/audit.html", filters=filters, rows=rows, next_url=next_url, error=error, searched=searched,
        paged=bool(filters.get("after")) or bool(next_cursor),
        process_types=PROCESS_TYPES, statuses=INSTANCE_STATUSES, companies=dashboard.companies(),
    ), 400 if error else 200


@bp.route("/invariants")
@login_required
def invariants():
    """List the open ledger invariant breaks the nightly check found, across companies."""
    _require_hq()
    findings = open_findings()
    companies = {company.id: company for company in dashboard.companies()}
    seasons = dict(db.session.execute(sa.select(Season.id, Season.name)).all())
    accounts = {}
    account_ids = {finding.account_id for finding in findings if finding.account_id}
    if account_ids:
        accounts = dict(db.session.execute(sa.select(Account.id, Account.account_no).where(Account.id.in_(account_ids))).all())
    return render_template(
        "hq/invariants.html", findings=findings, companies=companies, seasons=seasons, accounts=accounts,
        checks=INVARIANT_CHECKS,
    )


@bp.route("/reconciliation")
@login_required
def reconciliation():
    """List the reconciliation differences of every company, with the order numbers kept from the merchant's company."""
    _require_hq()
    items = db.session.scalars(
        sa.select(ReconciliationItem).order_by(ReconciliationItem.status, ReconciliationItem.id.desc()).limit(RECONCILIATION_ITEMS_SHOWN)
    ).all()
    order_copies = {}
    if items:
        order_copies = {
            copy.item_id: copy for copy in db.session.scalars(
                sa.select(ReconciliationOrderCopy).where(ReconciliationOrderCopy.item_id.in_([item.id for item in items]))
            )
        }
    companies = {company.id: company for company in db.session.scalars(sa.select(Company))}
    return render_template(
        "hq/reconciliation.html", items=items, order_copies=order_copies, companies=companies,
        channel_label=statement_channel_label,
    )
