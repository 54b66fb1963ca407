"""Mixed notification streams of the channel tests: build, shuffle, send and check them.

A stream contains valid messages repeated many times (duplicates), messages the app holds for
review or rejects for their amount, and bad ones of several kinds (tampered, wrongly signed, stale,
for an unknown merchant), shuffled with a fixed seed. Each channel test says how to sign
and send one message; this module sends the stream in order and checks what was logged
and how each account's ledger balance moved.
"""

import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.network.models import Account
from app.payments.models import OnlineOrder, Payment, PaymentNotification
from app.payments.services import amount_owed

# Multiplies the 2,000 messages of each channel's mixed test, so 5 sends the 10,000 of the acceptance run.
MIX_SCALE = int(os.environ.get("HEATFLOW_NOTIFICATION_MIX_SCALE", "1"))
MESSAGES_PER_SCALE = 2000
# Each stream: 40 paid orders or accounts with 25 copies each, 8 with a wrong amount and 5
# copies each, and 960 bad messages spread evenly over the bad kinds (all per scale step).
PAID_TARGETS = 40
PAID_COPIES = 25
WRONG_AMOUNT_TARGETS = 8
WRONG_AMOUNT_COPIES = 5
BAD_MESSAGES = 960
# Valid copies are signed up to this many seconds before or after the moment they are sent.
VALID_SPREAD_SECONDS = 60
# A stream that takes longer than this per 1,000 messages fails as stuck.
SECONDS_PER_THOUSAND = 150


@dataclass(frozen=True)
class Message:
    """One message of a stream: its kind, the channel-specific thing it is about and its timestamp offset."""

    kind: str
    target: object
    offset: int = 0


def build_stream(seed, groups, bad_kinds, bad_targets, scale=MIX_SCALE):
    """Return the shuffled messages of `groups` and of the bad kinds.

    `groups` lists (kind, targets, copies per target); copies of "valid" kinds get a random
    timestamp offset of up to VALID_SPREAD_SECONDS. Bad messages cycle through `bad_kinds`,
    each about a target drawn from `bad_targets`, BAD_MESSAGES × `scale` in all.
    """
    rng = random.Random(seed)
    messages = []
    for kind, targets, copies in groups:
        for target in targets:
            for _ in range(copies):
                offset = rng.randint(-VALID_SPREAD_SECONDS, VALID_SPREAD_SECONDS) if kind.startswith("valid") else 0
                messages.append(Message(kind, target, offset))
    for index in range(BAD_MESSAGES * scale):
        messages.append(Message(bad_kinds[index % len(bad_kinds)], rng.choice(bad_targets)))
    rng.shuffle(messages)
    return messages


def put_first(messages, earlier_kind, later_kind):
    """Move the first `earlier_kind` message of each target before every `later_kind` message of that target.

    Swaps the two first occurrences, so the rest of the shuffled order stays as it was.
    """
    first = {}
    for index, message in enumerate(messages):
        if message.kind in (earlier_kind, later_kind):
            first.setdefault((message.target, message.kind), index)
    for (target, kind), later in first.items():
        earlier = first.get((target, earlier_kind))
        if kind == later_kind and earlier is not None and later < earlier:
            messages[later], messages[earlier] = messages[earlier], messages[later]


def send_stream(messages, deliver):
    """Send every message through `deliver(message) -> reply label` and count (kind, label) pairs.

    Fails when the stream takes longer than SECONDS_PER_THOUSAND per 1,000 messages.
    """
    limit = SECONDS_PER_THOUSAND * max(1, len(messages) // 1000)
    started = time.monotonic()
    replies = Counter()
    for message in messages:
        elapsed = time.monotonic() - started
        assert elapsed < limit, f"{len(messages)} messages took over {limit} s; stopped after {sum(replies.values())}"
        replies[(message.kind, deliver(message))] += 1
    return replies


def logged_outcomes(channel):
    """Count the logged notifications of a channel by outcome."""
    return Counter(db.session.scalars(sa.select(PaymentNotification.outcome).filter_by(channel=channel)))


def rejection_reasons(channel):
    """Count the logged reasons of a channel's rejected notifications."""
    query = sa.select(PaymentNotification.reason).filter_by(channel=channel, outcome="rejected")
    return Counter(db.session.scalars(query))


def count_containing(reasons, text):
    """Sum the counts of the reasons that contain `text`."""
    return sum(count for reason, count in reasons.items() if text in reason)


def ledger_balances(account_ids):
    """Return each account's ledger balance (charges positive, payments negative)."""
    rows = db.session.execute(
        sa.select(LedgerEntry.account_id, sa.func.coalesce(sa.func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.account_id.in_(account_ids))
        .group_by(LedgerEntry.account_id)
    ).all()
    balances = dict.fromkeys(account_ids, Decimal("0.00"))
    balances.update(rows)
    return balances


def check_online_orders(channel, paid_orders, held_orders, owed_before, balances_before, scale=MIX_SCALE):
    """Check an online channel's stream: each paid order posted once, each held order posted nothing.

    Also checks the logged outcomes: one accepted or held notification per order, every other
    valid or wrong-amount copy a duplicate, and every bad message rejected.
    """
    db.session.expire_all()
    balances = ledger_balances(list(owed_before))
    for order in paid_orders:
        lines = db.session.scalars(
            sa.select(LedgerEntry).filter_by(account_id=order.account_id).where(LedgerEntry.idempotency_key.like(f"{channel}:%"))
        ).all()
        assert sum(line.amount for line in lines) == -order.amount, order.out_trade_no
        assert balances[order.account_id] == balances_before[order.account_id] - order.amount, order.out_trade_no
        assert amount_owed(db.session.get(Account, order.account_id)).total == 0
        assert db.session.get(OnlineOrder, order.id).status == "paid"
    for order in held_orders:
        assert balances[order.account_id] == balances_before[order.account_id], order.out_trade_no
        assert amount_owed(db.session.get(Account, order.account_id)).total == owed_before[order.account_id]
        assert db.session.get(OnlineOrder, order.id).status == "held"
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(channel=channel)) == len(paid_orders)

    valid = len(paid_orders) * PAID_COPIES * scale
    wrong_amount = len(held_orders) * WRONG_AMOUNT_COPIES * scale
    assert logged_outcomes(channel) == {
        "accepted": len(paid_orders), "held": len(held_orders),
        "duplicate": valid - len(paid_orders) + wrong_amount - len(held_orders), "rejected": BAD_MESSAGES * scale,
    }
