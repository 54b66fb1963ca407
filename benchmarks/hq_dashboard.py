"""Time the HQ dashboard endpoints on PostgreSQL with a group of 1,000,000 accounts.

Creates a database named heatflow_bench_<random>, migrates it, installs the demo group,
and generates for each of the four companies an equal share of the accounts (1,000 per
community), the seasons 2024-2025 and 2025-2026, and with COPY: one charge per account
and season, payments spread over each season (about 90% of last season's and 60% of
this season's charges paid), prior arrears on 1% of the accounts, waivers on 0.5% (2% in
QD, the outlier), process instances with their human tasks, and a valve history: 5% of
the accounts closed or sealed on a day from 2025-11-01 to 2026-02-28, half of them opened
again 5 to 34 days later. The daily totals are then rebuilt from the ledger and the tasks,
as after any bulk load that bypasses the ORM.

Each dashboard endpoint is requested through the Flask test client as hq_auditor, once to
warm up and then --repeat times; the median is reported with its ratio to a raw baseline
measured in the same run: `SELECT count(*) FROM ledger_entry`. The group figures as of the
chosen date are checked against sums over the ledger itself, and the shut-off count
against the latest valve change of each account up to that date. The database is dropped
at the end, also after a failure.

    .venv/bin/python benchmarks/hq_dashboard.py --accounts 1000000
"""

import io
import logging
import statistics
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from billing_run import ACCOUNTS_SQL, NETWORK_SQL  # noqa: E402
from common import admin_execute, argument_parser, check_range, parse_local  # noqa: E402

from app import create_app  # noqa: E402
from app.clock import LOCAL_TIME  # noqa: E402
from app.demo import DEMO_PASSWORD, install_demo  # noqa: E402
from app.extensions import db  # noqa: E402
from app.hq.totals import (  # noqa: E402
    rebuild_account_counts, rebuild_daily_totals, rebuild_season_totals, rebuild_step_totals,
)
from app.processes.models import GENESIS_HASH  # noqa: E402

COMPANIES = ("TJ", "QD", "SJZ", "BJ")
SEASONS = {"2024-2025": (date(2024, 11, 15), date(2025, 3, 15)), "2025-2026": (date(2025, 11, 15), date(2026, 3, 15))}
SEASON = "2025-2026"
AS_OF = date(2026, 1, 15)
ACCOUNTS_PER_UNIT = 25
UNITS_PER_BUILDING = 4
BUILDINGS_PER_COMMUNITY = 10
PROCESS_INSTANCES = 40_000
STATEMENT_TIMEOUT_SECONDS = 900
VALVE_SHARE_PERCENT = 5
VALVE_FIRST_CLOSING = "2025-11-01 12:00:00+08"
# Generated closings and openings: a closing on one of 120 days from VALVE_FIRST_CLOSING,
# and for even account ids an opening 5 to 34 days later.
VALVE_HISTORY_SQL = """
WITH picked AS (
    SELECT a.id, a.company_id, b.community_id,
           CAST(:first AS timestamptz) + ((a.id * 131) % 120) * INTERVAL '1 day' AS closed_at,
           CASE WHEN a.id % 2 = 0
                THEN CAST(:first AS timestamptz) + ((a.id * 131) % 120 + 5 + a.id % 30) * INTERVAL '1 day' END AS opened_at
    FROM account a JOIN unit u ON u.id = a.unit_id JOIN building b ON b.id = u.building_id
    WHERE (a.id::bigint * 7919) % 100 < :share
), changes AS (
    SELECT company_id, community_id, id AS account_id, CASE WHEN id % 3 = 0 THEN 'sealed' ELSE 'closed' END AS state,
           closed_at AS effective_at, opened_at AS ended_at
    FROM picked
    UNION ALL
    SELECT company_id, community_id, id, 'open', opened_at, NULL FROM picked WHERE opened_at IS NOT NULL
)
INSERT INTO valve_change (company_id, community_id, account_id, state, effective_at, ended_at, cause_type, recorded_at, note)
SELECT company_id, community_id, account_id, state, effective_at, ended_at, 'process_instance', effective_at, 'bench' FROM changes
"""
LEDGER_COLUMNS = ("company_id", "account_id", "season_id", "kind", "amount", "cause_type", "idempotency_key", "memo", "created_at")


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--accounts", type=int, default=1_000_000, help="accounts over the four companies (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per endpoint after one warm-up (default 7)")
    arguments = parse_local(parser)
    check_range(parser, "--accounts", arguments.accounts, 4_000, 4_000_000)
    check_range(parser, "--repeat", arguments.repeat, 1, 50)
    return arguments


def timed(label, function):
    started = time.perf_counter()
    result = function()
    print(f"{label:<52} {time.perf_counter() - started:8.2f} s", flush=True)
    return result


def local_noon(day):
    return datetime(day.year, day.month, day.day, 12, tzinfo=LOCAL_TIME).astimezone(timezone.utc)


def companies():
    rows = db.session.execute(sa.text("SELECT code, id, number FROM company WHERE code = ANY(:codes)"), {"codes": list(COMPANIES)})
    found = {code: (company_id, number) for code, company_id, number in rows}
    return [(code, *found[code]) for code in COMPANIES]


def generate_network(per_company):
    for _code, company_id, number in companies():
        communities = -(-per_company // (ACCOUNTS_PER_UNIT * UNITS_PER_BUILDING * BUILDINGS_PER_COMMUNITY))
        params = {
            "company_id": company_id, "company_number": number, "communities": communities,
            "buildings_per_community": BUILDINGS_PER_COMMUNITY, "units_per_building": UNITS_PER_BUILDING,
            "accounts_per_unit": ACCOUNTS_PER_UNIT, "accounts": per_company,
        }
        for statement in NETWORK_SQL:
            db.session.execute(sa.text(statement), params)
        db.session.execute(sa.text(ACCOUNTS_SQL), params)
    db.session.commit()


def ensure_seasons():
    """Season rows for both seasons in every company; returns {(company id, name): season id}."""
    for name, (start, end) in SEASONS.items():
        db.session.execute(sa.text(
            "INSERT INTO season (company_id, name, start_on, end_on, statutory_days)"
            " SELECT id, :name, :start, :end, :days FROM company WHERE NOT is_headquarters"
            " ON CONFLICT (company_id, name) DO NOTHING"
        ), {"name": name, "start": start, "end": end, "days": (end - start).days + 1})
    db.session.commit()
    rows = db.session.execute(sa.text("SELECT company_id, name, id FROM season"))
    return {(company_id, name): season_id for company_id, name, season_id in rows}


def _spread(seed, first, days):
    """Pick a day from first to first + days - 1, early days more likely, as payments crowd at the start."""
    fraction = ((seed * 2654435761) % 1_000_003) / 1_000_003
    return first + timedelta(days=int(days * fraction * fraction))


def ledger_rows(seasons, codes):
    """Yield the ledger lines as COPY text rows; one pass over the accounts, bounded by their count."""
    # A second connection with a server-side cursor: the session's connection is busy with COPY.
    with db.engine.connect().execution_options(stream_results=True, yield_per=20_000) as reader:
        yield from _account_lines(reader, seasons, codes)


def _account_lines(reader, seasons, codes):
    accounts = reader.execute(sa.text(
        "SELECT id, company_id, building_area, user_type FROM account WHERE billing_status <> 'not_connected' ORDER BY id"
    ))
    for account_id, company_id, area, user_type in accounts:
        price_fen = 2600 if user_type == "non_residential" else 2200
        charge = area * price_fen // 10_000
        h = (account_id * 40503) % 1000
        for name, (start, _end) in SEASONS.items():
            season_id = seasons[(company_id, name)]
            billed = local_noon(start - timedelta(days=25))
            yield (company_id, account_id, season_id, "charge", charge, "bench", f"charge:{season_id}:{account_id}", "", billed)
            share = 900 if name == "2024-2025" else 600
            if h < share:
                paid_on = _spread(account_id + season_id, start - timedelta(days=24), 150)
                amount = charge if h % 10 else charge // 2
                yield (company_id, account_id, season_id, "payment", -amount, "bench", f"pay:{season_id}:{account_id}", "",
                       local_noon(paid_on))
        waiver_share = 20 if codes[company_id] == "QD" else 5
        if h >= 1000 - waiver_share:
            season_id = seasons[(company_id, SEASON)]
            waived_on = _spread(account_id, SEASONS[SEASON][0], 60)
            yield (company_id, account_id, season_id, "waiver", -(charge // 5), "bench", f"waiver:{season_id}:{account_id}", "",
                   local_noon(waived_on))
        if 950 <= h < 960:
            yield (company_id, account_id, None, "prior_arrears", 150_000, "bench", f"prior:{account_id}", "",
                   local_noon(date(2024, 6, 1)))


def _copy_value(value):
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def copy_rows(table, columns, rows, chunk=20_000):
    """COPY rows into table through psycopg, a chunk of text at a time; returns the row count."""
    count = 0
    connection = db.session.connection().connection.driver_connection
    with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for row in rows:
            buffer.write("\t".join(_copy_value(v) for v in row))
            buffer.write("\n")
            count += 1
            if count % chunk == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())
    db.session.commit()
    return count


def generate_processes(count):
    """Instances of 报停 and 减免 with one to three approval tasks each, some still open; returns the task count."""
    models = dict(db.session.execute(sa.text(
        "SELECT company_id, min(id) FROM process_model WHERE process_type = 'suspension' GROUP BY company_id"
    )).all())
    clerks = dict(db.session.execute(sa.text(
        "SELECT company_id, min(id) FROM \"user\" WHERE username LIKE '%\\_clerk' GROUP BY company_id"
    )).all())
    accounts = db.session.execute(sa.text(
        "SELECT id, company_id FROM account ORDER BY id LIMIT :count"
    ), {"count": count}).all()
    first_day = SEASONS[SEASON][0] - timedelta(days=30)
    instances = []
    for n, (account_id, company_id) in enumerate(accounts):
        started = local_noon(_spread(n, first_day, 90)) + timedelta(minutes=n % 480)
        status = "completed"
        if n % 11 == 0:
            status = "rejected"
        if n % 7 == 0:
            status = "running"
        # The generated instances have no audit events, so their chain head is the empty chain.
        instances.append((models[company_id], "suspension" if n % 3 else "waiver", account_id, status, "",
                          clerks[company_id], "{}", 0, GENESIS_HASH, started, started, company_id))
    copy_rows("process_instance", ("model_id", "process_type", "account_id", "status", "state", "started_by_id",
                                   "decision_versions", "audit_seq", "audit_hash", "created_at", "updated_at", "company_id"),
              instances)
    rows = db.session.execute(sa.text(
        "SELECT id, company_id, account_id, process_type, status, created_at FROM process_instance ORDER BY id"
    )).all()
    steps = [("Task_company_approve", "分公司审批", "company_approver"), ("Task_finance", "财务复核", "finance"),
             ("Task_group_approve", "集团审批", "group_approver")]

    def tasks():
        for instance_id, company_id, account_id, process_type, status, created in rows:
            at = created
            depth = 1 + instance_id % 3
            for i, (spec, title, lane) in enumerate(steps[:depth]):
                # QD's group approval waits longest: the stall the dashboard should show.
                hours = 6 + (instance_id * 31 + i * 17) % 60 + (96 if lane == "group_approver" and company_id % 4 == 0 else 0)
                last = i == depth - 1
                done = not (last and status == "running")
                finished = at + timedelta(hours=hours) if done else None
                yield (instance_id, str(uuid.UUID(int=instance_id * 8 + i)), spec, title, lane, "approval",
                       "completed" if done else "open", "", "", at, finished, "", process_type, account_id, company_id)
                at = finished or at

    return copy_rows("human_task", ("instance_id", "spiff_task_id", "task_spec_name", "title", "lane_role", "form", "status",
                                    "claimed_by_name", "comment", "created_at", "completed_at", "delegated_to_name",
                                    "process_type", "account_id", "company_id"), tasks())


def generate_valve_history():
    """Insert the valve history and set each account's current valve state from it; returns the row count."""
    rows = db.session.execute(sa.text(VALVE_HISTORY_SQL), {"first": VALVE_FIRST_CLOSING, "share": VALVE_SHARE_PERCENT}).rowcount
    db.session.execute(sa.text(
        "UPDATE account a SET valve_state = v.state FROM valve_change v"
        " WHERE v.account_id = a.id AND v.company_id = a.company_id AND v.ended_at IS NULL"
    ))
    db.session.commit()
    return rows


def median_ms(function, repeat):
    function()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def check_figures(client):
    """Check that the group row of the company view as of AS_OF equals sums over the ledger itself."""
    end = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=LOCAL_TIME) + timedelta(days=1)
    receivable, received = db.session.execute(sa.text(
        "SELECT sum(amount) FILTER (WHERE kind IN ('charge', 'rerate', 'waiver', 'settlement', 'write_off')),"
        " -sum(amount) FILTER (WHERE kind IN ('payment', 'refund', 'reversal'))"
        " FROM ledger_entry e JOIN season s ON s.id = e.season_id WHERE s.name = :season AND e.created_at < :end"
    ), {"season": SEASON, "end": end}).one()
    group = client.get(f"/hq/dashboard/companies.json?season={SEASON}&as_of={AS_OF}").get_json()["rows"][-1]
    expected = (Decimal(receivable).scaleb(-2), Decimal(received).scaleb(-2))
    if (Decimal(group["receivable"]), Decimal(group["received"])) != expected:
        raise RuntimeError(f"dashboard group row {group['receivable']} / {group['received']} differs from the ledger {expected}")
    print(f"checked: group receivable {group['receivable']}, received {group['received']} as of {AS_OF} equal the ledger sums")
    # Independent of ended_at: the latest change of each account up to the end of the day.
    shut_off = db.session.execute(sa.text(
        "SELECT count(*) FROM (SELECT DISTINCT ON (account_id) state FROM valve_change WHERE effective_at < :end"
        " ORDER BY account_id, effective_at DESC) latest WHERE state IN ('closed', 'sealed')"
    ), {"end": end}).scalar_one()
    if group["shut_off"] != shut_off:
        raise RuntimeError(f"dashboard shut-off count {group['shut_off']} differs from the valve history's {shut_off}")
    print(f"checked: {shut_off:,} shut-off valves as of {AS_OF} equal the latest change per account")


def benchmark(application, accounts, repeat):
    per_company = accounts // len(COMPANIES)
    timed(f"generate network and {per_company * len(COMPANIES):,} accounts", lambda: generate_network(per_company))
    seasons = ensure_seasons()
    codes = {company_id: code for code, company_id, _ in companies()}
    lines = timed("COPY ledger lines", lambda: copy_rows("ledger_entry", LEDGER_COLUMNS, ledger_rows(seasons, codes)))
    tasks = timed(f"COPY {PROCESS_INSTANCES:,} process instances and tasks", lambda: generate_processes(PROCESS_INSTANCES))
    valves = timed("INSERT valve history", generate_valve_history)
    rows = timed("rebuild daily totals from the ledger", lambda: rebuild_daily_totals(db.session.connection()))
    timed("rebuild process-step totals from the tasks", lambda: rebuild_step_totals(db.session.connection()))
    timed("rebuild season totals and account counts",
          lambda: (rebuild_season_totals(db.session.connection()), rebuild_account_counts(db.session.connection())))
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        timed("VACUUM ANALYZE", lambda: connection.execute(sa.text("VACUUM ANALYZE")))
    company_rows = db.session.execute(sa.text("SELECT count(*) FROM hq_company_daily_total")).scalar_one()
    print(f"ledger lines {lines:,}, human tasks {tasks:,}, valve changes {valves:,}, "
          f"daily-total rows: community {rows:,}, company {company_rows:,}")

    db.session.remove()
    client = application.test_client()
    response = client.post("/login", data={"username": "hq_auditor", "password": DEMO_PASSWORD})
    if response.status_code != 302:
        raise RuntimeError(f"login as hq_auditor failed with {response.status_code}")
    check_figures(client)
    db.session.remove()
    tj_id = db.session.execute(sa.text("SELECT id FROM company WHERE code = 'TJ'")).scalar_one()
    community_id = db.session.execute(
        sa.text("SELECT min(id) FROM community WHERE company_id = :id"), {"id": tj_id}
    ).scalar_one()
    db.session.remove()
    query = f"season={SEASON}&as_of={AS_OF}"
    endpoints = [
        ("dashboard page (all group views)", f"/hq/dashboard?{query}"),
        ("companies.json", f"/hq/dashboard/companies.json?{query}"),
        ("collection.json (rate by day)", f"/hq/dashboard/collection.json?{query}"),
        ("arrears.json", f"/hq/dashboard/arrears.json?{query}"),
        ("waivers.json", f"/hq/dashboard/waivers.json?{query}"),
        ("processes.json", f"/hq/dashboard/processes.json?{query}"),
        ("company TJ: communities (page)", f"/hq/dashboard/companies/TJ?{query}"),
        ("community: 1,000 accounts (page)", f"/hq/dashboard/companies/TJ/communities/{community_id}?{query}"),
        ("waivers.xlsx", f"/hq/dashboard/waivers.xlsx?{query}"),
        ("audit explorer: TJ 报停", "/hq/audit?company=TJ&process_type=suspension"),
    ]

    def baseline():
        with db.engine.connect() as connection:
            connection.execute(sa.text("SELECT count(*) FROM ledger_entry")).scalar_one()

    base = median_ms(baseline, repeat)
    print()
    print(f"{'endpoint':<44} {'median ms':>10} {'ratio':>8}")
    print(f"{'baseline SELECT count(*) FROM ledger_entry':<44} {base:10.1f} {1:8.2f}")
    slowest = 0.0
    for label, url in endpoints:
        def get(url=url):
            answer = client.get(url)
            if answer.status_code != 200:
                raise RuntimeError(f"{url} returned status {answer.status_code}")
        elapsed = median_ms(get, repeat)
        slowest = max(slowest, elapsed)
        print(f"{label:<44} {elapsed:10.1f} {elapsed / base:8.2f}", flush=True)
    print(f"\nslowest endpoint {slowest:.1f} ms (target 200 ms); accounts {accounts:,}")


def main():
    arguments = parse_arguments()
    logging.basicConfig(level=logging.WARNING)
    name = "heatflow_bench_" + uuid.uuid4().hex[:10]
    base_url = sa.engine.make_url(arguments.admin_url)
    url = base_url.set(database=name, query={"options": f"-c statement_timeout={STATEMENT_TIMEOUT_SECONDS * 1000}"})
    admin_execute(arguments.admin_url, f'CREATE DATABASE "{name}"')
    print(f"database {name}", flush=True)
    try:
        application = create_app({"SQLALCHEMY_DATABASE_URI": url.render_as_string(hide_password=False)}, config_name="testing")
        logging.getLogger().setLevel(logging.WARNING)
        with application.app_context():
            from flask_migrate import upgrade

            upgrade()
            install_demo()
            try:
                benchmark(application, arguments.accounts, arguments.repeat)
            finally:
                db.session.remove()
                db.engine.dispose()
    finally:
        admin_execute(arguments.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"dropped {name}")


if __name__ == "__main__":
    main()
