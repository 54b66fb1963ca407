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

import logging
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from app.billing.models import BillingRun, utcnow
from app.extensions import db
from app.money import CENT, current_money_rule
from app.network.models import TARIFF_CATEGORY
from app.network.terms import accounts_with_changes_after

logger = logging.getLogger(__name__)

# Accounts per transaction, unless the app sets BILLING_BATCH_SIZE. Each batch commits, so a
# crash loses at most one batch of work, and the unique idempotency key keeps a re-run from
# posting any account twice.
BATCH_SIZE = 50_000

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
-- The bill.issued event of each posted charge, in the same statement and transaction
-- (the same data as app/billing/services.emit_bill_issued writes for the loop).
events AS (
    INSERT INTO outbox_event (
        company_id, event_id, event_type, schema_version, key, payload, occurred_at, attempts, last_error, replays
    )
    SELECT
        CAST(:company_id AS integer), CAST(gen_random_uuid() AS text), 'bill.issued', 1,
        'bill.issued:' || CAST(:run_id AS text) || ':' || CAST(i.account_id AS text),
        CAST(jsonb_build_object(
            'account_id', i.account_id, 'account_no', a.account_no, 'season', CAST(:season_name AS text),
            'billing_run_id', CAST(:run_id AS integer),
            'amount', CAST(CAST(CAST(i.amount AS numeric) / 100 AS numeric(20, 2)) AS text), 'prorated', false
        ) AS text),
        CAST(:created_at AS timestamptz), 0, '', 0
    FROM inserted i JOIN account a ON a.id = i.account_id
    ORDER BY i.account_id
),
-- The HQ daily totals of the posted charges (what app/hq/totals.py adds for ORM inserts).
located AS (
    SELECT i.amount, a.user_type, b.community_id
    FROM inserted i JOIN account a ON a.id = i.account_id
    JOIN unit u ON u.id = a.unit_id JOIN building b ON b.id = u.building_id
),
community_totals AS (
    INSERT INTO hq_community_daily_total (company_id, season_id, community_id, category, day, kind, amount, entries)
    SELECT CAST(:company_id AS integer), CAST(:season_id AS integer), community_id, user_type,
        CAST(timezone('Asia/Shanghai', CAST(:created_at AS timestamptz)) AS date), 'charge', sum(amount), count(*)
    FROM located GROUP BY community_id, user_type ORDER BY community_id, user_type
    ON CONFLICT (company_id, season_id, community_id, category, day, kind) DO UPDATE
        SET amount = hq_community_daily_total.amount + EXCLUDED.amount,
            entries = hq_community_daily_total.entries + EXCLUDED.entries
),
company_totals AS (
    INSERT INTO hq_company_daily_total (company_id, season_id, category, day, kind, amount, entries)
    SELECT CAST(:company_id AS integer), CAST(:season_id AS integer), user_type,
        CAST(timezone('Asia/Shanghai', CAST(:created_at AS timestamptz)) AS date), 'charge', sum(amount), count(*)
    FROM located GROUP BY user_type ORDER BY user_type
    ON CONFLICT (company_id, season_id, category, day, kind) DO UPDATE
        SET amount = hq_company_daily_total.amount + EXCLUDED.amount,
            entries = hq_company_daily_total.entries + EXCLUDED.entries
)
SELECT count(*), COALESCE(sum(amount), 0) FROM inserted
"""
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


def run_bulk_billing(company, season, tariff, user_id=None, batch_size=None):
    """Post the season charge of every account that has none yet, one committed batch at a time.

    The BillingRun is committed first and its totals grow with each batch, so after a
    crash it shows what was posted. Running again posts only the accounts still missing.
    `batch_size` defaults to BATCH_SIZE accounts (by account id range).
    """
    batch_size = batch_size or BATCH_SIZE
    # Adding the run through the ORM applies the tenant write check before any raw SQL runs.
    run = BillingRun(company_id=company.id, season_id=season.id, started_by_id=user_id)
    db.session.add(run)
    db.session.commit()

    first_id, last_id = db.session.execute(
        sa.text("SELECT min(id), max(id) FROM account WHERE company_id = :company_id"), {"company_id": company.id}
    ).one()
    rule = current_money_rule()
    step_fen = int(rule.quantum / CENT)
    params = {
        "company_id": company.id,
        "season_id": season.id,
        "season_name": season.name,
        "tariff_id": tariff.id,
        "run_id": run.id,
        "user_id": user_id,
        "created_at": utcnow(),
        "user_types": list(TARIFF_CATEGORY),
        "categories": list(TARIFF_CATEGORY.values()),
        "step_fen": step_fen,
        "step": Decimal(step_fen * PRODUCT_UNITS_PER_FEN),
        "half_up": rule.rounding == ROUND_HALF_UP,
    }
    posted = 0
    total_fen = 0
    if first_id is not None:
        for batch_first in range(first_id, last_id + 1, batch_size):
            count, fen = _post_batch(run, params, batch_first, min(batch_first + batch_size - 1, last_id))
            posted += count
            total_fen += fen

    run.finished_at = utcnow()
    db.session.commit()
    logger.info(
        "Billing run %s for company %s season %s billed %s accounts in bulk (%s fen)",
        run.id, company.code, season.name, posted, total_fen,
    )
    return run


def _post_batch(run, params, first_id, last_id):
    """Insert the charges of accounts `first_id`..`last_id`, add them to the run and commit."""
    # A 50,000-account batch sorts about 5 MB by account id, just over PostgreSQL's 4 MB default.
    db.session.execute(sa.text("SET LOCAL work_mem = '32MB'"))
    count, fen = db.session.execute(_INSERT_BATCH, {**params, "first_id": first_id, "last_id": last_id}).one()
    fen = int(fen)
    run.accounts_billed = (run.accounts_billed or 0) + count
    run.amount_posted = (run.amount_posted or Decimal("0.00")) + Decimal(fen).scaleb(-2).quantize(CENT)
    db.session.commit()
    return count, fen
