"""Daily reconciliation tasks: one channel merchant and day, and the beat job that queues every merchant."""

import logging
from datetime import date, datetime, timedelta

from app.clock import LOCAL_TIME
from app.extensions import celery, db
from app.integrations.channel import ChannelError, StatementNotReady
from app.payments.daily_reconciliation import download_and_reconcile, reconcile_stored, reconciliation_targets
from app.payments.reconciliation import ReconciliationError
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)
# A statement that is not ready yet or cannot be downloaded is requested again this often, this
# many times (4 hours in all), before the day is left to a manual run.
DOWNLOAD_RETRY_SECONDS = 30 * 60
DOWNLOAD_MAX_RETRIES = 8


@celery.task(name="payments.reconcile_day", bind=True, max_retries=DOWNLOAD_MAX_RETRIES)
def reconcile_day_task(self, company_id, channel, merchant_id, day, download=True):
    """Reconcile one channel, merchant and day (ISO date) of a company; returns the difference count or None.

    With `download` the day's statement is fetched from the channel first; without it the
    stored (uploaded) statement is used. Safe to run again: the run and its open
    differences are updated in place.
    """
    day_value = date.fromisoformat(day)
    with scoped(company_scope(company_id, label=f"task:payments.reconcile_day:{channel}:{merchant_id}:{day}")):
        try:
            if download:
                run = download_and_reconcile(company_id, channel, merchant_id, day_value)
            else:
                run = reconcile_stored(company_id, channel, merchant_id, day_value)
        except ChannelError as error:
            db.session.rollback()
            # Run in the caller's thread (called directly or by an eager Celery), nothing would wait to ask again.
            if self.request.called_directly or self.request.is_eager or self.request.retries >= self.max_retries:
                logger.error("Statement of %s merchant %s for %s could not be downloaded: %s", channel, merchant_id, day, error)
                return None
            level = logging.INFO if isinstance(error, StatementNotReady) else logging.WARNING
            logger.log(level, "Statement of %s merchant %s for %s: %s; asking again in %s s", channel, merchant_id, day, error, DOWNLOAD_RETRY_SECONDS)
            raise self.retry(countdown=DOWNLOAD_RETRY_SECONDS) from None
        except ReconciliationError as error:
            db.session.rollback()
            logger.error("Reconciliation of %s merchant %s for %s failed: %s", channel, merchant_id, day, error)
            return None
        if run is None:
            logger.warning("No %s statement of merchant %s for %s; nothing reconciled", channel, merchant_id, day)
            return None
        return run.differences


@celery.task(name="payments.reconcile_all")
def reconcile_all_task(day=None):
    """Queue the reconciliation of every active merchant for `day` (ISO date; yesterday, local time, when None); returns the count."""
    day = day or (datetime.now(LOCAL_TIME).date() - timedelta(days=1)).isoformat()
    targets = reconciliation_targets()
    for target in targets:
        reconcile_day_task.delay(target.company_id, target.channel, target.merchant_id, day)
    logger.info("Queued reconciliation of %s merchants for %s", len(targets), day)
    return len(targets)
