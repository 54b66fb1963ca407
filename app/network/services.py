"""Account search and statements."""

import sqlalchemy as sa
from flask_babel import gettext as _

from app.billing.models import ENTRY_KINDS, LedgerEntry
from app.extensions import db
from app.i18n import translate_label
from app.ledger.parser import normalise_phone
from app.network.models import Account, Building, Community, Unit
from app.tariffs.models import Season


def search_accounts(query, limit=50):
    """Accounts matching a number, legacy number, name, phone or address fragment.

    An address is matched as community name plus optional building-unit-room numbers,
    e.g. 柳林里 15-4-604.
    """
    text = query.strip()
    if not text:
        return []
    phone = normalise_phone(text)
    conditions = [
        Account.account_no == text,
        Account.legacy_no == text,
        Account.customer_name.contains(text, autoescape=True),
        Account.legacy_no.contains(text, autoescape=True),
    ]
    if phone and phone.isdigit() and len(phone) >= 4:
        conditions.append(Account.phone.contains(phone, autoescape=True))
    parts = text.replace("-", " ").split()
    statement = (
        sa.select(Account)
        .join(Unit, Account.unit_id == Unit.id)
        .join(Building, Unit.building_id == Building.id)
        .join(Community, Building.community_id == Community.id)
    )
    address = [Community.name.contains(parts[0], autoescape=True)]
    numbers = [p for p in parts[1:] if p.isdigit()]
    for column, value, width in zip((Building.code, Unit.code, Account.room), numbers, (3, 2, None)):
        address.append(column == (value.zfill(width) if width else str(int(value))))
    conditions.append(sa.and_(*address))
    return db.session.scalars(statement.where(sa.or_(*conditions)).order_by(Account.account_no).limit(limit)).all()


def account_statement(account):
    """Ledger lines of an account with a running balance, oldest first."""
    rows = db.session.execute(
        sa.select(LedgerEntry, Season.name)
        .outerjoin(Season, LedgerEntry.season_id == Season.id)
        .where(LedgerEntry.account_id == account.id)
        .order_by(LedgerEntry.created_at, LedgerEntry.id)
    ).all()
    balance = 0
    lines = []
    for entry, season_name in rows:
        balance += entry.amount
        lines.append({"entry": entry, "season": season_name or _("往年"), "kind": translate_label(ENTRY_KINDS.get(entry.kind, entry.kind)), "balance": balance})
    return lines
