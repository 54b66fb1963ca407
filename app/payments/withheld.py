"""Notifications that name another company's order or refund: kept from the merchant's company.

A notification is routed to a company by its merchant id, but the order number and refund
number in it come from the channel. When they are not the company's own, the company must
not read them, because they may be another company's. The INSERT at the HTTP endpoint
therefore decides ownership itself: it looks the order (and refund) up among the
company's own, and when it does not find them it stores

- the company's `pending` row without the order number and with a payload that keeps only
  the merchant's own fields (transaction id, amount, times), and
- a full copy with no company (outcome `withheld`), which only the system and
  headquarters read (row-level security on PostgreSQL, the company filter of every
  company view on SQLite).

The apply task then looks the numbers up in every company. Numbers of no other company
go back into the company's row, which is applied as usual. Numbers of another company make
the row `rejected`, with placeholders in its reason, and the copy becomes the rejected row
headquarters reads with both companies named.
"""

import logging

import sqlalchemy as sa

from app.extensions import db
from app.org.models import Company
from app.payments.models import OnlineOrder, PaymentNotification, Refund
from app.tenancy import SYSTEM_SCOPE, scoped

logger = logging.getLogger(__name__)

# Shown to a company in place of another company's order and refund numbers.
OTHER_COMPANY_ORDER = "<order of another company>"
OTHER_COMPANY_REFUND = "<refund of another company>"
# Outcome of the full copy of a notification while the apply task has not confirmed whose order it names.
WITHHELD = "withheld"
# Payload key that marks a company's row whose identifiers are in a withheld copy.
WITHHELD_KEY = "withheld"
WITHHELD_REASON = "order number kept for headquarters until the apply task confirms the order's company"


def withheld_payload(payload):
    """Return the stored event without the order number, refund number and channel extras."""
    fields = ("kind", "merchant_id", "channel_txn_id", "amount", "notification_id", "event_type", "occurred_at", "refund_status")
    return {WITHHELD_KEY: True, **{name: payload.get(name) for name in fields}}


def is_withheld(row):
    return bool(row.payload) and bool(row.payload.get(WITHHELD_KEY))


def copy_reason(company_id):
    return f"full copy of a notification to company {company_id} whose order was not found in that company"


# -- the INSERT of the HTTP endpoint


def _bind(name, column_type, dialect_name):
    # PostgreSQL types a parameter in a SELECT list as text, which an INSERT into an
    # integer, numeric, timestamp or JSON column rejects, so each one gets its column's type.
    if dialect_name == "postgresql":
        return f"CAST(:{name} AS {column_type})"
    return f":{name}"


def _ownership(dialect_name):
    """Return SQL that is true when the company has the notification's order and, for a refund, the refund.

    Row-level security lets the endpoint's scope read only the company's own rows, so
    another company's order is never read here. The apply task looks for it.
    """
    text = "VARCHAR" if dialect_name == "postgresql" else None
    company = _bind("company_id", "INTEGER", dialect_name)
    order_no = _bind("out_trade_no", text, dialect_name)
    refund_no = _bind("out_refund_no", text, dialect_name)
    return (
        f"EXISTS (SELECT 1 FROM {OnlineOrder.__table__.name} WHERE company_id = {company} AND out_trade_no = {order_no})"
        f" AND ({refund_no} IS NULL OR EXISTS (SELECT 1 FROM {Refund.__table__.name}"
        f" WHERE company_id = {company} AND out_refund_no = {refund_no}))"
    )


def _select_list(dialect, names, copy):
    """Return the SELECT list of the company's row, or of the withheld copy when `copy` is true."""
    table = PaymentNotification.__table__
    dialect_name = dialect.name
    expressions = []
    for name in names:
        plain = _bind(name, table.columns[name].type.compile(dialect=dialect), dialect_name)
        if copy and name == "company_id":
            expressions.append("NULL")
        elif copy and name == "outcome":
            expressions.append(f"'{WITHHELD}'")
        elif copy and name == "reason":
            expressions.append(_bind("copy_reason", "VARCHAR", dialect_name))
        elif copy:
            expressions.append(plain)
        elif name == "out_trade_no":
            expressions.append(f"CASE WHEN confirmed.owned THEN {plain} END")
        elif name == "reason":
            hidden = _bind("withheld_reason", "VARCHAR", dialect_name)
            expressions.append(f"CASE WHEN confirmed.owned THEN {plain} ELSE {hidden} END")
        elif name == "payload":
            hidden = _bind("withheld_payload", table.columns[name].type.compile(dialect=dialect), dialect_name)
            expressions.append(f"CASE WHEN confirmed.owned THEN {plain} ELSE {hidden} END")
        else:
            expressions.append(plain)
    return ", ".join(expressions)


def column_names():
    return [column.name for column in PaymentNotification.__table__.columns if column.name != "id"]


def postgresql_insert_sql(dialect):
    """Return one statement that stores the company's row and, when the order is not the company's, the withheld copy.

    Returns one row with the company's row id, or none when the delivery key is stored. The
    copy is inserted only together with a new company row, so a resend adds no second copy.
    """
    table = PaymentNotification.__table__.name
    names = column_names()
    columns = ", ".join(names)
    return (
        f"WITH confirmed AS (SELECT {_ownership('postgresql')} AS owned),"
        f" stored AS (INSERT INTO {table} ({columns}) SELECT {_select_list(dialect, names, False)} FROM confirmed"
        " ON CONFLICT (company_id, channel, delivery_key) DO NOTHING RETURNING id),"
        f" copied AS (INSERT INTO {table} ({columns}) SELECT {_select_list(dialect, names, True)}"
        # No RETURNING: row-level security would check the copy against the company's
        # read scope, which excludes a row without a company.
        " FROM stored, confirmed WHERE NOT confirmed.owned)"
        " SELECT stored.id FROM stored"
    )


def sqlite_insert_sql(dialect):
    """Return the company's row INSERT and the withheld copy INSERT, which the caller runs in one transaction.

    The first returns the new row's id and its out_trade_no, which is NULL when the order
    was not found in the company. SQLite needs the `WHERE true` to read ON CONFLICT as the
    upsert clause.
    """
    table = PaymentNotification.__table__.name
    names = column_names()
    columns = ", ".join(names)
    company_row = (
        f"INSERT INTO {table} ({columns}) SELECT {_select_list(dialect, names, False)}"
        f" FROM (SELECT {_ownership('sqlite')} AS owned) AS confirmed WHERE true"
        " ON CONFLICT (company_id, channel, delivery_key) DO NOTHING RETURNING id, out_trade_no"
    )
    copy_row = f"INSERT INTO {table} ({columns}) SELECT {_select_list(dialect, names, True)}"
    return company_row, copy_row


# -- the apply task


def withheld_copies(row):
    """Return the withheld copies of a company's row, oldest first, read in the system scope."""
    with scoped(SYSTEM_SCOPE):
        return db.session.scalars(
            sa.select(PaymentNotification)
            .where(
                PaymentNotification.company_id.is_(None), PaymentNotification.outcome == WITHHELD,
                PaymentNotification.channel == row.channel, PaymentNotification.delivery_key == row.delivery_key,
                PaymentNotification.sub_mchid == row.sub_mchid, PaymentNotification.body_sha256 == row.body_sha256,
            )
            .order_by(PaymentNotification.id)
        ).all()


def restore(row, copies):
    """Put the numbers of a withheld row back, because no other company has them, and drop the copies."""
    source = copies[0]
    row.out_trade_no = source.out_trade_no
    row.payload = source.payload
    row.reason = ""
    with scoped(SYSTEM_SCOPE):
        for copy in copies:
            db.session.delete(copy)
        db.session.flush()


def other_company_of(company_id, event):
    """Return the id of another company that has the event's order or refund, or None."""
    with scoped(SYSTEM_SCOPE):
        owner_id = None
        if event.kind == "refund" and event.out_refund_no:
            owner_id = db.session.scalar(
                sa.select(Refund.company_id)
                .where(Refund.out_refund_no == event.out_refund_no, Refund.company_id != company_id)
                .limit(1)
            )
        if owner_id is None and event.out_trade_no:
            owner_id = db.session.scalar(
                sa.select(OnlineOrder.company_id)
                .where(OnlineOrder.out_trade_no == event.out_trade_no, OnlineOrder.company_id != company_id)
                .limit(1)
            )
    return owner_id


def rejection_reason(event, identifiers):
    """Return the reason a notification naming another company's order or refund is rejected.

    `identifiers` maps the order and refund numbers to the text shown: the numbers
    themselves for headquarters, the placeholders for the merchant's company.
    """
    order = identifiers.get(event.out_trade_no, event.out_trade_no)
    if event.kind == "refund":
        refund = identifiers.get(event.out_refund_no, event.out_refund_no)
        return f"refund {refund!r} of order {order!r} not found for merchant {event.merchant_id!r}"
    return f"order {order!r} not found for merchant {event.merchant_id!r}"


def hand_to_group(row, event, owner_id, copy=None):
    """Reject a company's row whose event names another company's order or refund, keeping the full copy for headquarters.

    The merchant's company keeps its row with the channel's transaction id and amount, which
    are its merchant's, but without the order number, the refund number and the stored
    event. The group row has no company_id, which only the system and headquarters scopes
    read. `copy` is the withheld copy made at the endpoint; without one a new group row is
    added. Returns the reason stored on the company's row.
    """
    full_reason = rejection_reason(event, {})
    with scoped(SYSTEM_SCOPE):
        codes = dict(db.session.execute(
            sa.select(Company.id, Company.code).where(Company.id.in_([row.company_id, owner_id]))
        ).all())
        if copy is None:
            copy = PaymentNotification(
                company_id=None, channel=row.channel, notification_id=row.notification_id, event_type=row.event_type,
                transaction_id=row.transaction_id, out_trade_no=event.out_trade_no or None, sub_mchid=row.sub_mchid,
                amount=row.amount, body_sha256=row.body_sha256, received_at=row.received_at, payload=row.payload,
            )
            db.session.add(copy)
        named = f"refund {event.out_refund_no!r} of order" if event.kind == "refund" else "order"
        copy.outcome = "rejected"
        copy.applied_at = row.applied_at
        copy.reason = (
            f"merchant {row.sub_mchid!r} of company {codes[row.company_id]} notified {named} {event.out_trade_no!r}"
            f" of company {codes[owner_id]}: {full_reason}"
        )[:255]
        db.session.flush()
    logger.warning(
        "%s notification %s of company %s names %s %s of company %s; kept for headquarters as notification %s",
        row.channel, row.id, codes[row.company_id], named, event.out_trade_no, codes[owner_id], copy.id,
    )
    hidden = rejection_reason(event, {event.out_trade_no: OTHER_COMPANY_ORDER, event.out_refund_no: OTHER_COMPANY_REFUND})
    row.out_trade_no = None
    row.payload = None
    row.reason = f"{hidden} (an order of another company; headquarters has it as notification {copy.id})"[:255]
    return row.reason
