"""The season that pages show when the request names none, by one rule for every page."""

from datetime import datetime

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.clock import LOCAL_TIME
from app.extensions import db
from app.tariffs.models import Season

# Ledger lines that mean an account was billed for a season.
POSTED_CHARGE_KINDS = ("charge", "rerate", "settlement")


def calendar_season_name(day):
    """Return the name of the season a date belongs to. From July on, that is the season starting that year."""
    first = day.year if day.month >= 7 else day.year - 1
    return f"{first}-{first + 1}"


def default_season_name(as_of, company_id=None):
    """Return the latest season with posted charges up to the season of `as_of`, else the season of `as_of`.

    Charges are counted for one company when `company_id` is given, else across the group.
    A new season set up ahead of billing, or not yet billed in December, does not become the
    default before its first charges are posted, so every page keeps showing the billed season.
    """
    latest = calendar_season_name(as_of)
    # EXISTS per season uses the (company_id, season_id, kind) index instead of reading every line.
    billed = (
        sa.select(LedgerEntry.id)
        .where(
            LedgerEntry.company_id == Season.company_id,
            LedgerEntry.season_id == Season.id,
            LedgerEntry.kind.in_(POSTED_CHARGE_KINDS),
        )
        .exists()
    )
    query = sa.select(sa.func.max(Season.name)).where(billed, Season.name <= latest)
    if company_id is not None:
        query = query.where(Season.company_id == company_id)
    return db.session.scalar(query) or latest


def default_season(company_id, as_of=None):
    """Return the company's Season row by default_season_name() (as of today, local time), or None when it has none."""
    if as_of is None:
        as_of = datetime.now(LOCAL_TIME).date()
    name = default_season_name(as_of, company_id)
    return db.session.scalar(sa.select(Season).where(Season.company_id == company_id, Season.name == name))
