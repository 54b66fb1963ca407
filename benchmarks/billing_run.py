"""Time the set-based billing run on PostgreSQL against a plain INSERT ... SELECT.

Creates a database named heatflow_bench_<random>, migrates it, installs the demo,
generates accounts for company TJ with INSERT ... SELECT generate_series, and times:

  baseline  one INSERT ... SELECT of the rows the billing run writes per account, with the
            same arithmetic, into new tables without indexes: the charge line
            (ledger_entry), its bill.issued event (outbox_event) and the account's HQ season
            balance (hq_account_season_balance); then the same into new tables with the
            indexes and unique keys of those three tables. Neither has foreign keys,
            ON CONFLICT clauses or the already-charged check. Per batch, the run also
            upserts a few HQ daily-total rows, the company's season total and the
            billing_run row; the baseline leaves those out. It runs with the batches'
            settings (work_mem 32 MB, jit off).
  bulk      run_billing (the batched INSERT ... ON CONFLICT path)
  re-run    run_billing again, which must post nothing
  resume    run_billing after deleting the charges of the upper half of the account ids
  one       run_billing after deleting every charge, with the batches on one connection

After each run the script checks that the HQ season balances, the company's season total
and the HQ daily totals equal the ledger. Deleting charges also deletes their season
balances and recomputes the company's totals, as if those charges had never been posted.
The database is dropped at the end, also after a failure.

    .venv/bin/python benchmarks/billing_run.py --accounts 1000000
    .venv/bin/python benchmarks/billing_run.py --accounts 100000   # a smaller run for trying changes
"""

import sqlalchemy as sa

from common import argument_parser, check_range, demo_app, parse_local, scratch_database, timed

from app.billing import bulk  # noqa: E402
from app.billing.precision import company_money_rule  # noqa: E402
from app.billing.proration import season_tariffs  # noqa: E402
from app.billing.services import get_company, run_billing  # noqa: E402
from app.demo import SEASON_NAME  # noqa: E402
from app.extensions import db  # noqa: E402
from app.tariffs.services import get_season  # noqa: E402

COMPANY = "TJ"
ACCOUNTS_PER_UNIT = 100
UNITS_PER_BUILDING = 4
BUILDINGS_PER_COMMUNITY = 250

# Network rows for company :company_id: communities with codes from 1001 up, their buildings
# (every other one with a lift), units, two heat sources and four stations.
NETWORK_SQL = [
    """
    INSERT INTO community (company_id, code, name)
    SELECT :company_id, lpad(CAST(1000 + n AS text), 4, '0'), '压测小区' || n
    FROM generate_series(1, :communities) AS n
    """,
    """
    INSERT INTO building (company_id, community_id, code, has_lift)
    SELECT c.company_id, c.id, lpad(CAST(n AS text), 3, '0'), n % 2 = 0
    FROM community c CROSS JOIN generate_series(1, :buildings_per_community) AS n
    WHERE c.company_id = :company_id AND c.name LIKE '压测小区%'
    """,
    """
    INSERT INTO unit (company_id, building_id, code)
    SELECT b.company_id, b.id, lpad(CAST(n AS text), 2, '0')
    FROM building b CROSS JOIN generate_series(1, :units_per_building) AS n
    WHERE b.company_id = :company_id
    """,
    """
    INSERT INTO heat_source (company_id, name, kind)
    VALUES (:company_id, '压测热电厂', '热电联产'), (:company_id, '压测锅炉房', '燃气锅炉')
    """,
    """
    INSERT INTO station (company_id, name, heat_source_id)
    SELECT :company_id, '压测' || n || '站', h.id
    FROM generate_series(1, 4) AS n
    JOIN heat_source h ON h.company_id = :company_id
        AND h.name = CASE WHEN n % 2 = 0 THEN '压测锅炉房' ELSE '压测热电厂' END
    """,
]

# :accounts accounts spread over the units, 100 per unit. User types, statuses and areas
# vary by a hash of the row number: about 90% residential, 5% low income, 5% non-residential,
# 85% normal, 8% suspended, 5% not connected, 2% forced off, areas 40 to 190 m².
ACCOUNTS_SQL = """
INSERT INTO account (
    company_id, account_no, legacy_no, customer_name, phone, unit_id, room, station_id,
    building_area, usable_area, user_type, billing_status, valve_state, billing_method,
    prior_arrears, note
)
SELECT
    u.company_id,
    :company_number || c.code || b.code || u.code || lpad(CAST(r AS text), 4, '0'),
    'BENCH-' || CAST(g.row_no AS text),
    '压测用户', '',
    u.id, CAST(r AS text),
    (SELECT s.id FROM station s WHERE s.company_id = u.company_id ORDER BY s.id OFFSET g.row_no % 4 LIMIT 1),
    400000 + (g.row_no * 7919) % 1500000,
    CASE WHEN g.row_no % 3 = 0 THEN 300000 + (g.row_no * 104729) % 1000000 END,
    CASE WHEN g.row_no % 20 = 0 THEN 'non_residential' WHEN g.row_no % 20 = 1 THEN 'low_income' ELSE 'residential' END,
    CASE
        WHEN g.row_no % 100 < 85 THEN 'normal'
        WHEN g.row_no % 100 < 93 THEN 'suspended'
        WHEN g.row_no % 100 < 98 THEN 'not_connected'
        ELSE 'forced_off'
    END,
    'open', 'area', 0, ''
FROM (
    SELECT u.id AS unit_id, row_number() OVER (ORDER BY u.id) AS unit_no
    FROM unit u WHERE u.company_id = :company_id
) AS numbered
JOIN unit u ON u.id = numbered.unit_id
JOIN building b ON b.id = u.building_id
JOIN community c ON c.id = b.community_id
CROSS JOIN LATERAL (
    SELECT r, (numbered.unit_no - 1) * :accounts_per_unit + r AS row_no
    FROM generate_series(1, :accounts_per_unit) AS r
) AS g
WHERE g.row_no <= :accounts
"""


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--accounts", type=int, default=1_000_000, help="accounts to generate for TJ (default 1,000,000)")
    arguments = parse_local(parser)
    check_range(parser, "--accounts", arguments.accounts, 1, 10_000_000)
    return arguments


def generate_accounts(company, count):
    communities = -(-count // (ACCOUNTS_PER_UNIT * UNITS_PER_BUILDING * BUILDINGS_PER_COMMUNITY))
    if communities > 8999:
        raise ValueError(f"{count} accounts need {communities} communities, more than the 4-digit codes 1001-9999 allow.")
    params = {
        "company_id": company.id,
        "company_number": company.number,
        "communities": communities,
        "buildings_per_community": BUILDINGS_PER_COMMUNITY,
        "units_per_building": UNITS_PER_BUILDING,
        "accounts_per_unit": ACCOUNTS_PER_UNIT,
        "accounts": count,
    }
    for statement in NETWORK_SQL:
        db.session.execute(sa.text(statement), params)
    db.session.execute(sa.text(ACCOUNTS_SQL), params)
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))


BASELINE_TABLES = {
    "ledger_entry": "bench_scratch",
    "outbox_event": "bench_scratch_events",
    "hq_account_season_balance": "bench_scratch_balances",
}


def baseline_sql(tables):
    """Return the bulk INSERT retargeted at `tables` ({real: scratch}), without ON CONFLICT and the charged-account check."""
    text = bulk._INSERT_BATCH.text
    replacements = [(f"INSERT INTO {real} (", f"INSERT INTO {scratch} (") for real, scratch in tables.items()]
    replacements += [
        ("    ON CONFLICT (company_id, idempotency_key) DO NOTHING\n", ""),
        ("    ON CONFLICT (company_id, season_id, account_id) DO UPDATE\n"
         "        SET receivable = hq_account_season_balance.receivable + EXCLUDED.receivable\n", ""),
    ]
    for old, new in replacements:
        if old not in text:
            raise RuntimeError(f"The bulk billing SQL no longer contains {old.strip()!r}; update baseline_sql().")
        text = text.replace(old, new)
    start = text.index("        AND NOT EXISTS (")
    end = text.index("        )\n", start) + len("        )\n")
    text = text[:start] + text[end:]
    for real in tables:
        if f"INSERT INTO {real} " in text:
            raise RuntimeError(f"The baseline SQL still writes to {real}; update baseline_sql().")
    return sa.text(text)


def run_baseline(company, season, with_indexes=False):
    """Insert every charge, its bill.issued event and its season balance in one statement into new tables.

    The tables are shaped like ledger_entry, outbox_event and hq_account_season_balance.
    Without `with_indexes` they have no index, key or constraint but NOT NULL. With it,
    they get the indexes and unique keys of the real tables but still no foreign keys.
    """
    suffix = "_indexed" if with_indexes else ""
    tables = {source: scratch + suffix for source, scratch in BASELINE_TABLES.items()}
    copied = "INCLUDING DEFAULTS INCLUDING INDEXES" if with_indexes else "INCLUDING DEFAULTS"
    for source, table in tables.items():
        db.session.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        db.session.execute(sa.text(f"CREATE TABLE {table} (LIKE {source} {copied})"))
    db.session.commit()
    tariff = season_tariffs(season)[0]
    first_id, last_id = db.session.execute(
        sa.text("SELECT min(id), max(id) FROM account WHERE company_id = :company_id"), {"company_id": company.id}
    ).one()
    with company_money_rule(company.id):
        params = bulk.batch_parameters(company, season, tariff, run_id=0, user_id=None)
    params.update(first_id=first_id, last_id=last_id)
    # The same settings as each batch of the run, so JIT compiling is in neither figure.
    db.session.execute(sa.text("SET LOCAL work_mem = '32MB'"))
    db.session.execute(sa.text(bulk.BATCH_SETTINGS))
    groups = db.session.execute(baseline_sql(tables), params).all()
    db.session.commit()
    count = sum(group.lines for group in groups)
    fen = sum(int(group.fen) for group in groups)
    balances = db.session.execute(sa.text(f"SELECT count(*) FROM {tables['hq_account_season_balance']}")).scalar_one()
    if balances != count:
        raise RuntimeError(f"The baseline wrote {balances} season balances for {count} charge lines.")
    for table in tables.values():
        db.session.execute(sa.text(f"DROP TABLE {table}"))
    db.session.commit()
    return count, fen


def charge_totals(company, season):
    count, fen = db.session.execute(
        sa.text(
            "SELECT count(*), COALESCE(sum(amount), 0) FROM ledger_entry"
            " WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'"
        ),
        {"company_id": company.id, "season_id": season.id},
    ).one()
    return count, int(fen)


# Each query returns one row per HQ figure that differs from the ledger, as (figure, HQ value,
# ledger value). The benchmark posts charges only, so the ledger's receivable is its charges.
HQ_CHECKS = [
    """
    SELECT 'season balance of account ' || COALESCE(l.account_id, b.account_id), b.receivable, l.fen
    FROM (
        SELECT account_id, sum(amount) AS fen FROM ledger_entry
        WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge' GROUP BY account_id
    ) AS l
    FULL JOIN (
        SELECT account_id, receivable FROM hq_account_season_balance WHERE company_id = :company_id AND season_id = :season_id
    ) AS b ON b.account_id = l.account_id
    WHERE b.receivable IS DISTINCT FROM l.fen OR b.account_id IS NULL
    LIMIT 5
    """,
    """
    SELECT 'company season receivable', (
        SELECT receivable FROM hq_company_season_total WHERE company_id = :company_id AND season_id = :season_id
    ), l.fen
    FROM (
        SELECT COALESCE(sum(amount), 0) AS fen FROM ledger_entry
        WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'
    ) AS l
    WHERE l.fen IS DISTINCT FROM (
        SELECT COALESCE(receivable, 0) FROM hq_company_season_total WHERE company_id = :company_id AND season_id = :season_id
    )
    """,
    """
    SELECT 'company season received', t.received, 0 FROM hq_company_season_total t
    WHERE t.company_id = :company_id AND t.season_id = :season_id AND t.received <> 0
    """,
    """
    SELECT 'daily totals ' || d.source || ' amount/lines', d.fen || '/' || d.lines, l.fen || '/' || l.lines
    FROM (
        SELECT 'company' AS source, COALESCE(sum(amount), 0) AS fen, COALESCE(sum(entries), 0) AS lines
        FROM hq_company_daily_total WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'
        UNION ALL
        SELECT 'community', COALESCE(sum(amount), 0), COALESCE(sum(entries), 0)
        FROM hq_community_daily_total WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'
    ) AS d
    CROSS JOIN (
        SELECT COALESCE(sum(amount), 0) AS fen, count(*) AS lines FROM ledger_entry
        WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'
    ) AS l
    WHERE d.fen <> l.fen OR d.lines <> l.lines
    """,
]


def check_hq_totals(company, season, step):
    """Raise when a HQ season balance, the company's season total or a daily-total sum differs from the ledger."""
    params = {"company_id": company.id, "season_id": season.id}
    differences = [row for check in HQ_CHECKS for row in db.session.execute(sa.text(check), params)]
    db.session.commit()
    if differences:
        listed = "; ".join(f"{figure}: HQ {hq}, ledger {ledger}" for figure, hq, ledger in differences)
        raise RuntimeError(f"After {step} the HQ totals differ from the ledger: {listed}")


# Bring the company's HQ totals back in line with the ledger after charges and their season
# balances were deleted: recompute the season total from the balances left and the daily
# totals of the charges from the ledger.
RESYNC_HQ_SQL = [
    """
    UPDATE hq_company_season_total t SET receivable = s.receivable, received = s.received
    FROM (
        SELECT COALESCE(sum(receivable), 0) AS receivable, COALESCE(sum(
            CASE WHEN receivable <= 0 THEN 0 WHEN received < receivable THEN received ELSE receivable END
        ), 0) AS received
        FROM hq_account_season_balance WHERE company_id = :company_id AND season_id = :season_id
    ) AS s
    WHERE t.company_id = :company_id AND t.season_id = :season_id
    """,
    "DELETE FROM hq_community_daily_total WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'",
    "DELETE FROM hq_company_daily_total WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'",
    """
    INSERT INTO hq_community_daily_total (company_id, season_id, community_id, category, day, kind, amount, entries)
    SELECT e.company_id, e.season_id, b.community_id, a.user_type, CAST(timezone('Asia/Shanghai', e.created_at) AS date),
        e.kind, sum(e.amount), count(*)
    FROM ledger_entry e
    JOIN account a ON a.id = e.account_id
    JOIN unit u ON u.id = a.unit_id
    JOIN building b ON b.id = u.building_id
    WHERE e.company_id = :company_id AND e.season_id = :season_id AND e.kind = 'charge'
    GROUP BY 1, 2, 3, 4, 5, 6
    """,
    """
    INSERT INTO hq_company_daily_total (company_id, season_id, category, day, kind, amount, entries)
    SELECT company_id, season_id, category, day, kind, sum(amount), sum(entries)
    FROM hq_community_daily_total
    WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'
    GROUP BY 1, 2, 3, 4, 5
    """,
]


def delete_charges(company, season, upper_half=True):
    """Delete the season's charge lines, of the upper half of the account ids or all, with their HQ totals; return how many.

    The benchmark posts nothing but charges, so an account's season balance goes with its charge.
    """
    condition = (
        " AND account_id > (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY id) FROM account"
        " WHERE company_id = :company_id)"
    ) if upper_half else ""
    params = {"company_id": company.id, "season_id": season.id}
    deleted = db.session.execute(
        sa.text(
            "WITH deleted AS ("
            " DELETE FROM ledger_entry WHERE company_id = :company_id AND season_id = :season_id AND kind = 'charge'"
            + condition
            + " RETURNING account_id),"
            " balances AS (DELETE FROM hq_account_season_balance b USING deleted d"
            " WHERE b.company_id = :company_id AND b.season_id = :season_id AND b.account_id = d.account_id)"
            " SELECT count(*) FROM deleted"
        ),
        params,
    ).scalar_one()
    for statement in RESYNC_HQ_SQL:
        db.session.execute(sa.text(statement), params)
    db.session.commit()
    check_hq_totals(company, season, "deleting charges")
    return deleted


def run_on_one_connection():
    """Run run_billing with the batches one after another, as before they ran side by side."""
    workers = bulk.WORKERS
    bulk.WORKERS = 1
    try:
        return run_billing(COMPANY, SEASON_NAME)
    finally:
        bulk.WORKERS = workers


def benchmark(accounts):
    company = get_company(COMPANY)
    season = get_season(company.id, SEASON_NAME)
    _, generate_seconds = timed(f"generate {accounts:,} accounts", lambda: generate_accounts(company, accounts))

    with company_money_rule(company.id):
        if not bulk.bulk_billing_applies(company, season, season_tariffs(season)):
            raise RuntimeError("run_billing would take the per-account loop here, so there is no bulk path to time.")
    (baseline_count, baseline_fen), baseline_seconds = timed("(a) baseline INSERT ... SELECT", lambda: run_baseline(company, season))
    _, indexed_seconds = timed(
        "    same into a table with ledger indexes", lambda: run_baseline(company, season, with_indexes=True)
    )
    run, bulk_seconds = timed("(b) run_billing, bulk path", lambda: run_billing(COMPANY, SEASON_NAME))
    bulk_count, bulk_fen = charge_totals(company, season)
    if (bulk_count, bulk_fen) != (baseline_count, baseline_fen):
        raise RuntimeError(f"bulk posted {bulk_count} lines / {bulk_fen} fen, baseline {baseline_count} / {baseline_fen}")
    check_hq_totals(company, season, "the bulk run")
    rerun, rerun_seconds = timed("re-run (posts nothing)", lambda: run_billing(COMPANY, SEASON_NAME))
    check_hq_totals(company, season, "the re-run")
    deleted = delete_charges(company, season)
    resumed, resume_seconds = timed(f"resume after deleting {deleted:,} lines", lambda: run_billing(COMPANY, SEASON_NAME))
    if rerun.accounts_billed != 0 or resumed.accounts_billed != deleted or charge_totals(company, season) != (bulk_count, bulk_fen):
        raise RuntimeError(f"re-run posted {rerun.accounts_billed}, resume posted {resumed.accounts_billed} of {deleted}")
    check_hq_totals(company, season, "the resumed run")
    delete_charges(company, season, upper_half=False)
    _, single_seconds = timed("(c) run_billing, batches on one connection", run_on_one_connection)
    if charge_totals(company, season) != (bulk_count, bulk_fen):
        raise RuntimeError("run_billing on one connection posted other lines than on several")
    check_hq_totals(company, season, "the run on one connection")

    print()
    print(f"accounts {accounts:,}, charge lines {bulk_count:,}, total {bulk_fen / 100:,.2f} yuan, batch {bulk.BATCH_SIZE:,}")
    print(f"ratio bulk / baseline   {bulk_seconds / baseline_seconds:.2f}")
    print(f"ratio bulk / baseline with indexes {bulk_seconds / indexed_seconds:.2f}")
    print(f"ratio re-run / baseline {rerun_seconds / baseline_seconds:.2f}")
    print(f"ratio resume / baseline {resume_seconds / baseline_seconds:.2f} (half the accounts)")
    print(f"ratio one connection / baseline {single_seconds / baseline_seconds:.2f}")
    print(f"ratio one connection / {bulk.WORKERS} connections {single_seconds / bulk_seconds:.2f}")
    return run


def main():
    arguments = parse_arguments()
    with scratch_database(arguments.admin_url) as url, demo_app(url):
        benchmark(arguments.accounts)


if __name__ == "__main__":
    main()
