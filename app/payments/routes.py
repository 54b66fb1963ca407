"""Counter payments (find an account, take a payment, show it, print its receipt), refunds,
online orders, and the endpoints that WeChat Pay, Alipay and collecting banks call."""

import logging
import uuid

import segno
import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.extensions import csrf, db
from app.forms.payments import CounterPaymentForm, OnlineOrderForm, RefundApprovalSettingForm, RefundDecisionForm, RefundForm
from app.i18n import join_items, translate_label
from app.invoicing.receipt import ReceiptError
from app.invoicing.services import payment_invoice_context, print_receipt, print_refund_receipt, shown_payment_items
from app.money import format_money, format_quantity
from app.network.models import Account
from app.network.services import search_accounts
from app.org.services import has_permission
from app.clock import format_local, local_time
from app.org.models import Company
from app.payments.bank import handle_bank_request
from app.payments.models import ONLINE_ORDER_STATUSES, ORDER_CHANNELS, PAYMENT_CHANNELS, OnlineOrder, Payment, Refund
from app.payments.inbox import apply_requests, receive_notification
from app.payments.online import OnlinePaymentError, create_online_order, refresh_order
from app.payments.refunds import RefundError, decide_refund, payment_refunds, refundable_amount, request_refund, submit_refund
from app.payments.services import PaymentError, amount_owed, charge_facts, collect_payment

logger = logging.getLogger(__name__)
bp = Blueprint("payments", __name__, url_prefix="/payments")
SEARCH_LIMIT = 50


def _require_collect(company_id=None):
    if not has_permission(current_user, "payment.collect", company_id):
        abort(403, _("您没有柜台收费的权限，请联系本公司管理员分配“收费员”角色。"))


def _load_account(account_id):
    _require_collect()
    account = db.first_or_404(
        sa.select(Account).filter_by(id=account_id),
        description=_("未找到编号为 %(id)s 的用户，或该用户不属于您的公司。", id=account_id),
    )
    _require_collect(account.company_id)
    return account


def _load_payment(payment_id):
    _require_collect()
    payment = db.first_or_404(
        sa.select(Payment).filter_by(id=payment_id),
        description=_("未找到编号为 %(id)s 的收款记录，或该记录不属于您的公司。", id=payment_id),
    )
    _require_collect(payment.company_id)
    return payment


@bp.route("/")
@login_required
def counter():
    """Search for the account to collect from."""
    _require_collect()
    query = request.args.get("q", "").strip()
    results = search_accounts(query, limit=SEARCH_LIMIT) if query else []
    return render_template("payments/counter.html", query=query, results=results, limit=SEARCH_LIMIT)


@bp.route("/accounts/<int:account_id>", methods=["GET", "POST"])
@login_required
def collect(account_id):
    """Show what an account owes and take a payment for it."""
    account = _load_account(account_id)
    form = CounterPaymentForm()
    status = 200
    if request.method == "GET":
        form.amount.data = format_money(amount_owed(account).total)
        form.request_token.data = uuid.uuid4().hex
    elif form.validate_on_submit():
        try:
            payment = collect_payment(
                account, form.amount.data, form.method.data, current_user,
                payer_name=form.payer_name.data, note=form.note.data, request_token=form.request_token.data,
            )
        except PaymentError as error:
            logger.info("Payment on account %s rejected: %s", account.id, error)
            flash(str(error), "error")
            status = 400
        else:
            flash(_("已收款 %(amount)s 元，收据号 %(number)s。", amount=format_money(payment.amount), number=payment.receipt_no), "success")
            return redirect(url_for("payments.payment", payment_id=payment.id))
    else:
        for messages in form.errors.values():
            for message in messages:
                flash(message, "error")
        status = 400
    owed = amount_owed(account)
    season = owed.current.season if owed.current else None
    page = render_template(
        "payments/collect.html", account=account, owed=owed, season=season, facts=charge_facts(account, season),
        form=form, money=format_money, quantity=format_quantity,
    )
    return page, status


@bp.route("/<int:payment_id>")
@login_required
def payment(payment_id):
    """Show one payment, what it paid, its refunds and the link to its receipt."""
    payment = _load_payment(payment_id)
    return _payment_page(payment, _new_refund_form(payment))


def _new_refund_form(payment):
    form = RefundForm(formdata=None)
    form.amount.data = format_money(refundable_amount(payment))
    form.request_token.data = uuid.uuid4().hex
    return form


def _payment_page(payment, form, status=200):
    can_refund = has_permission(current_user, "payment.refund", payment.company_id)
    page = render_template(
        "payments/payment.html", payment=payment, items=shown_payment_items(payment), paid_at=local_time(payment.paid_at),
        owed=amount_owed(payment.account), money=format_money, refunds=payment_refunds(payment.id),
        refundable=refundable_amount(payment), refund_form=form if can_refund else None, local=format_local,
        **payment_invoice_context(payment),
    )
    return page, status


@bp.route("/<int:payment_id>/refunds", methods=["POST"])
@login_required
def refund(payment_id):
    """Request a refund of part or all of a payment."""
    payment = _load_payment(payment_id)
    if not has_permission(current_user, "payment.refund", payment.company_id):
        abort(403, _("您没有申请退费的权限，请联系本公司管理员分配相应角色。"))
    form = RefundForm()
    if not form.validate_on_submit():
        for messages in form.errors.values():
            for message in messages:
                flash(message, "error")
        return _payment_page(payment, form, 400)
    try:
        refund = request_refund(payment.id, form.amount.data, form.reason.data, current_user, form.request_token.data)
    except RefundError as error:
        logger.info("Refund on payment %s rejected: %s", payment.id, error)
        flash(str(error), "error")
        db.session.rollback()
        return _payment_page(db.session.get(Payment, payment_id), form, 400)
    _flash_refund(refund)
    return redirect(url_for("payments.payment", payment_id=payment_id))


def _flash_refund(refund):
    if refund.status == "succeeded":
        if refund.receipt_no:
            flash(_(
                "已退费 %(amount)s 元，退费收据号 %(number)s，请在退费记录中打印退费收据。",
                amount=format_money(refund.amount), number=refund.receipt_no,
            ), "success")
        else:
            flash(_("已退费 %(amount)s 元。", amount=format_money(refund.amount)), "success")
    elif refund.status == "pending_approval":
        flash(_("退费申请 %(amount)s 元已提交，等待审批。", amount=format_money(refund.amount)), "success")
    elif refund.status == "failed":
        flash(_("退费失败：%(reason)s", reason=refund.shown_failure_reason), "error")
    else:
        if refund.failure_reason:
            flash(_(
                "退费 %(amount)s 元已提交退款渠道，等待渠道确认（%(reason)s）。",
                amount=format_money(refund.amount), reason=refund.shown_failure_reason,
            ), "success")
        else:
            flash(_("退费 %(amount)s 元已提交退款渠道，等待渠道确认。", amount=format_money(refund.amount)), "success")


def _can_see_refunds():
    # Company administrators (role.manage) see the list because the approval setting is on it.
    return any(has_permission(current_user, p) for p in ("payment.refund", "payment.refund_approve", "role.manage"))


@bp.route("/refunds")
@login_required
def refunds():
    """List the refunds of the user's company, those waiting for approval first."""
    if not _can_see_refunds():
        abort(403, _("您没有查看退费的权限。"))
    rows = db.session.scalars(
        sa.select(Refund).order_by(sa.case((Refund.status == "pending_approval", 0), else_=1), Refund.id.desc()).limit(200)
    ).all()
    company = db.session.get(Company, current_user.company_id)
    setting = RefundApprovalSettingForm(formdata=None)
    setting.required.data = "1" if company.refund_requires_approval else "0"
    return render_template(
        "payments/refunds.html", refunds=rows, money=format_money, local=format_local, company=company,
        decision_form=RefundDecisionForm(formdata=None), setting_form=setting,
        can_approve=has_permission(current_user, "payment.refund_approve"),
        can_configure=has_permission(current_user, "role.manage") and not company.is_headquarters,
    )


def _load_refund(refund_id_text):
    try:
        refund_id = int(refund_id_text)
    except (TypeError, ValueError):
        abort(400, _("退费申请编号「%(value)s」无效。", value=str(refund_id_text)[:20]))
    refund = db.first_or_404(
        sa.select(Refund).filter_by(id=refund_id),
        description=_("未找到编号为 %(id)s 的退费申请，或该申请不属于您的公司。", id=refund_id),
    )
    return refund


@bp.route("/refunds/decide", methods=["POST"])
@login_required
def decide():
    """Approve or reject a refund waiting for approval."""
    form = RefundDecisionForm()
    if not form.validate_on_submit() or form.decision.data not in ("approve", "reject"):
        abort(400, _("审批表单不完整：请从退费列表中点击「批准」或「驳回」。"))
    refund = _load_refund(form.refund_id.data)
    if not has_permission(current_user, "payment.refund_approve", refund.company_id):
        abort(403, _("您没有审批退费的权限。"))
    try:
        refund = decide_refund(refund.id, current_user, form.decision.data == "approve")
    except RefundError as error:
        flash(str(error), "error")
        return redirect(url_for("payments.refunds"))
    if refund.status == "rejected":
        flash(_("已驳回退费申请 %(id)s。", id=refund.id), "success")
    else:
        _flash_refund(refund)
    return redirect(url_for("payments.refunds"))


@bp.route("/refunds/retry", methods=["POST"])
@login_required
def retry_refund():
    """Send a refund that is still processing to its channel again (same refund number)."""
    form = RefundDecisionForm()
    refund = _load_refund(form.refund_id.data)
    if not has_permission(current_user, "payment.refund", refund.company_id):
        abort(403, _("您没有申请退费的权限。"))
    _flash_refund(submit_refund(refund.id))
    return redirect(url_for("payments.refunds"))


@bp.route("/refunds/settings", methods=["POST"])
@login_required
def refund_settings():
    """Turn refund approval on or off for the user's own company."""
    company = db.session.get(Company, current_user.company_id)
    if company.is_headquarters or not has_permission(current_user, "role.manage"):
        abort(403, _("只有分公司管理员可以设置退费审批。"))
    form = RefundApprovalSettingForm()
    if not form.validate_on_submit() or form.required.data not in ("0", "1"):
        abort(400, _("请选择「需要审批」或「无需审批」。"))
    company.refund_requires_approval = form.required.data == "1"
    db.session.commit()
    logger.info("Company %s refund approval set to %s by user %s", company.id, company.refund_requires_approval, current_user.id)
    flash(_("退费审批设置已保存。"), "success")
    return redirect(url_for("payments.refunds"))


def _require_online_order(company_id=None):
    if not has_permission(current_user, "payment.online_order", company_id):
        abort(403, _("您没有生成线上支付订单的权限。"))


@bp.route("/accounts/<int:account_id>/online", methods=["GET", "POST"])
@login_required
def online_order(account_id):
    """Place a WeChat Pay or Alipay QR order for what an account owes, and show its orders."""
    _require_online_order()
    account = db.first_or_404(
        sa.select(Account).filter_by(id=account_id),
        description=_("未找到编号为 %(id)s 的用户，或该用户不属于您的公司。", id=account_id),
    )
    _require_online_order(account.company_id)
    form = OnlineOrderForm()
    status = 200
    if request.method == "POST":
        if not form.validate_on_submit() or form.channel.data not in ORDER_CHANNELS:
            flash(_(
                "支付渠道「%(value)s」无效，请选择：%(choices)s。",
                value=form.channel.data, choices=join_items(translate_label(label) for label in ORDER_CHANNELS.values()),
            ), "error")
            status = 400
        else:
            try:
                order = create_online_order(account, form.channel.data)
            except OnlinePaymentError as error:
                flash(str(error), "error")
                status = 400
            else:
                flash(_(
                    "已生成订单 %(number)s，请让客户扫码支付 %(amount)s 元。", number=order.out_trade_no, amount=format_money(order.amount)
                ), "success")
                return redirect(url_for("payments.online_order", account_id=account.id))
    orders = db.session.scalars(
        sa.select(OnlineOrder).filter_by(account_id=account.id).order_by(OnlineOrder.id.desc()).limit(10)
    ).all()
    if request.args.get("refresh") and orders:
        refresh_order(orders[0])
        db.session.refresh(orders[0])
    page = render_template(
        "payments/online.html", account=account, owed=amount_owed(account), form=form, orders=orders,
        money=format_money, local=format_local, qr_svg=qr_svg, channels=PAYMENT_CHANNELS, statuses=ONLINE_ORDER_STATUSES,
    )
    return page, status


def qr_svg(text):
    """Draw a payment link as an inline SVG QR code, or "" for an empty link."""
    if not text:
        return ""
    return segno.make(text, error="m").svg_inline(scale=5, dark="#000", light="#fff")


@bp.route("/<int:payment_id>/receipt.pdf")
@login_required
def receipt_pdf(payment_id):
    """Send the receipt PDF of a payment. Every print after the first is marked 补打."""
    payment = _load_payment(payment_id)
    return _receipt_response(print_receipt, payment, f"receipt-{payment.receipt_no}.pdf")


def _receipt_response(print_function, record, filename):
    """Print a receipt of `record` with `print_function` and send it inline, or answer 503 when it cannot be drawn."""
    try:
        pdf = print_function(record)
    except ReceiptError as error:
        logger.error("Receipt %s could not be drawn: %s", filename, error)
        abort(503, str(error))
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.route("/refunds/<int:refund_id>/receipt.pdf")
@login_required
def refund_receipt_pdf(refund_id):
    """Send the receipt PDF of a cash refund at the counter. Every print after the first is marked 补打."""
    refund = db.first_or_404(
        sa.select(Refund).filter_by(id=refund_id),
        description=_("未找到编号为 %(id)s 的退费，或它不属于您的公司。", id=refund_id),
    )
    _load_payment(refund.payment_id)
    if not refund.receipt_no or refund.status != "succeeded":
        abort(404, _("退费 %(id)s 不是已完成的柜台退费，没有退费收据；原路退回的退费以渠道到账为准。", id=refund_id))
    return _receipt_response(print_refund_receipt, refund, f"refund-receipt-{refund.receipt_no}.pdf")


def _notification_response(channel_code):
    # The channel signs the raw body, so it is read before anything parses it.
    raw_body = request.get_data(cache=True, as_text=False, parse_form_data=False)
    receipt, reply = receive_notification(channel_code, request.headers, raw_body)
    if receipt.outcome == "pending":
        # After the commit, so the task finds the row.
        apply_requests.request(receipt.company_id)
    return Response(reply.body, status=reply.status, content_type=reply.content_type)


@bp.route("/notify/wechat", methods=["POST"])
@csrf.exempt
def notify_wechat():
    """Receive a WeChat Pay notification: 204 once stored for applying, 4xx with code FAIL when rejected.

    Any 2xx stops the channel's retries, so only verified notifications get one.
    """
    return _notification_response("wechat")


@bp.route("/notify/alipay", methods=["POST"])
@csrf.exempt
def notify_alipay():
    """Receive an Alipay notification: the body `success` once stored for applying, `fail` when rejected."""
    return _notification_response("alipay")


@bp.route("/bank/collect", methods=["POST"])
@csrf.exempt
def bank_collect():
    """Answer a collecting bank's query, payment or reversal with a signed JSON reply."""
    raw_body = request.get_data(cache=True, as_text=False, parse_form_data=False)
    answer = handle_bank_request(request.headers, raw_body)
    response = Response(answer.reply.body, status=answer.reply.status, content_type=answer.reply.content_type)
    for name, value in answer.headers.items():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
