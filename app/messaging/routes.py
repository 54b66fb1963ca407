"""Finance vouchers and the meter-reading review list of the user's companies."""

import sqlalchemy as sa
from flask import Blueprint, Response, abort, render_template
from flask_login import current_user, login_required

from app.extensions import db
from app.messaging.models import FinanceVoucher, MeterReadingReview
from app.messaging.vouchers import voucher_content, voucher_csv
from app.org.models import Company
from app.org.services import has_permission

bp = Blueprint("finance", __name__, url_prefix="/finance")

LIST_LIMIT = 200


def _require(permission, message):
    if not has_permission(current_user, permission):
        abort(403, message)


@bp.route("/vouchers")
@login_required
def vouchers():
    """The latest daily vouchers of the companies the user sees, with download links."""
    _require("voucher.read", "您没有查看财务凭证的权限。")
    rows = db.session.execute(
        sa.select(FinanceVoucher, Company.code, Company.name)
        .join(Company, Company.id == FinanceVoucher.company_id)
        .order_by(FinanceVoucher.voucher_date.desc(), Company.number)
        .limit(LIST_LIMIT)
    ).all()
    reviews = db.session.scalars(
        sa.select(MeterReadingReview).where(MeterReadingReview.status == "open")
        .order_by(MeterReadingReview.id.desc()).limit(LIST_LIMIT)
    ).all()
    return render_template("messaging/vouchers.html", rows=rows, reviews=reviews)


def _voucher(voucher_id):
    _require("voucher.read", "您没有下载财务凭证的权限。")
    voucher = db.session.scalar(sa.select(FinanceVoucher).filter_by(id=voucher_id))
    if voucher is None:
        abort(404, "未找到该凭证，或您无权查看。")
    return voucher


@bp.route("/vouchers/<int:voucher_id>.json")
@login_required
def voucher_json(voucher_id):
    """Download one voucher in the JSON format of docs/integrations.md."""
    voucher = _voucher(voucher_id)
    return _attachment(voucher, voucher.content.encode("utf-8"), "application/json", "json")


@bp.route("/vouchers/<int:voucher_id>.csv")
@login_required
def voucher_csv_download(voucher_id):
    """Download one voucher as CSV, one row per account code."""
    voucher = _voucher(voucher_id)
    return _attachment(voucher, voucher_csv(voucher).encode("utf-8"), "text/csv", "csv")


def _attachment(voucher, body, mimetype, suffix):
    filename = f"{voucher_content(voucher)['voucher_no']}.{suffix}"
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": f"attachment; filename={filename}"})
