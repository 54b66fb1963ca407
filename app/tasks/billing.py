"""Background billing jobs: late fees and the ledger invariant check, per company and nightly for all."""

import logging
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from app.billing.invariants import find_company_breaks, find_invariant_breaks, record_findings
from app.billing.late_fees import LATE_FEE_PAGE_SIZE, late_fee_seasons, post_late_fees
from app.billing.models import LedgerEntry
from app.clock import LOCAL_TIME
from app.extensions import celery, db
from app.org.models import Company
from app.tenancy import SYSTEM_SCOPE, company_scope, scoped

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


def _yesterday():
    return datetime.now(LOCAL_TIME).date() - timedelta(days=1)


def _operating_companies():
    with scoped(SYSTEM_SCOPE):
        return db.session.execute(
            sa.select(Company.id, Company.code).where(Company.is_headquarters.is_(False)).order_by(Company.code)
        ).all()


@celery.task(name="billing.post_late_fees_all")
def post_late_fees_all_task(on_date=None, page_size=LATE_FEE_PAGE_SIZE):
    """Post late fees as of `on_date` (ISO date; yesterday, local time, when None) for every company.

    Every season whose tariff charges late fees by then is posted on its own, prior seasons
    included. A season that fails is logged and skipped, and re-running the day posts
    nothing twice. Returns {company code: accounts processed, summed over its seasons}.
    """
    day = date.fromisoformat(on_date) if on_date else _yesterday()
    processed = {}
    for company_id, code in _operating_companies():
        with scoped(company_scope(company_id, label=f"task:billing.post_late_fees_all:{code}")):
            for season in late_fee_seasons(company_id, day):
                try:
                    count = post_late_fees(company_id, season.id, day, page_size=page_size)
                except sa.exc.OperationalError:
                    # Posting is keyed per account, season and day, so the retried task skips what was posted.
                    raise
                except Exception:
                    db.session.rollback()
                    logger.exception("Nightly late fees of company %s season %s as of %s failed", code, season.name, day)
                    continue
                processed[code] = processed.get(code, 0) + count
    logger.info("Nightly late fees as of %s: %s", day, processed)
    return processed


@celery.task(name="billing.check_invariants_all")
def check_invariants_all_task():
    """Check every season with ledger lines of every company, then the company-wide checks, and store what breaks for HQ.

    The company-wide checks (the HQ account count) are stored as findings without a
    season. Each break found for the first time (or again after it was resolved) is logged at
    ERROR level and stored as an open InvariantFinding, which /hq/invariants lists for
    headquarters. A finding no longer found is marked resolved. Returns {company code:
    open breaks}.
    """
    found = {}
    for company_id, code in _operating_companies():
        with scoped(company_scope(company_id, label=f"task:billing.check_invariants_all:{code}")):
            season_ids = db.session.scalars(
                sa.select(LedgerEntry.season_id).where(LedgerEntry.company_id == company_id, LedgerEntry.season_id.is_not(None)).distinct()
            ).all()
            # The entry None runs the company-wide checks, once after the seasons.
            for season_id in [*sorted(season_ids), None]:
                try:
                    if season_id is None:
                        breaks = find_company_breaks(company_id)
                    else:
                        breaks = find_invariant_breaks(company_id, season_id)
                    opened, resolved = record_findings(company_id, season_id, breaks)
                    db.session.commit()
                except sa.exc.OperationalError:
                    # A lost connection fails every later season too, so the task is retried whole.
                    # NOTE: a season recorded before the failure then counts its findings once more.
                    raise
                except Exception:
                    db.session.rollback()
                    logger.exception("Nightly invariant check of company %s season %s failed", code, season_id)
                    continue
                for finding in opened:
                    logger.error(
                        "Ledger invariant broken in company %s season %s account %s: %s %s",
                        code, season_id, finding.account_id, finding.check_name, finding.detail,
                    )
                if resolved:
                    logger.info("Company %s season %s: %s invariant findings resolved", code, season_id, len(resolved))
                if breaks:
                    found[code] = found.get(code, 0) + len(breaks)
    logger.info("Nightly invariant check done; breaks per company: %s", found)
    return found
