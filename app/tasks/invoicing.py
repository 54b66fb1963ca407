"""E-invoice tasks: issue one invoice with retries and backoff, make the red invoice of a refund,
and sweep invoices left pending and refunds left unreversed."""

import logging
import time

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import celery, db
from app.i18n import M_, message_of
from app.integrations import nuonuo
from app.invoicing.issuing import InvoiceError, enqueue_e_invoices, ensure_e_invoice, mark_failed, pending_e_invoice_ids, step_e_invoice
from app.invoicing.reversals import refunds_to_reverse, reverse_refund
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)
# Waits between steps grow as base × 2^retry up to the cap: 5 s, 10 s, 20 s … 10 min with the defaults.
DEFAULT_RETRY_BASE_SECONDS = 5
DEFAULT_RETRY_CAP_SECONDS = 600
MAX_RETRIES = 12


def retry_delay(retries):
    """Seconds to wait before step `retries` + 1 of an e-invoice."""
    base = float(current_app.config.get("EINVOICE_RETRY_BASE_SECONDS", DEFAULT_RETRY_BASE_SECONDS))
    cap = float(current_app.config.get("EINVOICE_RETRY_CAP_SECONDS", DEFAULT_RETRY_CAP_SECONDS))
    return min(cap, base * 2**retries)


@celery.task(name="invoicing.issue_e_invoice", bind=True, max_retries=MAX_RETRIES)
def issue_e_invoice_task(self, company_id, payment_id=None, invoice_id=None):
    """Issue the e-invoice of a payment (or the given invoice): submit, then poll until issued or failed.

    Each run takes one step with the vendor. While the vendor works on the invoice or cannot
    be reached, the task retries with exponential backoff; when the retries run out the
    invoice is marked failed and listed for a manual retry. Returns the invoice status.
    """
    label = f"task:invoicing.issue_e_invoice:{payment_id or invoice_id}"
    with scoped(company_scope(company_id, label=label)):
        if self.request.is_eager:
            # An eager Celery (tests, HEATFLOW_CELERY_EAGER=1) cannot schedule a retry, so the
            # steps run here one after another with the same waits, blocking the caller.
            for retries in range(self.max_retries + 1):
                status, invoice_id, reason = _step(company_id, payment_id, invoice_id)
                if status in FINAL_STATUSES:
                    return status
                if retries < self.max_retries:
                    time.sleep(retry_delay(retries))
            mark_failed(invoice_id, M_("重试 %(count)s 次后仍未开具：%(reason)s", count=self.max_retries, reason=reason))
            return "failed"

        status, invoice_id, reason = _step(company_id, payment_id, invoice_id)
        if status in FINAL_STATUSES:
            return status
        if self.request.retries >= self.max_retries:
            mark_failed(invoice_id, M_("重试 %(count)s 次后仍未开具：%(reason)s", count=self.max_retries, reason=reason))
            return "failed"
        delay = retry_delay(self.request.retries)
        logger.info("E-invoice %s is %s; step %s again in %.1f s", invoice_id, status, self.request.retries + 2, delay)
        raise self.retry(kwargs={"payment_id": None, "invoice_id": invoice_id}, countdown=delay)


# Statuses that end the task. A red invoice "waiting" for its blue one is sent again by the
# step that issues the blue one, so its task ends too.
FINAL_STATUSES = ("issued", "failed", "voided", "missing", "waiting", "not_needed")


def _step(company_id, payment_id, invoice_id):
    """Take one step; return (status, invoice id, reason to retry). Errors that a retry cannot fix mark the invoice failed.

    The step that issues a blue invoice sends the issue tasks of the red invoices waiting for it.
    """
    try:
        if invoice_id is None:
            invoice_id = ensure_e_invoice(payment_id)
        status, released = step_e_invoice(invoice_id)
        enqueue_e_invoices(released, company_id)
        return status, invoice_id, M_("服务商仍在开票")
    except InvoiceError as error:
        db.session.rollback()
        logger.warning("E-invoice of payment %s / invoice %s cannot be issued: %s", payment_id, invoice_id, error)
        if invoice_id is not None:
            mark_failed(invoice_id, message_of(error) or str(error))
        return "failed", invoice_id, str(error)
    except nuonuo.VendorUnavailable as error:
        db.session.rollback()
        logger.warning("E-invoice vendor unavailable for invoice %s: %s", invoice_id, error)
        return "unavailable", invoice_id, str(error)
    except nuonuo.VendorError as error:
        db.session.rollback()
        mark_failed(invoice_id, M_("服务商返回错误：%(code)s %(reason)s", code=error.code, reason=error.describe))
        return "failed", invoice_id, str(error)


@celery.task(name="invoicing.issue_pending_e_invoices")
def issue_pending_e_invoices_task(older_than_seconds=None):
    """Queue an issue task for every e-invoice still pending after `older_than_seconds`
    (EINVOICE_SWEEP_S by default; Celery beat runs it that often); returns the count."""
    if older_than_seconds is None:
        older_than_seconds = current_app.config["EINVOICE_SWEEP_S"]
    pending = pending_e_invoice_ids(older_than_seconds)
    for invoice_id, company_id in pending:
        issue_e_invoice_task.delay(company_id, invoice_id=invoice_id)
    logger.info("Queued %s pending e-invoices", len(pending))
    return len(pending)


@celery.task(name="invoicing.reverse_refund", bind=True, max_retries=MAX_RETRIES)
def reverse_refund_task(self, company_id, refund_id):
    """Make the red invoice of a succeeded refund and send its issue task; returns the ids of red e-invoices sent.

    A database error is retried with the e-invoice backoff. When the retries run out, or
    under an eager Celery, the refund stays unreversed and the sweep sends the task again.
    """
    with scoped(company_scope(company_id, label=f"task:invoicing.reverse_refund:{refund_id}")):
        try:
            red_ids = reverse_refund(refund_id)
        except SQLAlchemyError:
            db.session.rollback()
            if self.request.is_eager or self.request.retries >= self.max_retries:
                logger.exception("Red invoice of refund %s could not be made; the sweep tries again", refund_id)
                return []
            delay = retry_delay(self.request.retries)
            logger.warning("Red invoice of refund %s could not be made; retry in %.1f s", refund_id, delay, exc_info=True)
            raise self.retry(countdown=delay) from None
        enqueue_e_invoices(red_ids, company_id)
        return red_ids


@celery.task(name="invoicing.reverse_refunds")
def reverse_refunds_task(older_than_seconds=None):
    """Send the reversal task of every succeeded refund still not reversed `older_than_seconds` after it completed.

    The default is EINVOICE_SWEEP_S, which is also how often Celery beat runs the sweep.
    Returns the number of tasks sent.
    """
    if older_than_seconds is None:
        older_than_seconds = current_app.config["EINVOICE_SWEEP_S"]
    refunds = refunds_to_reverse(older_than_seconds)
    for refund_id, company_id in refunds:
        reverse_refund_task.delay(company_id, refund_id)
    logger.info("Queued the red invoices of %s refunds", len(refunds))
    return len(refunds)
