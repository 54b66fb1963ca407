"""Tariff pages: every company's pricing rules as readable, editable data."""

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.extensions import db
from app.org.models import Company
from app.org.services import has_permission
from app.tariffs.editing import BASES, CATEGORIES, TariffEditError, save_tariff, tariff_is_used
from app.tariffs.models import Season, Tariff

bp = Blueprint("tariffs", __name__, url_prefix="/tariffs")


@bp.route("/")
@login_required
def index():
    """Seasons and tariffs of the visible companies."""
    if not has_permission(current_user, "billing.read"):
        abort(403, _("您没有查看收费标准的权限。"))
    tariffs = db.session.execute(
        sa.select(Tariff, Season, Company)
        .join(Season, Tariff.season_id == Season.id)
        .join(Company, Tariff.company_id == Company.id)
        .order_by(Company.number, Season.name.desc(), Tariff.effective_from)
    ).all()
    return render_template("tariffs/index.html", tariffs=tariffs, categories=CATEGORIES, bases=BASES)


@bp.route("/<int:tariff_id>", methods=["GET", "POST"])
@login_required
def edit(tariff_id):
    """Show one tariff; administrators of its company may edit it or add a later version."""
    tariff = db.session.scalar(sa.select(Tariff).filter_by(id=tariff_id))
    if tariff is None:
        abort(404, _("未找到该收费标准，或您无权查看。"))
    may_edit = has_permission(current_user, "tariff.edit") and tariff.company_id == current_user.company_id
    if request.method == "POST":
        if not may_edit:
            abort(403, _("您没有修改本公司收费标准的权限。"))
        try:
            saved = save_tariff(tariff, request.form, current_user.id)
        except TariffEditError as error:
            db.session.rollback()
            flash(str(error), "error")
            return redirect(url_for("tariffs.edit", tariff_id=tariff.id))
        flash(_("收费标准已保存。"), "success")
        return redirect(url_for("tariffs.edit", tariff_id=saved.id))
    prices = {(p.category, p.heat_source_kind): p.unit_price for p in tariff.prices}
    override = next(((k, v) for (c, k), v in prices.items() if k), ("", None))
    rules = {r.category: r for r in tariff.area_rules}
    return render_template(
        "tariffs/edit.html", tariff=tariff, prices=prices, override=override, rules=rules, categories=CATEGORIES,
        bases=BASES, may_edit=may_edit, used=tariff_is_used(tariff),
    )
