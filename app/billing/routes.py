"""Receivables of the user's company and the billing run button."""

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.billing.precision import money_rule_of_company
from app.billing.services import BillingError, receivables_report, run_billing
from app.extensions import db
from app.money import DEFAULT_MONEY_RULE, set_money_rule
from app.org.models import Company
from app.org.services import has_permission
from app.tariffs.models import Season
from app.tariffs.services import TariffError

bp = Blueprint("billing", __name__, url_prefix="/billing")


@bp.before_app_request
def _load_money_rule():
    """Round the amounts of every request by the precision rule of the user's group."""
    if current_user.is_authenticated:
        set_money_rule(money_rule_of_company(current_user.company_id))


@bp.teardown_app_request
def _reset_money_rule(exc):
    set_money_rule(DEFAULT_MONEY_RULE)


@bp.route("/receivables")
@login_required
def receivables():
    """Receivables per status for one company and season."""
    if not has_permission(current_user, "billing.read"):
        abort(403, _("您没有查看应收的权限。"))
    companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)).all()
    if not current_user.company.is_headquarters:
        companies = [c for c in companies if c.id == current_user.company_id]
    code = request.args.get("company") or (companies[0].code if companies else None)
    company = next((c for c in companies if c.code == code), None)
    if company is None:
        abort(404, _("未找到该公司，或您无权查看。"))
    seasons = db.session.scalars(sa.select(Season).filter_by(company_id=company.id).order_by(Season.name.desc())).all()
    season = request.args.get("season") or (seasons[0].name if seasons else None)
    report = None
    if season:
        try:
            report = receivables_report(company.code, season)
        except (BillingError, TariffError) as error:
            flash(str(error), "error")
    return render_template("billing/receivables.html", companies=companies, company=company, seasons=seasons,
                           season=season, report=report, can_bill=has_permission(current_user, "billing.run"))


@bp.route("/run", methods=["POST"])
@login_required
def run():
    """Run billing for the user's own company and a season."""
    if not has_permission(current_user, "billing.run"):
        abort(403, _("您没有生成应收的权限。"))
    company = current_user.company
    season = request.form.get("season", "")
    try:
        result = run_billing(company.code, season, user_id=current_user.id)
    except (BillingError, TariffError) as error:
        flash(str(error), "error")
    else:
        flash(_("已生成应收：%(accounts)s 户，合计 %(amount)s 元。", accounts=result.accounts_billed, amount=format(result.amount_posted, ".2f")),
              "success")
    return redirect(url_for("billing.receivables", company=company.code, season=season))
