"""Counter payments (find an account, take a payment, show it, print its receipt) and the
WeChat Pay notification endpoint."""

import logging
import uuid

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.extensions import csrf, db
from app.forms.payments import CounterPaymentForm
from app.invoicing.receipt import ReceiptError
from app.invoicing.services import payment_invoice_context, payment_items, print_receipt
from app.money import format_money, format_quantity
from app.network.models import Account
from app.network.services import search_accounts
from app.org.services import has_permission
from app.payments.models import Payment
from app.clock import local_time
from app.payments.online import handle_wechat_notification
from app.payments.services import PaymentError, amount_owed, charge_facts, collect_payment

logger = logging.getLogger(__name__)
bp = Blueprint("payments", __name__, url_prefix="/payments")
SEARCH_LIMIT = 50


def _require_collect(company_id=None):
    if not has_permission(current_user, "payment.collect", company_id):
        abort(403, "您没有柜台收费的权限，请联系本公司管理员分配“收费员”角色。")


def _load_account(account_id):
    _require_collect()
    account = db.session.scalar(sa.select(Account).filter_by(id=account_id))
    if account is None:
        abort(404, f"未找到编号为 {account_id} 的用户，或该用户不属于您的公司。")
    _require_collect(account.company_id)
    return account


def _load_payment(payment_id):
    _require_collect()
    payment = db.session.scalar(sa.select(Payment).filter_by(id=payment_id))
    if payment is None:
        abort(404, f"未找到编号为 {payment_id} 的收款记录，或该记录不属于您的公司。")
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
            flash(f"已收款 {format_money(payment.amount)} 元，收据号 {payment.receipt_no}。", "success")
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
    """Show one payment, what it paid and the link to its receipt."""
    payment = _load_payment(payment_id)
    return render_template(
        "payments/payment.html", payment=payment, items=payment_items(payment), paid_at=local_time(payment.paid_at),
        owed=amount_owed(payment.account), money=format_money, **payment_invoice_context(payment),
    )


@bp.route("/<int:payment_id>/receipt.pdf")
@login_required
def receipt_pdf(payment_id):
    """Send the receipt PDF of a payment. Every print after the first is marked 补打."""
    payment = _load_payment(payment_id)
    try:
        pdf = print_receipt(payment)
    except ReceiptError as error:
        logger.error("Receipt of payment %s could not be drawn: %s", payment.id, error)
        abort(503, str(error))
    filename = f"receipt-{payment.receipt_no}.pdf"
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.route("/notify/wechat", methods=["POST"])
@csrf.exempt
def notify_wechat():
    """Receive a WeChat Pay notification: 204 when handled, 4xx with code FAIL when rejected.

    The channel signs the raw body, so it is read before anything parses it. Any 2xx stops
    the channel's retries, so only verified notifications get one.
    """
    raw_body = request.get_data(cache=True, as_text=False, parse_form_data=False)
    result = handle_wechat_notification(request.headers, raw_body)
    if not result.accepted:
        return {"code": "FAIL", "message": result.reason}, 400
    return "", 204
