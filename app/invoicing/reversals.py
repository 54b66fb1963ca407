"""Red-letter invoices of refunds: a refund of an invoiced payment reverses what it gave back, line by line.

A refund posts its ledger lines in the transaction that completes it (app/payments/refunds.py).
Its red invoice is worked out afterwards by the Celery task `invoicing.reverse_refund`, sent
once that transaction has committed, so invoicing never delays, blocks or rolls back a
refund. The beat sweep `invoicing.reverse_refunds` sends the task again for succeeded refunds
whose reversal was never worked out, e.g. because the broker could not be reached.
"""

import logging
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.billing.models import LedgerEntry
from app.clock import local_time
from app.extensions import celery, db
from app.i18n import M_
from app.invoicing.issuing import add_invoice_lines, invoice_profile, mark_not_needed, payment_lines, refunded_items, set_red_reason
from app.invoicing.models import LIVE_STATUSES, Invoice, InvoiceLine, utcnow
from app.locking import lock_row
from app.money import ZERO
from app.org.models import Company
from app.payments.models import Payment, Refund

logger = logging.getLogger(__name__)
REFUNDS_KEY = "heatflow_refunds_to_reverse"


def queue_refund_reversal(refund):
    """Note a refund that succeeded in the current transaction, so its reversal task is sent after the commit."""
    db.session.info.setdefault(REFUNDS_KEY, []).append((refund.company_id, refund.id))


@event.listens_for(Session, "after_commit")
def _send_after_commit(session):
    # An eager Celery (tests) would run the task inside this commit, so the sweep
    # `invoicing.reverse_refunds` works those refunds out instead.
    pending = session.info.pop(REFUNDS_KEY, None)
    if not pending or celery.conf.task_always_eager:
        return
    from app.tasks.invoicing import reverse_refund_task

    for company_id, refund_id in pending:
        try:
            reverse_refund_task.delay(company_id, refund_id)
        except Exception:
            logger.exception("Could not queue the red invoice of refund %s of company %s; the sweep sends it again", refund_id, company_id)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session):
    session.info.pop(REFUNDS_KEY, None)


def reverse_refund(refund_id):
    """Create the red invoice of a succeeded refund, once; return the ids of red e-invoices to submit. Commits.

    The red invoice reverses, on the payment's blue invoice, each line the refund gave back
    (a season's charge, its late fee, prior arrears) by the refunded amount. A line is
    reversed at most down to what the payment still keeps for it after its refunds, so a
    line already lowered by a waiver's red invoice is not reversed twice. A refund that
    needs no red invoice gets a note saying why. Later calls for the same refund do nothing.
    """
    refund = lock_row(Refund, refund_id)
    if refund is None or refund.status != "succeeded" or refund.invoices_reversed_at is not None:
        db.session.rollback()
        return []
    payment = db.session.get(Payment, refund.payment_id)
    company = db.session.get(Company, refund.company_id)
    parts = refunded_items([refund.id])
    blue = _blue_invoice(payment.id)
    red = None
    note = None
    if not parts:
        note = M_("退费 %(id)s 只退回多缴款，这部分未开发票，无需红冲。", id=refund.id)
    elif blue is None:
        if company.invoice_mode != "receipt":
            note = M_("收据 %(receipt)s 尚未开具发票，无需红冲。", receipt=payment.receipt_no)
    elif blue.status == "voided":
        note = M_("原蓝字发票已作废，无需红冲。")
    else:
        entries = _red_entries(payment, blue, parts)
        if entries:
            red = _new_red_invoice(company, refund, blue, entries)
        else:
            note = M_("发票金额未超过该笔收款退费后实收的金额（已被其他红字发票冲减），无需红冲。")
    refund.invoices_reversed_at = utcnow()
    refund.invoice_reversal_note = note.as_data() if note is not None else None
    db.session.commit()
    if red is None:
        logger.info("Refund %s of payment %s needs no red invoice: %s", refund.id, payment.id, note)
        return []
    logger.info("Red invoice %s of %s for refund %s of payment %s is %s", red.order_no, red.amount, refund.id, payment.id, red.status)
    return [red.id] if red.medium == "electronic" and red.status == "pending" else []


def _blue_invoice(payment_id):
    """Return the payment's live blue invoice, else its latest blue invoice of any status, or None."""
    blues = db.session.scalars(
        sa.select(Invoice).where(Invoice.payment_id == payment_id, Invoice.direction == "blue").order_by(Invoice.id.desc())
    ).all()
    return next((blue for blue in blues if blue.status in LIVE_STATUSES), blues[0] if blues else None)


def _red_entries(payment, blue, parts):
    """List the red lines (label, season id, negative amount, item) of a refund's `parts`, in the blue invoice's line order.

    Each line is the refunded part, capped by what the blue invoice still states for the
    line (its amount less live red lines) beyond what the payment keeps (paid less refunded).
    """
    paid = {}
    for _label, season_id, amount, item in payment_lines(payment):
        paid[(season_id, item)] = paid.get((season_id, item), ZERO) + amount
    refunded = refunded_items(sa.select(Refund.id).where(Refund.payment_id == payment.id))
    stated = {}
    stated_tax = {}
    labels = {}
    for line in blue.lines:
        key = (line.season_id, line.item)
        stated[key] = stated.get(key, ZERO) + line.amount
        stated_tax[key] = stated_tax.get(key, ZERO) + line.tax_amount
        labels.setdefault(key, line.label)
    for key, (amount, tax) in _live_red_totals(blue.id).items():
        stated[key] = stated.get(key, ZERO) + amount
        stated_tax[key] = stated_tax.get(key, ZERO) + tax
    entries = []
    for key, label in labels.items():
        kept = paid.get(key, ZERO) - refunded.get(key, ZERO)
        portion = min(parts.get(key, ZERO), stated[key] - kept)
        if portion <= 0:
            continue
        # Reversing all that is left of the line takes the rest of its VAT, not a second rounding.
        rest_of_tax = -stated_tax[key] if portion == stated[key] else None
        entries.append((label, key[0], -portion, key[1], rest_of_tax))
    return entries


def _live_red_totals(blue_id):
    """Sum the live red lines of a blue invoice as {(season id, item): (negative amount, negative VAT)}."""
    rows = db.session.execute(
        sa.select(InvoiceLine.season_id, InvoiceLine.item, sa.func.sum(InvoiceLine.amount), sa.func.sum(InvoiceLine.tax_amount))
        .join(Invoice, InvoiceLine.invoice_id == Invoice.id)
        .where(Invoice.original_id == blue_id, Invoice.direction == "red", Invoice.status.in_(LIVE_STATUSES))
        .group_by(InvoiceLine.season_id, InvoiceLine.item)
    ).all()
    return {(season_id, item): (Decimal(amount), Decimal(tax)) for season_id, item, amount, tax in rows}


def _new_red_invoice(company, refund, blue, entries):
    """Add the red invoice of a refund against `blue`; it waits in pending while `blue` is not issued yet."""
    red = Invoice(
        company_id=company.id, payment_id=blue.payment_id, medium=blue.medium, direction="red", original_id=blue.id,
        status="pending", order_no=f"{company.code}R{blue.id}-R{refund.id}", cause_type="refund", cause_id=refund.id,
    )
    set_red_reason(red, M_("销售退回：退费 %(refund)s（%(reason)s）", refund=refund.id, reason=refund.reason))
    add_invoice_lines(red, entries, blue.lines[0].user_type, invoice_profile(company.id))
    db.session.add(red)
    if blue.status == "failed":
        # Kept as not_needed, so that a retry of the blue invoice brings the red one back.
        mark_not_needed(red, blue)
    db.session.flush()
    return red


def refunds_to_reverse(older_than_seconds=0):
    """(refund id, company id) of succeeded refunds whose red invoices were not worked out, for the sweep."""
    cutoff = utcnow().timestamp() - older_than_seconds
    rows = db.session.execute(
        sa.select(Refund.id, Refund.company_id, Refund.completed_at)
        .where(Refund.status == "succeeded", Refund.invoices_reversed_at.is_(None))
        .order_by(Refund.id)
    ).all()
    return [(refund_id, company_id) for refund_id, company_id, completed in rows if local_time(completed).timestamp() <= cutoff]
