"""Tax invoices of payments: building lines with VAT, paper invoices recorded by the cashier,
e-invoices through the vendor, and red-letter reversals when a waiver lowers an invoiced amount.

Nothing here runs inside a payment's transaction: a payment is committed first, and its
invoice is made afterwards (by a Celery task for e-invoices), so a failed invoice never
blocks or rolls back a payment. A failed e-invoice stays listed until it is issued again.
"""

import logging
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from app.billing.models import LedgerEntry
from app.clock import local_time
from app.extensions import db
from app.i18n import DEFAULT_LOCALE, M_, Message
from app.integrations import nuonuo
from app.invoicing.models import LIVE_STATUSES, Invoice, InvoiceLine, InvoiceProfile, utcnow
from app.invoicing.vat import line_tax
from app.locking import lock_row
from app.money import ZERO
from app.org.models import Company
from app.payments.models import Payment, Refund
from app.tariffs.models import Season
from app.texts import clean_text

logger = logging.getLogger(__name__)

PAPER_CODE_PATTERN = re.compile(r"[0-9]{10}|[0-9]{12}")
PAPER_NUMBER_PATTERN = re.compile(r"[0-9]{8}")
REASON_MAX = 255
GOODS_NAME = "*供热*热费"
# Goods name of an invoice line that invoices late fees, which are charged with the heat.
LATE_FEE_GOODS_NAME = "*供热*滞纳金"
# Ledger kind of a payment's part -> the invoice line item it is invoiced as.
INVOICED_KINDS = {"payment": "charge", "late_fee_payment": "late_fee"}
# Ledger kind of a refund's part -> the invoice line item it gives back. The `credit` part
# (money beyond what was owed) was never invoiced, so it has no item.
REFUNDED_ITEMS = {"refund": "charge", "reversal": "charge", "late_fee_refund": "late_fee"}
PENDING_KEY = "heatflow_invoices_to_issue"


class InvoiceError(ValueError):
    """An invoice action that cannot be done as requested; its Message is shown, or stored, and translated for the reader."""


def invoice_profile(company_id):
    """Return the company's InvoiceProfile, or an unsaved one with the defaults."""
    profile = db.session.scalar(sa.select(InvoiceProfile).filter_by(company_id=company_id))
    return profile or InvoiceProfile(company_id=company_id, title="", notes="", seller_tax_id="", vat_rate=Decimal("0.09"), residential_exempt=True)


def _line_label(item, season_name):
    if item == "late_fee":
        return f"{season_name} 供暖季滞纳金"
    return f"{season_name} 供暖季热费" if season_name else "往年欠费"


def payment_lines(payment):
    """List what a payment paid as (label, season id or None, amount, item), in posting order.

    `item` is charge for a season's receivable or prior arrears and late_fee for a season's
    late fees. A credit (money beyond what was owed) is not invoiced.
    """
    rows = db.session.execute(
        sa.select(LedgerEntry.kind, LedgerEntry.amount, LedgerEntry.season_id, Season.name)
        .outerjoin(Season, LedgerEntry.season_id == Season.id)
        .where(
            LedgerEntry.cause_type == "payment", LedgerEntry.cause_id == payment.id,
            LedgerEntry.kind.in_(tuple(INVOICED_KINDS)),
        )
        .order_by(LedgerEntry.id)
    ).all()
    return [
        (_line_label(INVOICED_KINDS[kind], name), season_id, -amount, INVOICED_KINDS[kind])
        for kind, amount, season_id, name in rows
    ]


def refunded_items(refund_ids):
    """Sum what the refunds `refund_ids` (ids or a select of them) gave back, as {(season id, item): positive amount}."""
    rows = db.session.execute(
        sa.select(LedgerEntry.season_id, LedgerEntry.kind, sa.func.sum(LedgerEntry.amount))
        .where(LedgerEntry.cause_type == "refund", LedgerEntry.cause_id.in_(refund_ids), LedgerEntry.kind.in_(tuple(REFUNDED_ITEMS)))
        .group_by(LedgerEntry.season_id, LedgerEntry.kind)
    ).all()
    totals = {}
    for season_id, kind, amount in rows:
        key = (season_id, REFUNDED_ITEMS[kind])
        totals[key] = totals.get(key, ZERO) + Decimal(amount)
    return {key: amount for key, amount in totals.items() if amount > 0}


def kept_lines(payment, entries):
    """Return the lines of `entries` (from payment_lines) less what the payment's refunds gave back, per season and item.

    A refund posts its ledger lines when it succeeds, so only completed refunds count. A
    line given back in full is left out, so an empty list means the payment was refunded in full.
    """
    refunded = refunded_items(sa.select(Refund.id).where(Refund.payment_id == payment.id))
    kept = []
    for label, season_id, amount, item in entries:
        key = (season_id, item)
        # A season and item may have more than one paid line, so the refunded sum is used up line by line.
        given_back = min(refunded.get(key, ZERO), amount)
        if given_back:
            refunded[key] -= given_back
        if amount > given_back:
            kept.append((label, season_id, amount - given_back, item))
    return kept


def add_invoice_lines(invoice, entries, user_type, profile):
    """Attach lines (label, season id, tax-inclusive amount, item[, VAT]) to `invoice` and set its totals.

    A late fee is taxed as the heat it was charged on. The VAT of a line is worked out from
    its amount unless the entry gives it. A red line that reverses all that is left of a blue
    line is given the rest of that line's VAT, so the blue line's VAT is reversed exactly.
    """
    total = tax_total = ZERO
    for position, (label, season_id, amount, item, *given_tax) in enumerate(entries, start=1):
        tax = line_tax(invoice.company_id, abs(amount), user_type, profile)
        signed_tax = tax.tax if amount >= 0 else -tax.tax
        if given_tax and given_tax[0] is not None:
            signed_tax = given_tax[0]
        invoice.lines.append(
            InvoiceLine(
                company_id=invoice.company_id, position=position, label=label[:100], season_id=season_id, item=item,
                user_type=user_type, amount=amount, tax_rate=tax.rate, tax_amount=signed_tax, vat_exempt=tax.exempt,
            )
        )
        total += amount
        tax_total += signed_tax
    invoice.amount = total
    invoice.tax_amount = tax_total


def live_blue_invoice(payment_id):
    """Return the payment's blue invoice that is pending, issuing or issued, or None."""
    return db.session.scalar(
        sa.select(Invoice).where(Invoice.payment_id == payment_id, Invoice.direction == "blue", Invoice.status.in_(LIVE_STATUSES))
    )


def _new_blue_invoice(payment, medium):
    company = db.session.get(Company, payment.company_id)
    profile = invoice_profile(payment.company_id)
    entries = payment_lines(payment)
    if not entries:
        raise InvoiceError(M_("收据 %(receipt)s 没有冲抵应收的明细（可能全部为多缴款），无可开票金额。", receipt=payment.receipt_no))
    # A blue invoice made after a refund states only the amounts not refunded, so that
    # refund needs no red invoice.
    entries = kept_lines(payment, entries)
    if not entries:
        logger.info("Payment %s (receipt %s) was refunded in full; no blue invoice is made", payment.id, payment.receipt_no)
        raise InvoiceError(M_("收据 %(receipt)s 的款项已全部退回，无可开票金额，不开具发票。", receipt=payment.receipt_no))
    invoice = Invoice(company_id=payment.company_id, payment_id=payment.id, medium=medium, direction="blue", status="pending")
    add_invoice_lines(invoice, entries, payment.account.user_type, profile)
    if medium == "electronic":
        previous = db.session.scalar(sa.select(sa.func.count(Invoice.id)).where(Invoice.payment_id == payment.id, Invoice.direction == "blue"))
        invoice.order_no = f"{company.code}I{payment.id}" + (f"-{previous + 1}" if previous else "")
    db.session.add(invoice)
    db.session.flush()
    return invoice


# -- paper invoices


def _clean_digits(value, label):
    text = unicodedata.normalize("NFKC", value or "").strip().replace(" ", "")
    if not text:
        raise InvoiceError(M_("请填写%(field)s。", field=label))
    return text


def record_paper_invoice(payment, invoice_code, invoice_number, user, invoice=None):
    """Record the code and number of a paper invoice printed on the tax device for a payment.

    Without `invoice` a blue invoice is created with the payment's lines; with a pending red
    `invoice` (made by a reversal) its printed numbers are recorded. Commits.
    """
    company = db.session.get(Company, payment.company_id)
    if company.invoice_mode != "paper_tax_invoice":
        raise InvoiceError(M_("%(company)s 的开票方式不是税控纸质发票，不能登记纸质发票号码。", company=company.name))
    code = _clean_digits(invoice_code, _("发票代码"))
    number = _clean_digits(invoice_number, _("发票号码"))
    if not PAPER_CODE_PATTERN.fullmatch(code):
        raise InvoiceError(M_("发票代码「%(code)s」无效：须为 10 位或 12 位数字，请按发票左上角的代码填写。", code=code))
    if not PAPER_NUMBER_PATTERN.fullmatch(number):
        raise InvoiceError(M_("发票号码「%(number)s」无效：须为 8 位数字，请按发票右上角的号码填写。", number=number))
    lock_row(Payment, payment.id)
    duplicate = db.session.scalar(
        sa.select(Invoice).where(Invoice.company_id == payment.company_id, Invoice.invoice_code == code, Invoice.invoice_number == number)
    )
    if duplicate is not None:
        db.session.rollback()
        raise InvoiceError(M_(
            "发票代码 %(code)s 号码 %(number)s 已登记在收据 %(receipt)s 上（%(status)s），同一张发票不能登记两次；请核对纸质发票上的号码。",
            code=code, number=number, receipt=duplicate.payment.receipt_no, status=duplicate.status_label,
        ))
    if invoice is None:
        if live_blue_invoice(payment.id) is not None:
            db.session.rollback()
            raise InvoiceError(M_("收据 %(receipt)s 已登记发票；如需重开，请先作废原发票。", receipt=payment.receipt_no))
        try:
            invoice = _new_blue_invoice(payment, "paper")
        except InvoiceError:
            db.session.rollback()
            raise
    elif invoice.status != "pending" or invoice.medium != "paper":
        db.session.rollback()
        raise InvoiceError(M_("该发票不是待登记的纸质发票。"))
    invoice.invoice_code = code
    invoice.invoice_number = number
    invoice.status = "issued"
    invoice.issued_at = utcnow()
    invoice.recorded_by_id = user.id
    try:
        db.session.commit()
    except IntegrityError:
        # Another cashier recorded the same code and number in the meantime; the unique key kept theirs.
        db.session.rollback()
        raise InvoiceError(M_(
            "发票代码 %(code)s 号码 %(number)s 刚被登记在另一笔收款上，同一张发票不能登记两次；请核对纸质发票上的号码。",
            code=code, number=number,
        )) from None
    logger.info("Paper invoice %s/%s recorded on payment %s by user %s", code, number, payment.id, user.id)
    return invoice


def void_paper_invoice(invoice, reason, user):
    """Void an issued paper invoice with a reason; the voided numbers stay taken. Commits."""
    reason = clean_text(reason)
    if not reason:
        raise InvoiceError(M_("请填写作废原因，例如“打印错位”或“交款人要求更改抬头”。"))
    if len(reason) > REASON_MAX:
        raise InvoiceError(M_("作废原因最长 %(max)s 个字，当前 %(length)s 个字，请删减后重试。", max=REASON_MAX, length=len(reason)))
    if invoice.medium != "paper":
        raise InvoiceError(M_("电子发票不能作废，只能红冲。"))
    invoice = lock_row(Invoice, invoice.id)
    if invoice.status != "issued":
        db.session.rollback()
        raise InvoiceError(M_(
            "发票 %(code)s %(number)s 当前为「%(status)s」，只有已开票的发票可以作废。",
            code=invoice.invoice_code or "", number=invoice.invoice_number or "", status=invoice.status_label,
        ))
    if invoice.direction == "blue":
        issued_reds = _waiting_reds(invoice.id, "issued")
        if issued_reds:
            # Voiding would leave the red invoice live while a new blue one already leaves out what it reversed.
            db.session.rollback()
            raise InvoiceError(M_(
                "发票 %(code)s %(number)s 已被红字发票 %(red_code)s %(red_number)s 冲减，不能作废；"
                "请保留原发票：它与红字发票一起列明了退费后实收的金额。",
                code=invoice.invoice_code or "", number=invoice.invoice_number or "",
                red_code=issued_reds[0].invoice_code or "", red_number=issued_reds[0].invoice_number or "",
            ))
    invoice.status = "voided"
    invoice.reason = reason
    invoice.voided_at = utcnow()
    invoice.voided_by_id = user.id
    if invoice.direction == "blue":
        for red in _waiting_reds(invoice.id, "pending"):
            mark_not_needed(red, invoice)
    db.session.commit()
    logger.info("Paper invoice %s/%s of payment %s voided by user %s", invoice.invoice_code, invoice.invoice_number, invoice.payment_id, user.id)
    return invoice


# -- e-invoices


# Config keys the vendor client needs; each is set by the environment variable HEATFLOW_<key> (config/__init__.py).
VENDOR_SETTINGS = ("EINVOICE_API_BASE", "EINVOICE_APP_KEY", "EINVOICE_APP_SECRET")


@dataclass
class SetupGaps:
    """The pieces a company lacks to issue e-invoices: unset vendor config keys, and whether its seller tax id is missing."""

    vendor_settings: list
    seller_tax_id_missing: bool

    def __bool__(self):
        return bool(self.vendor_settings) or self.seller_tax_id_missing

    @property
    def environment_variables(self):
        return [f"HEATFLOW_{name}" for name in self.vendor_settings]


def e_invoice_setup_gaps(company_id):
    """Return every piece a company still lacks to issue e-invoices, all at once, as SetupGaps."""
    config = current_app.config
    missing = [name for name in VENDOR_SETTINGS if not config.get(name)]
    return SetupGaps(missing, not invoice_profile(company_id).seller_tax_id)


def vendor_client(company_id):
    """Build the vendor client for a company, or raise InvoiceError naming every missing piece of the setup.

    The stored error names what is missing for every reader; the failed-invoice list and
    the invoice settings page tell each role what to do about it.
    """
    gaps = e_invoice_setup_gaps(company_id)
    if gaps:
        pieces = []
        if gaps.vendor_settings:
            logger.warning("E-invoice vendor not configured for company %s: %s unset", company_id, ", ".join(gaps.environment_variables))
            pieces.append(M_("电子发票服务商未配置"))
        if gaps.seller_tax_id_missing:
            pieces.append(M_("本公司未填写纳税人识别号"))
        raise InvoiceError(M_("开票条件不完整：%(pieces)s。", pieces=pieces))
    config = current_app.config
    profile = invoice_profile(company_id)
    credentials = nuonuo.VendorCredentials(config["EINVOICE_APP_KEY"], config["EINVOICE_APP_SECRET"], config.get("EINVOICE_ACCESS_TOKEN", ""))
    return nuonuo.NuonuoClient(config["EINVOICE_API_BASE"], credentials, profile.seller_tax_id)


def ensure_e_invoice(payment_id):
    """Return the id of the payment's live blue e-invoice, creating a pending one when there is none. Commits."""
    payment = lock_row(Payment, payment_id)
    if payment is None:
        raise InvoiceError(M_("收款记录 %(id)s 不存在。", id=payment_id))
    invoice = live_blue_invoice(payment.id)
    if invoice is None:
        invoice = _new_blue_invoice(payment, "electronic")
    db.session.commit()
    return invoice.id


def vendor_order(invoice):
    """Build the vendor order of an invoice from its stored lines."""
    payment = invoice.payment
    account = payment.account
    profile = invoice_profile(invoice.company_id)
    details = [
        nuonuo.invoice_line(
            goods_name=LATE_FEE_GOODS_NAME if line.item == "late_fee" else GOODS_NAME, amount=line.amount, tax=line.tax_amount, rate=line.tax_rate, exempt=line.vat_exempt,
        )
        for line in invoice.lines
    ]
    order = {
        "orderNo": invoice.order_no,
        "invoiceDate": local_time(invoice.created_at).strftime("%Y-%m-%d %H:%M:%S"),
        "invoiceType": "2" if invoice.direction == "red" else "1",
        "invoiceLine": "pc",
        "salerTaxNum": profile.seller_tax_id,
        "buyerName": payment.payer_name or account.customer_name,
        "buyerTaxNum": "",
        "naturalPersonFlag": "1",
        "clerk": "系统",
        "pushMode": "-1",
        "remark": (f"收据号 {payment.receipt_no} 用户编号 {account.account_no} " + profile.notes).strip()[:200],
        "invoiceDetail": details,
    }
    if invoice.direction == "red":
        order["invoiceNum"] = invoice.original.invoice_number
        order["redReason"] = invoice.reason[:50]
    return order


def advance_e_invoice(invoice_id, client=None):
    """Take one step of an e-invoice with the vendor and return its status afterwards. Commits.

    Red invoices the step releases are left to the pending sweep. The issue task calls
    step_e_invoice instead, which returns them so they are sent at once.
    """
    return step_e_invoice(invoice_id, client)[0]


def step_e_invoice(invoice_id, client=None):
    """Take one step of an e-invoice with the vendor; return (status afterwards, ids of red invoices released). Commits.

    pending → submit the order (a repeated order number means it was submitted before);
    issuing → query the result: issued stores the number and the PDF, failed stores the cause.
    A red invoice is submitted only once its blue one is issued. Until then the step returns
    "waiting" and changes nothing, and a blue one that failed or was voided makes it
    not_needed. The step that issues a blue invoice returns the ids of the red invoices
    waiting for it. It does so once, because a later step finds the blue one issued and
    releases nothing.
    Raises nuonuo.VendorUnavailable when the vendor cannot be reached, so the caller retries.
    """
    original_id = db.session.scalar(sa.select(Invoice.original_id).where(Invoice.id == invoice_id))
    if original_id is not None:
        # Blue before red, the order in which a blue invoice's own step, failure and retry lock
        # them. So a red step waits for a blue step in progress and then reads its outcome.
        lock_row(Invoice, original_id)
    invoice = lock_row(Invoice, invoice_id)
    if invoice is None or invoice.medium != "electronic" or invoice.status not in ("pending", "issuing"):
        db.session.rollback()
        return (invoice.status if invoice is not None else "missing"), []
    if invoice.direction == "red" and invoice.status == "pending":
        original_status = invoice.original.status
        if original_status in ("pending", "issuing"):
            db.session.rollback()
            return "waiting", []
        if original_status != "issued":
            mark_not_needed(invoice, invoice.original)
            db.session.commit()
            return invoice.status, []
    client = client or vendor_client(invoice.company_id)
    invoice.attempts += 1
    if invoice.status == "pending":
        try:
            invoice.vendor_serial = client.request_billing(vendor_order(invoice))
        except nuonuo.VendorError as error:
            if error.code != nuonuo.DUPLICATE_ORDER_CODE:
                return _fail(invoice, M_("服务商拒绝开票：%(code)s %(reason)s", code=error.code, reason=error.describe)), []
        invoice.status = "issuing"
        db.session.commit()
        return invoice.status, []
    released = []
    result = client.query_result(invoice.order_no)
    if result is None:
        # The vendor lost or never stored the order: submit it again on the next step.
        invoice.status = "pending"
    elif result.failed:
        return _fail(invoice, M_("开票失败：%(cause)s", cause=result.fail_cause or result.status)), []
    elif result.issued:
        invoice.pdf = client.download(result.pdf_url) if result.pdf_url else None
        invoice.pdf_url = result.pdf_url[:500]
        invoice.invoice_number = result.invoice_number[:20]
        invoice.vendor_serial = result.serial or invoice.vendor_serial
        invoice.status = "issued"
        invoice.issued_at = utcnow()
        invoice.last_error = ""
        invoice.last_error_message = None
        logger.info("E-invoice %s of payment %s issued as %s", invoice.order_no, invoice.payment_id, invoice.invoice_number)
        if invoice.direction == "blue":
            released = [red.id for red in _waiting_reds(invoice.id, "pending")]
    db.session.commit()
    if released:
        logger.info("Blue e-invoice %s issued; red invoices %s that waited for it follow", invoice.order_no, released)
    return invoice.status, released


def _waiting_reds(blue_id, status):
    """Red invoices of a blue one in `status`, oldest first."""
    return db.session.scalars(
        sa.select(Invoice).where(Invoice.original_id == blue_id, Invoice.direction == "red", Invoice.status == status).order_by(Invoice.id)
    ).all()


def mark_not_needed(red, blue):
    """Mark a red invoice not needed because its blue one failed or was voided; the caller commits."""
    if blue.status == "voided":
        message = M_("原蓝字发票已作废，无需红冲。")
    else:
        message = M_("原蓝字发票 %(order)s 开票失败，无需红冲；该发票重开后将随之红冲。", order=blue.order_no or "")
    red.status = "not_needed"
    with force_locale(DEFAULT_LOCALE):
        red.last_error = str(message)[:500]
    red.last_error_message = message.as_data()
    logger.info("Red invoice %s of payment %s not needed: blue invoice %s is %s", red.order_no or red.id, red.payment_id, blue.id, blue.status)


def _fail(invoice, message):
    """Mark an invoice failed with `message`, a Message or text: Celery tasks issue e-invoices, so pages translate the stored msgid.

    Red invoices still waiting for a failed blue one become not_needed. Commits.
    """
    invoice.status = "failed"
    with force_locale(DEFAULT_LOCALE):
        invoice.last_error = str(message)[:500]
    invoice.last_error_message = message.as_data() if isinstance(message, Message) else None
    if invoice.direction == "blue":
        for red in _waiting_reds(invoice.id, "pending"):
            mark_not_needed(red, invoice)
    db.session.commit()
    logger.warning("E-invoice %s of payment %s failed: %s", invoice.order_no, invoice.payment_id, message)
    return "failed"


def mark_failed(invoice_id, message):
    """Mark an e-invoice still pending or issuing as failed, e.g. when retries ran out. Commits."""
    invoice = lock_row(Invoice, invoice_id)
    if invoice is not None and invoice.status in ("pending", "issuing"):
        _fail(invoice, message)
    else:
        db.session.rollback()


def retry_e_invoice(invoice, user):
    """Put a failed e-invoice back to pending under a new order number, so it is submitted again. Commits."""
    # The payment is locked first, as ensure_e_invoice does, so a new blue invoice for it
    # cannot be made while this one is put back.
    lock_row(Payment, invoice.payment_id)
    invoice = lock_row(Invoice, invoice.id)
    if invoice.status != "failed" or invoice.medium != "electronic":
        db.session.rollback()
        raise InvoiceError(M_("发票当前为「%(status)s」，只有开票失败的电子发票可以重开。", status=invoice.status_label))
    live = live_blue_invoice(invoice.payment_id) if invoice.direction == "blue" else None
    if live is not None:
        db.session.rollback()
        raise InvoiceError(M_("该收款已有有效的蓝字发票（订单号 %(live)s），失败的发票 %(failed)s 不再重开。",
                              live=live.order_no, failed=invoice.order_no))
    # The vendor keeps the failed order under its number, so the new submission needs another: TJI12, TJI12-2, TJI12-3 …
    base, _separator, submission = invoice.order_no.partition("-")
    invoice.order_no = f"{base}-{int(submission or 1) + 1}"
    invoice.status = "pending"
    invoice.recorded_by_id = user.id
    # The red invoices given up because this blue one failed are needed again once it is issued.
    reopened = _waiting_reds(invoice.id, "not_needed") if invoice.direction == "blue" else []
    for red in reopened:
        red.status = "pending"
        red.last_error = ""
        red.last_error_message = None
    db.session.commit()
    logger.info(
        "E-invoice of payment %s queued again as %s by user %s; red invoices %s wait for it",
        invoice.payment_id, invoice.order_no, user.id, [red.id for red in reopened],
    )
    enqueue_e_invoices([invoice.id], invoice.company_id)
    return invoice


def failed_e_invoices():
    """E-invoices that failed, or still wait for the vendor after an hour, newest first; the tenant scope limits them."""
    stale = utcnow().timestamp() - 3600
    rows = db.session.scalars(
        sa.select(Invoice).where(Invoice.medium == "electronic", Invoice.status.in_(("failed", "pending", "issuing"))).order_by(Invoice.id.desc())
    ).all()
    return [i for i in rows if i.status == "failed" or local_time(i.created_at).timestamp() < stale]


def enqueue_e_invoices(invoice_ids, company_id):
    """Send an issue task per invoice; an unreachable broker is logged and the invoices stay listed."""
    from app.tasks.invoicing import issue_e_invoice_task

    for invoice_id in invoice_ids:
        try:
            issue_e_invoice_task.delay(company_id, invoice_id=invoice_id)
        except Exception:
            logger.exception("Could not queue e-invoice %s of company %s; it stays pending", invoice_id, company_id)


def payment_posted(payment_id, company_id):
    """Start invoicing a committed payment when its company issues e-invoices; never raises.

    Runs after the payment's commit. The pending invoice row is committed before the task
    is sent, so a broker that cannot be reached leaves a pending e-invoice, which the
    sweep `invoicing.issue_pending_e_invoices` on Celery beat queues again.
    """
    try:
        company = db.session.get(Company, company_id)
        if company is None or company.invoice_mode != "e_invoice":
            return
        from app.tasks.invoicing import issue_e_invoice_task

        invoice_id = ensure_e_invoice(payment_id)
        issue_e_invoice_task.delay(company_id, invoice_id=invoice_id)
    except Exception:
        db.session.rollback()
        logger.exception("Invoicing of payment %s could not be started; the pending e-invoice sweep retries it", payment_id)


# -- red-letter reversal


def season_invoiced(account_id, season_id, item="charge"):
    """Net tax-inclusive amount invoiced for an account's season and item: live blue lines minus live red lines.

    `item` is charge (the season's heating charge) or late_fee (its late fees).
    """
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(InvoiceLine.amount), 0))
        .join(Invoice, InvoiceLine.invoice_id == Invoice.id)
        .join(Payment, Invoice.payment_id == Payment.id)
        .where(
            Payment.account_id == account_id, InvoiceLine.season_id == season_id, InvoiceLine.item == item,
            Invoice.status.in_(LIVE_STATUSES),
        )
    )
    return Decimal(total or 0)


def set_red_reason(invoice, reason):
    """Store why a red invoice is issued: Chinese text for the vendor and, for a Message, its msgid for pages."""
    with force_locale(DEFAULT_LOCALE):
        invoice.reason = str(reason)[:REASON_MAX]
    invoice.reason_message = reason.as_data() if isinstance(reason, Message) else None


def reverse_invoiced_excess(account, season, receivable_after, cause_type, cause_id, reason, item="charge"):
    """Issue red invoices for what an account's season is invoiced beyond what it owes after a reduction.

    `reason` is a Message (or text) stating the cause. `item` is what the reduction lowered:
    charge, with `receivable_after` the season's receivable, or late_fee, with
    `receivable_after` its late fees less late-fee waivers.
    Only lines of that item are reversed. Called inside the transaction that posts the
    reduction (the waiver service task). Red invoices reverse the newest live blue invoices
    first, line by line. Repeated calls for the same cause create nothing new. Returns the
    red invoices created.
    """
    created = []
    excess = season_invoiced(account.id, season.id, item) - receivable_after
    if excess <= 0:
        return created
    # A blue e-invoice still pending or issuing gets its red invoice now, which waits in
    # pending until the blue one is issued (see step_e_invoice).
    blues = db.session.scalars(
        sa.select(Invoice)
        .join(Payment, Invoice.payment_id == Payment.id)
        .where(Payment.account_id == account.id, Invoice.direction == "blue", Invoice.status.in_(LIVE_STATUSES))
        .order_by(Invoice.id.desc())
    ).all()
    company = db.session.get(Company, account.company_id)
    profile = invoice_profile(account.company_id)
    for blue in blues:
        if excess <= 0:
            break
        order_no = f"{company.code}R{blue.id}-{cause_type[:1].upper()}{cause_id}"
        if db.session.scalar(sa.select(Invoice.id).filter_by(company_id=account.company_id, order_no=order_no)) is not None:
            return created
        lines = [line for line in blue.lines if line.season_id == season.id and line.item == item]
        available = sum((line.amount for line in lines), ZERO) - _reversed(blue, season.id, item)
        portion = min(available, excess)
        if portion <= 0:
            continue
        red = Invoice(
            company_id=account.company_id, payment_id=blue.payment_id, medium=blue.medium, direction="red", original_id=blue.id,
            status="pending", order_no=order_no, cause_type=cause_type, cause_id=cause_id,
        )
        set_red_reason(red, reason)
        add_invoice_lines(red, [(lines[0].label, season.id, -portion, item)], lines[0].user_type, profile)
        db.session.add(red)
        created.append(red)
        excess -= portion
    db.session.flush()
    electronic = [red.id for red in created if red.medium == "electronic"]
    if electronic:
        db.session.info.setdefault(PENDING_KEY, []).append((account.company_id, electronic))
    logger.info(
        "Red invoices %s for account %s season %s %s after %s %s",
        [r.order_no for r in created], account.id, season.id, item, cause_type, cause_id,
    )
    return created


def _reversed(blue, season_id, item):
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(InvoiceLine.amount), 0))
        .join(Invoice, InvoiceLine.invoice_id == Invoice.id)
        .where(
            Invoice.original_id == blue.id, InvoiceLine.season_id == season_id, InvoiceLine.item == item,
            Invoice.status.in_(LIVE_STATUSES),
        )
    )
    return -Decimal(total or 0)


@event.listens_for(Session, "after_commit")
def _enqueue_after_commit(session):
    # Red invoices made inside a process step are sent to Celery only once that step's
    # transaction has committed, so the task can see them. An eager Celery (tests) would run
    # the task here, inside the commit, so the periodic sweep picks them up instead.
    pending = session.info.pop(PENDING_KEY, None)
    if not pending or current_app.config.get("CELERY_TASK_ALWAYS_EAGER"):
        return
    for company_id, invoice_ids in pending:
        enqueue_e_invoices(invoice_ids, company_id)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session):
    session.info.pop(PENDING_KEY, None)


def pending_e_invoice_ids(older_than_seconds=0):
    """Ids and companies of e-invoices waiting to be submitted, for the periodic sweep.

    A red invoice whose blue one is still pending or issuing is left out, because the step
    that issues the blue one releases it.
    """
    original = aliased(Invoice)
    rows = db.session.execute(
        sa.select(Invoice.id, Invoice.company_id, Invoice.created_at)
        .outerjoin(original, Invoice.original_id == original.id)
        .where(
            Invoice.medium == "electronic", Invoice.status == "pending",
            sa.or_(Invoice.original_id.is_(None), original.status.not_in(("pending", "issuing"))),
        )
    ).all()
    cutoff = utcnow().timestamp() - older_than_seconds
    return [(invoice_id, company_id) for invoice_id, company_id, created in rows if local_time(created).timestamp() <= cutoff]
