"""Receipt content of a payment or counter refund, and receipt printing."""

import base64
import logging

import sqlalchemy as sa
from flask_babel import gettext as _

from app.billing.models import LedgerEntry
from app.extensions import db
from app.i18n import translate_label
from app.invoicing.issuing import invoice_profile
from app.invoicing.models import INVOICE_METHODS, LIVE_STATUSES, Invoice
from app.messaging.events import emit
from app.invoicing.receipt import render_receipt_pdf
from app.money import amount_in_words, format_money, format_quantity
from app.org.models import Company
from app.payments.models import Payment, Refund
from app.payments.services import charge_facts
from app.clock import local_time
from app.tariffs.models import Season

logger = logging.getLogger(__name__)

# Invoice mode of a company -> receipt line on how the payer gets an invoice. An e-invoice is
# issued by a Celery task after the payment commits, so the payer only collects its file.
INVOICE_NOTES = {
    "e_invoice": "本收据不是发票。电子发票在缴费后自动开具，无需申请；如需发票文件，请凭收据号到营业厅索取。",
    "paper_tax_invoice": "本收据不是发票。如需增值税发票，请持本收据到营业厅开具。",
    "receipt": "本收据为收费凭证，不是发票。如需发票，请持本收据到营业厅咨询。",
}


def payment_items(payment):
    """List what a payment paid, as (label, amount) in posting order: receivables, late fees and any credit.

    The items add up to the payment's amount. Labels are Chinese, as the receipt prints them.
    """
    return [(_item_label(kind, name, ""), -amount) for kind, amount, name in _payment_rows(payment)]


def shown_payment_items(payment):
    """List the items of `payment_items` with labels in the reader's language, for the payment page."""
    return [(_shown_item_label(kind, name), -amount) for kind, amount, name in _payment_rows(payment)]


def _payment_rows(payment):
    return db.session.execute(
        sa.select(LedgerEntry.kind, LedgerEntry.amount, Season.name)
        .outerjoin(Season, LedgerEntry.season_id == Season.id)
        .where(
            LedgerEntry.cause_type == "payment", LedgerEntry.cause_id == payment.id,
            LedgerEntry.kind.in_(("payment", "late_fee_payment", "credit")),
        )
        .order_by(LedgerEntry.id)
    ).all()


def _shown_item_label(kind, season_name):
    if kind == "credit":
        return _("多缴款（预收余额）")
    if kind == "late_fee_payment":
        return _("%(season)s 供暖季滞纳金", season=season_name)
    return _("%(season)s 供暖季热费", season=season_name) if season_name else _("往年欠费")


def _item_label(kind, season_name, suffix):
    if kind == "credit":
        return "多缴款（预收余额）" + suffix
    if kind in ("late_fee_payment", "late_fee_refund"):
        return f"{season_name} 供暖季滞纳金{suffix}"
    return f"{season_name} 供暖季热费{suffix}" if season_name else f"往年欠费{suffix}"


def receipt_context(payment, print_number=1):
    """Collect everything the receipt template shows for one payment."""
    account = payment.account
    company = db.session.get(Company, payment.company_id)
    facts = charge_facts(account, payment.season)
    profile = invoice_profile(company.id)
    seal = f"data:image/png;base64,{base64.b64encode(profile.seal_png).decode('ascii')}" if profile.seal_png else ""
    return {
        "company_name": company.name,
        "receipt_title": profile.title or f"{company.name} 供热费收据",
        "face_notes": profile.notes,
        "seal_data_url": seal,
        "receipt_no": payment.receipt_no,
        "paid_at": local_time(payment.paid_at),
        "payer_name": payment.payer_name,
        "account_no": account.account_no,
        "legacy_no": account.legacy_no or "",
        "address": account.address,
        "season_name": payment.season.name if payment.season else "",
        "charge_area": format_quantity(facts.charge_area),
        "unit_price": format_quantity(facts.unit_price),
        "ratio_percent": f"{(facts.ratio * 100).normalize():f}" if facts.ratio is not None and facts.ratio != 1 else "",
        "items": [(label, format_money(amount)) for label, amount in payment_items(payment)],
        "amount": format_money(payment.amount),
        "amount_in_words": amount_in_words(payment.amount),
        "method_label": payment.method_label,
        "channel_label": payment.channel_label,
        "cashier_name": payment.collector_name,
        "note": payment.note,
        "invoice_note": INVOICE_NOTES.get(company.invoice_mode, INVOICE_NOTES["receipt"]),
        "print_number": print_number,
    }


def print_receipt(payment):
    """Count a print of the payment's receipt and return the PDF. Prints after the first are marked 补打."""
    db.session.execute(
        sa.update(Payment).where(Payment.id == payment.id).values(receipt_prints=Payment.receipt_prints + 1)
    )
    db.session.refresh(payment, ["receipt_prints"])
    try:
        pdf = render_receipt_pdf(receipt_context(payment, payment.receipt_prints))
        if payment.receipt_prints == 1:
            emit_invoice_issued(payment)
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    logger.info("Printed receipt %s of payment %s (print %s)", payment.receipt_no, payment.id, payment.receipt_prints)
    return pdf


def refund_items(refund):
    """List what a refund gave back, as (label, amount) in posting order: the credit, then seasons and their late fees."""
    rows = db.session.execute(
        sa.select(LedgerEntry.kind, LedgerEntry.amount, Season.name)
        .outerjoin(Season, LedgerEntry.season_id == Season.id)
        .where(LedgerEntry.cause_type == "refund", LedgerEntry.cause_id == refund.id)
        .order_by(LedgerEntry.id)
    ).all()
    return [(_item_label(kind, name, "退回"), amount) for kind, amount, name in rows]


def refund_receipt_context(refund, print_number=1):
    """Collect everything the refund receipt template shows for one counter refund."""
    payment = db.session.get(Payment, refund.payment_id)
    company = db.session.get(Company, refund.company_id)
    profile = invoice_profile(company.id)
    seal = f"data:image/png;base64,{base64.b64encode(profile.seal_png).decode('ascii')}" if profile.seal_png else ""
    handler = refund.approved_by or refund.requested_by
    return {
        "company_name": company.name,
        "receipt_title": f"{profile.title or f'{company.name} 供热费收据'}（退费）",
        "face_notes": profile.notes,
        "seal_data_url": seal,
        "receipt_no": refund.receipt_no,
        "refunded_at": local_time(refund.completed_at or refund.requested_at),
        "payee_name": payment.payer_name,
        "account_no": payment.account.account_no,
        "legacy_no": payment.account.legacy_no or "",
        "address": payment.account.address,
        "payment_receipt_no": payment.receipt_no,
        "paid_at": local_time(payment.paid_at),
        "payment_amount": format_money(payment.amount),
        "items": [(label, format_money(amount)) for label, amount in refund_items(refund)],
        "amount": format_money(refund.amount),
        "amount_in_words": amount_in_words(refund.amount),
        "reason": refund.reason,
        "kind_label": refund.kind_label,
        "cashier_name": handler.name if handler is not None else "",
        "print_number": print_number,
    }


def print_refund_receipt(refund):
    """Count a print of a counter refund's receipt and return the PDF. Prints after the first are marked 补打."""
    db.session.execute(sa.update(Refund).where(Refund.id == refund.id).values(receipt_prints=Refund.receipt_prints + 1))
    db.session.refresh(refund, ["receipt_prints"])
    try:
        pdf = render_receipt_pdf(refund_receipt_context(refund, refund.receipt_prints), "invoicing/refund_receipt.html")
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    logger.info("Printed refund receipt %s of refund %s (print %s)", refund.receipt_no, refund.id, refund.receipt_prints)
    return pdf


def payment_invoice_context(payment):
    """Template values of the invoice section of a payment page."""
    from flask_login import current_user

    from app.org.services import has_permission

    company = db.session.get(Company, payment.company_id)
    invoices = db.session.scalars(sa.select(Invoice).where(Invoice.payment_id == payment.id).order_by(Invoice.id)).all()
    return {
        "invoices": invoices,
        "invoice_mode": company.invoice_mode,
        "invoice_method_label": translate_label(INVOICE_METHODS.get(company.invoice_mode, company.invoice_mode)),
        "has_live_blue": any(i.direction == "blue" and i.status in LIVE_STATUSES for i in invoices),
        "can_issue": has_permission(current_user, "invoice.issue", payment.company_id),
    }
def emit_invoice_issued(payment):
    """Record the `invoice.issued` event of a receipt's first print (see docs/integrations.md).

    The receipt is the only document Heatflow issues today; tax invoices will send the
    same event with another `document_type`.
    """
    emit(payment.company_id, "invoice.issued", f"receipt:{payment.receipt_no}", {
        "document_type": "receipt", "document_no": payment.receipt_no, "payment_id": payment.id,
        "account_id": payment.account_id, "account_no": payment.account.account_no,
        "amount": format_money(payment.amount), "paid_at": payment.paid_at,
    })
