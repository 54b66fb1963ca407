"""Daily reconciliation of a channel and merchant, run from a stored statement."""

import logging
from datetime import date

import sqlalchemy as sa

from app.extensions import celery, db
from app.payments.models import ChannelStatement
from app.payments.reconciliation import ReconciliationError, reconcile_statement
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)


# TODO: schedule payments.reconcile_day with Celery beat; nothing runs it periodically yet.
@celery.task(name="payments.reconcile_day")
def reconcile_day_task(company_id, channel, merchant_id, day):
    """Reconcile one channel, merchant and day (ISO date) of a company; returns the difference count or None.

    Safe to run again: the run and its open differences are updated in place.
    """
    with scoped(company_scope(company_id, label=f"task:payments.reconcile_day:{channel}:{merchant_id}:{day}")):
        statement = db.session.scalar(
            sa.select(ChannelStatement).filter_by(company_id=company_id, channel=channel, merchant_id=merchant_id, day=date.fromisoformat(day))
        )
        if statement is None:
            # TODO: download the statement from the channel here (WeChat Pay /v3/bill/tradebill).
            logger.warning("No %s statement of merchant %s for %s; nothing reconciled", channel, merchant_id, day)
            return None
        try:
            run = reconcile_statement(statement)
        except ReconciliationError as error:
            db.session.rollback()
            logger.error("Reconciliation of %s merchant %s for %s failed: %s", channel, merchant_id, day, error)
            return None
        return run.differences
