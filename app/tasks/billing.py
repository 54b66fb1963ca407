"""Background billing jobs: nightly late fees and the ledger invariant check."""

import logging
from datetime import date

from app.billing.invariants import find_invariant_breaks
from app.billing.late_fees import LATE_FEE_PAGE_SIZE, post_late_fees
from app.extensions import celery
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)


@celery.task(name="billing.post_late_fees")
def post_late_fees_task(company_id, season_id, on_date, page_size=LATE_FEE_PAGE_SIZE):
    """Post late fees as of `on_date` (ISO date) for every account of a company; returns the count."""
    with scoped(company_scope(company_id, label=f"task:billing.post_late_fees:{company_id}")):
        count = post_late_fees(company_id, season_id, date.fromisoformat(on_date), page_size=page_size)
    logger.info("Late fees as of %s posted for %s accounts of company %s", on_date, count, company_id)
    return count


@celery.task(name="billing.check_invariants")
def check_invariants_task(company_id, season_id):
    """Check the receivable identity of a company and season; returns the breaks as dicts."""
    with scoped(company_scope(company_id, label=f"task:billing.check_invariants:{company_id}")):
        breaks = find_invariant_breaks(company_id, season_id)
    for found in breaks:
        logger.error("Ledger invariant broken: %s", found)
    logger.info("Invariant check of company %s season %s found %s breaks", company_id, season_id, len(breaks))
    return [found.as_dict() for found in breaks]
