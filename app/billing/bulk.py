"""Set-based season billing on PostgreSQL: one INSERT ... SELECT per batch of accounts.

It posts the same lines and `bill.issued` outbox events as the per-account loop in
app/billing/services.py, but only for the case where that loop never prorates: every
account is billed for the whole season and the season has one tariff version. `bulk_billing_applies` decides, and run_billing
keeps the loop for everything else and on SQLite.

The charge is computed on the stored scaled integers, so no step is inexact. Building and
usable areas are in 1/10,000 m² and factors, prices and ratios in 1/1,000,000. The exact
charge area is therefore in 1e-10 m², and area × price × ratio is in 1e-22 yuan, which
is 1e-20 fen. That product is rounded once to the group's money quantum, as
`round_money` does.
"""

import json
import logging
import secrets
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from app.billing.models import BillingRun, utcnow
from app.extensions import db
from app.hq.totals import SEASON_TOTAL_UPSERT, add_charge_sums
from app.money import CENT, current_money_rule
from app.network.models import TARIFF_CATEGORY
from app.network.terms import accounts_with_changes_after

logger = logging.getLogger(__name__)

# Accounts per transaction, unless the app sets BILLING_BATCH_SIZE. Each batch commits, so a
# crash loses at most one batch of work, and the unique idempotency key keeps a re-run from
# posting any account twice.
BATCH_SIZE = 50_000
# Batches posted side by side, each on its own connection. Most of a batch's time goes to
# the foreign-key checks and index updates of its rows, which one connection does on one CPU.
# On the shared 2-CPU benchmark machine at a load average of 1.3 to 3.2, two connections
# billed 1,000,000 accounts in 26.81 s against 49.49 s for one (docs/benchmarks.md).
WORKERS = 2

# Statuses that owe a charge, as in app/tariffs/services.status_ratio.
CHARGED_STATUSES = ("normal", "forced_off", "suspended")
# Exact product units (1e-20 fen) per fen.
PRODUCT_UNITS_PER_FEN = 10**20

# The per-account charge of app/tariffs/services.py (charge_area, unit_price, status_ratio)
# written as one INSERT ... SELECT. `product` is area × price × ratio in 1e-20 fen, and
# `:step` is the money quantum in the same units. The two rounding branches mirror
# Decimal.quantize with ROUND_HALF_UP (ties away from zero) and ROUND_HALF_EVEN.
_INSERT_BATCH = sa.text(
    """
WITH category_map(user_type, category) AS (
    SELECT * FROM unnest(CAST(:user_types AS text[]), CAST(:categories AS text[]))
),
priced AS (
    SELECT
        a.id AS account_id,
        CASE
            WHEN r.id IS NULL THEN a.building_area * 1000000
            WHEN r.basis = 'usable_area' AND a.usable_area IS NOT NULL THEN a.usable_area * r.factor
            WHEN r.basis = 'usable_area' THEN a.building_area * COALESCE(r.fallback_factor, 1000000)
            WHEN b.has_lift AND r.lift_factor IS NOT NULL THEN a.building_area * r.lift_factor
            ELSE a.building_area * r.factor
        END AS area,
        COALESCE(p_kind.unit_price, p_default.unit_price) AS price,
        CASE a.billing_status WHEN 'suspended' THEN t.suspension_ratio ELSE 1000000 END AS ratio
    FROM account a
    JOIN unit u ON u.id = a.unit_id
    JOIN building b ON b.id = u.building_id
    LEFT JOIN station s ON s.id = a.station_id
    LEFT JOIN heat_source h ON h.id = s.heat_source_id
    JOIN category_map c ON c.user_type = a.user_type
    JOIN tariff t ON t.id = :tariff_id
    LEFT JOIN charge_area_rule r ON r.tariff_id = t.id AND r.category = c.category
    LEFT JOIN tariff_price p_kind
        ON p_kind.tariff_id = t.id AND p_kind.category = c.category
        AND p_kind.heat_source_kind <> '' AND p_kind.heat_source_kind = h.kind
    LEFT JOIN tariff_price p_default
        ON p_default.tariff_id = t.id AND p_default.category = c.category AND p_default.heat_source_kind = ''
    WHERE a.company_id = :company_id
        AND a.id BETWEEN :first_id AND :last_id
        AND a.billing_status IN ('normal', 'forced_off', 'suspended')
        AND NOT EXISTS (
            SELECT 1 FROM ledger_entry e
            WHERE e.company_id = :company_id AND e.account_id = a.id
                -- Redundant, but it lets the planner read only this batch's lines by account id.
                AND e.account_id BETWEEN :first_id AND :last_id
                AND e.season_id = :season_id AND e.kind = 'charge'
        )
),
exact AS (
    SELECT priced.*, CAST(area AS numeric) * price * ratio AS product FROM priced
),
rounded AS (
    SELECT exact.*, div(abs(product), CAST(:step AS numeric)) AS steps,
        mod(abs(product), CAST(:step AS numeric)) AS remainder FROM exact
),
inserted AS (
    INSERT INTO ledger_entry (
        company_id, account_id, season_id, kind, amount, charge_area, unit_price, ratio,
        cause_type, cause_id, idempotency_key, memo, created_by_id, created_at
    )
    SELECT
        CAST(:company_id AS integer), account_id, CAST(:season_id AS integer), 'charge',
        sign(product) * CAST(:step_fen AS integer) * (steps + CASE
            WHEN 2 * remainder > :step THEN 1
            WHEN 2 * remainder = :step AND (CAST(:half_up AS boolean) OR mod(steps, 2) = 1) THEN 1
            ELSE 0
        END),
        CASE WHEN area % 1000000 = 0 THEN area / 1000000 END,
        price, ratio, 'billing_run', CAST(:run_id AS integer),
        'charge:' || CAST(:season_id AS text) || ':' || CAST(account_id AS text),
        '', CAST(:user_id AS integer), CAST(:created_at AS timestamptz)
    FROM rounded
    ORDER BY account_id
    ON CONFLICT (company_id, idempotency_key) DO NOTHING
    RETURNING account_id, amount
),
-- The posted charges with the account columns that the events and HQ totals need. The
-- repeated id range lets PostgreSQL read only this batch's accounts by primary key instead
-- of hashing the whole account table once per batch.
posted AS (
    SELECT i.account_id, i.amount, a.account_no, a.user_type, b.community_id
    FROM inserted i
    JOIN account a ON a.id = i.account_id AND a.id BETWEEN :first_id AND :last_id
    JOIN unit u ON u.id = a.unit_id
    JOIN building b ON b.id = u.building_id
),
-- The bill.issued event of each posted charge, in the same statement and transaction.
-- The payload is the JSON text app/messaging/events.dump_json writes for the loop's
-- emit_bill_issued: sorted keys, no spaces. Concatenating it costs a fifth of jsonb_build_object.
-- The event id is the batch's UUIDv7 prefix and the account id (see event_id_prefix).
events AS (
    INSERT INTO outbox_event (
        company_id, event_id, event_type, schema_version, key, payload, occurred_at, attempts, last_error, replays
    )
    SELECT
        CAST(:company_id AS integer), CAST(:event_id_prefix AS text) || lpad(to_hex(p.account_id), 8, '0'), 'bill.issued', 1,
        'bill.issued:' || CAST(:run_id AS text) || ':' || CAST(p.account_id AS text),
        '{"account_id":' || CAST(p.account_id AS text)
            || ',"account_no":' || CAST(to_json(p.account_no) AS text)
            || ',"amount":"' || CAST(CAST(CAST(p.amount AS numeric) / 100 AS numeric(20, 2)) AS text)
            || '","billing_run_id":' || CAST(:run_id AS text)
            || ',"prorated":' || 'false,"season":' || CAST(:season_json AS text) || '}',
        CAST(:created_at AS timestamptz), 0, '', 0
    FROM posted p
    ORDER BY p.account_id
),
-- The HQ season balance of each billed account, as app/hq/totals.py add_to_season_totals
-- keeps it for ORM inserts. A batch's accounts are its own, so no other batch waits on these
-- rows. The upsert returns the account's figures after the charge; the company's capped
-- received total changes by the capped received after it less the one before it. That
-- change is 0 for an account that has received nothing, so only the others are joined.
balances AS (
    INSERT INTO hq_account_season_balance (company_id, season_id, account_id, receivable, received)
    SELECT CAST(:company_id AS integer), CAST(:season_id AS integer), account_id, amount, 0
    FROM inserted ORDER BY account_id
    ON CONFLICT (company_id, season_id, account_id) DO UPDATE
        SET receivable = hq_account_season_balance.receivable + EXCLUDED.receivable
    RETURNING account_id, receivable, received
),
received_change AS (
    SELECT COALESCE(sum(
        CASE WHEN b.receivable <= 0 THEN 0 WHEN b.received < b.receivable THEN b.received ELSE b.receivable END
        - CASE WHEN b.receivable - i.amount <= 0 THEN 0
            WHEN b.received < b.receivable - i.amount THEN b.received ELSE b.receivable - i.amount END
    ), 0) AS fen
    FROM balances b JOIN inserted i ON i.account_id = b.account_id
    WHERE b.received <> 0
)
-- The posted lines per community and user type, for the HQ daily totals and the run's totals,
-- each row with the batch's change of the capped received season total.
SELECT community_id, user_type, count(*) AS lines, sum(amount) AS fen, (SELECT fen FROM received_change) AS received_fen
FROM posted GROUP BY community_id, user_type ORDER BY community_id, user_type
"""
)


# The planner cannot estimate the join of the data-modifying CTEs, so it costs a batch far
# above jit_above_cost and JIT-compiles, optimizes and inlines about 150 functions in every
# batch. On PostgreSQL 15, one statement over 95,000 accounts used 5.92 and 6.06 s of backend
# CPU with jit off against 6.94 and 7.23 s with it on (load average about 10).
BATCH_SETTINGS = "SET LOCAL jit = off"

# Adds one batch's lines to its run, so the run's totals always match the committed lines.
_ADD_TO_RUN = sa.text(
    "UPDATE billing_run SET accounts_billed = accounts_billed + :lines, amount_posted = amount_posted + :fen"
    " WHERE id = :run_id"
)


def bulk_billing_applies(company, season, tariffs):
    """Return True when the set-based path posts exactly what the per-account loop would.

    That needs PostgreSQL, one tariff version, no account connected after the season
    start (those are prorated or not billed), no account terms changed after it, a known tariff category and a default price
    for every charged account, and a rounding mode that `_INSERT_BATCH` implements.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return False
    if len(tariffs) != 1 or tariffs[0].effective_from > season.start_on:
        return False
    if current_money_rule().rounding not in (ROUND_HALF_UP, ROUND_HALF_EVEN):
        return False
    # `_INSERT_BATCH` reads the terms on the Account row, which are those in force from the
    # latest snapshot on; a snapshot after the season start needs proration or older terms.
    if accounts_with_changes_after(company.id, season.start_on):
        return False
    late_accounts, user_types = db.session.execute(
        sa.text(
            "SELECT count(*) FILTER (WHERE connected_on > :start_on),"
            " array_remove(array_agg(DISTINCT user_type) FILTER (WHERE billing_status = ANY(:statuses)), NULL)"
            " FROM account WHERE company_id = :company_id"
        ),
        {"start_on": season.start_on, "statuses": list(CHARGED_STATUSES), "company_id": company.id},
    ).one()
    if late_accounts:
        return False
    if any(user_type not in TARIFF_CATEGORY for user_type in user_types or ()):
        return False
    # The loop raises TariffError for an account without a price, so leave that case to it.
    default_priced = {price.category for price in tariffs[0].prices if not price.heat_source_kind}
    return all(TARIFF_CATEGORY[user_type] in default_priced for user_type in user_types or ())


def run_bulk_billing(company, season, tariff, user_id=None, batch_size=None, workers=None):
    """Post the season charge of every account that has none yet, one committed batch at a time.

    The BillingRun is committed first, and each batch adds its lines to the run's totals in
    its own transaction, so after a crash the run shows what was posted. Running again posts
    only the accounts still missing. `batch_size` defaults to BATCH_SIZE accounts (by
    account id range); `workers` connections (default WORKERS) post batches side by side.
    """
    batch_size = batch_size or BATCH_SIZE
    workers = workers or WORKERS
    # Adding the run through the ORM applies the tenant write check before any raw SQL runs.
    run = BillingRun(company_id=company.id, season_id=season.id, started_by_id=user_id, accounts_billed=0,
                     amount_posted=Decimal("0.00"))
    db.session.add(run)
    db.session.commit()

    first_id, last_id = db.session.execute(
        sa.text("SELECT min(id), max(id) FROM account WHERE company_id = :company_id"), {"company_id": company.id}
    ).one()
    params = batch_parameters(company, season, tariff, run.id, user_id)
    ranges = []
    if first_id is not None:
        ranges = [(start, min(start + batch_size - 1, last_id)) for start in range(first_id, last_id + 1, batch_size)]
    # End the session's transaction, so it keeps no snapshot open while the batches run.
    db.session.commit()
    engine = db.engine
    if workers == 1 or len(ranges) < 2:
        results = [_post_batch(engine, params, first, last) for first, last in ranges]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulk-billing") as pool:
            futures = [pool.submit(_post_batch, engine, params, first, last) for first, last in ranges]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            # After a failure, batches not yet started are dropped, and a re-run posts them.
            for future in pending:
                future.cancel()
        results = [future.result() for future in futures if not future.cancelled()]

    run = db.session.get(BillingRun, params["run_id"])
    run.finished_at = utcnow()
    db.session.commit()
    logger.info(
        "Billing run %s for company %s season %s billed %s accounts in bulk (%s fen)",
        run.id, company.code, season.name, sum(count for count, _ in results), sum(fen for _, fen in results),
    )
    return run


def batch_parameters(company, season, tariff, run_id, user_id):
    """Return the parameters of `_INSERT_BATCH` but the account id range, rounding by the current money rule."""
    rule = current_money_rule()
    step_fen = int(rule.quantum / CENT)
    return {
        "company_id": company.id,
        "season_id": season.id,
        "season_json": json.dumps(season.name, ensure_ascii=False),
        "tariff_id": tariff.id,
        "run_id": run_id,
        "user_id": user_id,
        "created_at": utcnow(),
        "user_types": list(TARIFF_CATEGORY),
        "categories": list(TARIFF_CATEGORY.values()),
        "step_fen": step_fen,
        "step": Decimal(step_fen * PRODUCT_UNITS_PER_FEN),
        "half_up": rule.rounding == ROUND_HALF_UP,
        "event_id_prefix": event_id_prefix(),
    }


def event_id_prefix():
    """Return a new UUIDv7 (RFC 9562) as text without its last 8 hex digits, which a batch fills with the account id.

    The 48-bit Unix time in milliseconds and 42 random bits make the prefix unique per batch,
    and the account id makes each event id unique within it. The ids of a batch ascend with
    the account id, so PostgreSQL appends them to the end of the (company_id, event_id)
    index. With gen_random_uuid() per row they landed on random pages of that index, and
    each drew 16 random bytes. The per-account loop keeps uuid4 ids, which consumers only
    compare for equality.
    """
    random_bits = secrets.randbits(42)
    value = (
        (time.time_ns() // 1_000_000) << 80
        | 0x7 << 76  # version 7
        | (random_bits >> 30) << 64  # rand_a: 12 random bits
        | 0b10 << 62  # variant
        | (random_bits & (2**30 - 1)) << 32  # rand_b: 30 random bits, then the 32-bit account id
    )
    return str(uuid.UUID(int=value))[:-8]


def _post_batch(engine, params, first_id, last_id):
    """Insert the charges of accounts `first_id`..`last_id` with their events, add them to the totals and commit.

    Runs on a connection of its own, so several batches can run at once. Returns (lines, fen).
    """
    params = {**params, "first_id": first_id, "last_id": last_id, "event_id_prefix": event_id_prefix()}
    with engine.begin() as connection:
        # A 50,000-account batch sorts about 5 MB by account id, just over PostgreSQL's 4 MB default.
        connection.execute(sa.text("SET LOCAL work_mem = '32MB'"))
        connection.execute(sa.text(BATCH_SETTINGS))
        groups = connection.execute(_INSERT_BATCH, params).all()
        count = sum(group.lines for group in groups)
        fen = sum(int(group.fen) for group in groups)
        if groups:
            # Batches posted side by side update the same HQ total rows and run row, and each
            # holds those row locks until it commits. Updating them last, after the charges,
            # events and foreign-key checks of `_INSERT_BATCH`, keeps the other batch's wait
            # to this step and the commit.
            add_charge_sums(
                connection, params["company_id"], params["season_id"], "charge", params["created_at"],
                [(group.community_id, group.user_type, Decimal(int(group.fen)).scaleb(-2), group.lines) for group in groups],
            )
            connection.execute(SEASON_TOTAL_UPSERT, {
                "company_id": params["company_id"], "season_id": params["season_id"],
                "receivable": Decimal(fen).scaleb(-2), "received": Decimal(int(groups[0].received_fen)).scaleb(-2),
            })
            connection.execute(_ADD_TO_RUN, {"run_id": params["run_id"], "lines": count, "fen": fen})
    return count, fen
