"""Finance vouchers and the meter-reading review list of the user's companies, with its corrections."""

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.extensions import db
from app.clock import format_local
from app.messaging.models import REVIEW_STATUSES, FinanceVoucher, MeterReading, MeterReadingReview
from app.messaging.reviews import ReviewError, apply_corrected_reading, dismiss_review, review_counts
from app.messaging.vouchers import voucher_content, voucher_csv
from app.network.models import Account
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
    _require("voucher.read", _("您没有查看财务凭证的权限。"))
    rows = db.session.execute(
        sa.select(FinanceVoucher, Company.code, Company.name)
        .join(Company, Company.id == FinanceVoucher.company_id)
        .order_by(FinanceVoucher.voucher_date.desc(), Company.number)
        .limit(LIST_LIMIT)
    ).all()
    return render_template("messaging/vouchers.html", rows=rows)


def _voucher(voucher_id):
    _require("voucher.read", _("您没有下载财务凭证的权限。"))
    voucher = db.session.scalar(sa.select(FinanceVoucher).filter_by(id=voucher_id))
    if voucher is None:
        abort(404, _("未找到该凭证，或您无权查看。"))
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


# -- meter-reading review list


def _require_review(company_id=None):
    if not has_permission(current_user, "metering.review", company_id):
        abort(403, _("您没有核对计量读数的权限，请联系本公司管理员分配“营业员”角色。"))


@bp.route("/meter-reviews")
@login_required
def meter_reviews():
    """Readings the metering system sent that could not be stored, newest first, by status and account."""
    _require_review()
    status = request.args.get("status", "open")
    if status not in REVIEW_STATUSES and status != "all":
        status = "open"
    account_no = request.args.get("account", "").strip()[:32]
    query = sa.select(MeterReadingReview).order_by(MeterReadingReview.id.desc()).limit(LIST_LIMIT)
    if status != "all":
        query = query.where(MeterReadingReview.status == status)
    if account_no:
        query = query.where(MeterReadingReview.account_no.startswith(account_no, autoescape=True))
    reviews = db.session.scalars(query).all()
    company_ids = {review.company_id for review in reviews}
    companies = dict(db.session.execute(sa.select(Company.id, Company.name).where(Company.id.in_(company_ids))).all())
    return render_template(
        "messaging/meter_reviews.html", reviews=reviews, status=status, account_no=account_no, statuses=REVIEW_STATUSES,
        counts=review_counts(), companies=companies, limit=LIST_LIMIT,
    )


def _review(review_id):
    review = db.first_or_404(
        sa.select(MeterReadingReview).filter_by(id=review_id),
        description=_("未找到编号为 %(id)s 的待核对读数，或它不属于您的公司。", id=review_id),
    )
    _require_review(review.company_id)
    return review


@bp.route("/meter-reviews/<int:review_id>")
@login_required
def meter_review(review_id):
    """Show one rejected reading with its reason, the account's latest stored readings and the two ways to close it."""
    review = _review(review_id)
    account = db.session.scalar(sa.select(Account).filter_by(company_id=review.company_id, account_no=review.account_no))
    recent = []
    if account is not None:
        recent = db.session.scalars(
            sa.select(MeterReading).filter_by(company_id=review.company_id, account_id=account.id)
            .order_by(MeterReading.read_at.desc()).limit(10)
        ).all()
    form = {"account_no": review.account_no, "read_at": review.read_at, "reading": review.reading, "note": ""}
    form.update({key: request.args[key] for key in form if key in request.args})
    return render_template(
        "messaging/meter_review.html", review=review, account=account, recent=recent, form=form, format_local=format_local,
    )


@bp.route("/meter-reviews/<int:review_id>/correct", methods=["POST"])
@login_required
def correct_meter_review(review_id):
    """Store the corrected reading a clerk enters and close the review."""
    review = _review(review_id)
    fields = {key: request.form.get(key, "") for key in ("account_no", "read_at", "reading", "note")}
    try:
        stored = apply_corrected_reading(
            review.id, fields["account_no"], fields["read_at"], fields["reading"], fields["note"], current_user,
        )
    except ReviewError as error:
        flash(str(error), "error")
        return redirect(url_for("finance.meter_review", review_id=review_id, **fields))
    flash(_(
        "已按更正读数 %(reading)s GJ（%(time)s）入账，该条待核对读数已关闭。", reading=stored.reading_gj, time=format_local(stored.read_at),
    ), "success")
    return redirect(url_for("finance.meter_reviews"))


@bp.route("/meter-reviews/<int:review_id>/dismiss", methods=["POST"])
@login_required
def dismiss_meter_review(review_id):
    """Close a review without storing a reading, with the reason the clerk gives."""
    review = _review(review_id)
    try:
        dismiss_review(review.id, request.form.get("note", ""), current_user)
    except ReviewError as error:
        flash(str(error), "error")
        return redirect(url_for("finance.meter_review", review_id=review_id))
    flash(_("待核对读数 %(id)s 已作废。", id=review_id), "success")
    return redirect(url_for("finance.meter_reviews"))
