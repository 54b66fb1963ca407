"""Invoice pages: the company's invoice settings, paper invoice recording and voiding,
e-invoice PDFs and the list of e-invoices to issue again."""

import logging

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.extensions import db
from app.invoicing.issuing import (
    InvoiceError, e_invoice_setup_gaps, failed_e_invoices, record_paper_invoice, retry_e_invoice, void_paper_invoice,
)
from app.invoicing.models import INVOICE_METHODS, Invoice
from app.invoicing.settings import save_invoice_settings
from app.invoicing.issuing import invoice_profile
from app.org.models import Company
from app.org.services import has_permission, users_with_permission
from app.payments.models import Payment

logger = logging.getLogger(__name__)
bp = Blueprint("invoicing", __name__, url_prefix="/invoicing")


def _require(permission, company_id=None, message=None):
    if not has_permission(current_user, permission, company_id):
        abort(403, message or _("您没有该发票操作的权限，请联系本公司管理员。"))


def _load_invoice(invoice_id, permission):
    _require(permission)
    invoice = db.first_or_404(
        sa.select(Invoice).filter_by(id=invoice_id),
        description=_("未找到编号为 %(id)s 的发票，或该发票不属于您的公司。", id=invoice_id),
    )
    _require(permission, invoice.company_id)
    return invoice


@bp.route("/settings", methods=["GET", "POST"])
@login_required
def settings():
    """Show and save the invoice method, face and VAT rule of the user's company."""
    company_id = current_user.company_id
    _require("invoice.configure", company_id, _("您没有设置开票方式的权限，请联系本公司管理员。"))
    company = db.session.get(Company, company_id)
    if company.is_headquarters:
        abort(403, _("集团总部不开具热费发票，开票设置由各分公司维护。"))
    status = 200
    if request.method == "POST":
        upload = request.files.get("seal")
        seal = upload.read() if upload and upload.filename else None
        try:
            save_invoice_settings(
                company_id, current_user, method=request.form.get("method", ""), title=request.form.get("title"),
                notes=request.form.get("notes"), seller_tax_id=request.form.get("seller_tax_id"),
                vat_percent=request.form.get("vat_percent", ""), residential_exempt=request.form.get("residential_exempt") == "on",
                seal_png=seal, remove_seal=request.form.get("remove_seal") == "on",
            )
        except InvoiceError as error:
            db.session.rollback()
            flash(str(error), "error")
            status = 400
        else:
            flash(_("开票设置已保存。"), "success")
            return redirect(url_for("invoicing.settings"))
    profile = invoice_profile(company_id)
    gaps = e_invoice_setup_gaps(company_id) if company.invoice_mode == "e_invoice" else None
    return render_template(
        "invoicing/settings.html", company=company, profile=profile, methods=INVOICE_METHODS, gaps=gaps, can_configure=True,
    ), status


@bp.route("/seal.png")
@login_required
def seal():
    """Send the seal image of the user's company."""
    _require("invoice.configure", current_user.company_id)
    profile = invoice_profile(current_user.company_id)
    if not profile.seal_png:
        abort(404, _("本公司尚未上传印章图片。"))
    return Response(profile.seal_png, mimetype="image/png")


@bp.route("/payments/<int:payment_id>/paper", methods=["POST"])
@login_required
def record_paper(payment_id):
    """Record the code and number of the paper invoice printed for a payment (or for its pending red invoice)."""
    _require("invoice.issue")
    payment = db.first_or_404(
        sa.select(Payment).filter_by(id=payment_id),
        description=_("未找到编号为 %(id)s 的收款记录，或该记录不属于您的公司。", id=payment_id),
    )
    _require("invoice.issue", payment.company_id)
    invoice = None
    red_id = request.form.get("invoice_id", "").strip()
    if red_id:
        invoice = db.session.scalar(sa.select(Invoice).filter_by(id=int(red_id) if red_id.isdigit() else 0, payment_id=payment.id))
        if invoice is None:
            abort(404, _("收据 %(receipt)s 没有编号为 %(id)s 的待登记发票。", receipt=payment.receipt_no, id=red_id))
    try:
        recorded = record_paper_invoice(payment, request.form.get("invoice_code"), request.form.get("invoice_number"), current_user, invoice=invoice)
    except InvoiceError as error:
        flash(str(error), "error")
    else:
        flash(_(
            "已登记%(direction)s发票：代码 %(code)s，号码 %(number)s。",
            direction=recorded.direction_label, code=recorded.invoice_code, number=recorded.invoice_number,
        ), "success")
    return redirect(url_for("payments.payment", payment_id=payment.id))


@bp.route("/invoices/<int:invoice_id>/void", methods=["POST"])
@login_required
def void(invoice_id):
    """Void a paper invoice with the reason given."""
    invoice = _load_invoice(invoice_id, "invoice.issue")
    try:
        void_paper_invoice(invoice, request.form.get("reason"), current_user)
    except InvoiceError as error:
        flash(str(error), "error")
    else:
        flash(_("发票 %(code)s %(number)s 已作废。", code=invoice.invoice_code, number=invoice.invoice_number), "success")
    return redirect(url_for("payments.payment", payment_id=invoice.payment_id))


@bp.route("/invoices/<int:invoice_id>/retry", methods=["POST"])
@login_required
def retry(invoice_id):
    """Submit a failed e-invoice to the vendor again."""
    invoice = _load_invoice(invoice_id, "invoice.issue")
    try:
        retry_e_invoice(invoice, current_user)
    except InvoiceError as error:
        flash(str(error), "error")
    else:
        flash(_("收据 %(receipt)s 的电子发票已重新提交开票。", receipt=invoice.payment.receipt_no), "success")
    return redirect(url_for("invoicing.failed"))


@bp.route("/invoices/<int:invoice_id>.pdf")
@login_required
def invoice_pdf(invoice_id):
    """Send the stored PDF of an issued e-invoice."""
    invoice = _load_invoice(invoice_id, "invoice.issue")
    if not invoice.pdf:
        abort(404, _("该发票没有保存 PDF 版式文件。"))
    filename = f"invoice-{invoice.invoice_number or invoice.id}.pdf"
    return Response(invoice.pdf, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.route("/failed")
@login_required
def failed():
    """List e-invoices that failed or still wait for the vendor, with a retry button."""
    _require("invoice.issue")
    company_id = current_user.company_id
    company = db.session.get(Company, company_id)
    invoices = failed_e_invoices()
    gaps = None
    if invoices or company.invoice_mode == "e_invoice":
        gaps = e_invoice_setup_gaps(company_id)
    return render_template(
        "invoicing/failed.html", invoices=invoices, gaps=gaps, can_configure=has_permission(current_user, "invoice.configure", company_id),
        administrators=[user.name for user in users_with_permission(company_id, "invoice.configure") if user.active],
    )
