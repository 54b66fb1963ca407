"""Measure what row-level security costs on PostgreSQL: the same pages as the table owner
(a superuser, so no policy applies, and no set_config hook) and as the restricted role with
the policies and the per-transaction set_config of app/rls.py.

Creates a database named heatflow_bench_<random>, migrates it, installs the demo group and
builds the data of benchmarks/hq_dashboard.py: --accounts accounts over the four companies,
two seasons of ledger lines, 40,000 process instances with their tasks, and the daily
and season totals. It then requests each page through the Flask test client of two apps on the same
database, alternating one request of each per round, and prints the median of each side and
their ratio:

- account search: a clerk searching a legacy-number fragment (a LIKE over the company's
  accounts, plus the exact-number match);
- statement: a clerk opening one account with its ledger lines;
- inbox page: an approver's task list;
- HQ collection: the group's collection summary as hq_auditor.

Two pairs of statements are timed the same way on bare connections, to separate the policy
predicate from the rest of a request. The first counts one company's ledger lines, as the
owner and as the restricted role after its set_config. The second compares `SELECT 1` as
the owner with the set_config statement alone. The database is dropped at the end, also after a
failure; the role stays, as the test suite creates it too.

    .venv/bin/python benchmarks/rls_cost.py --accounts 200000
"""

import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import argument_parser, check_range, parse_local, scratch_database  # noqa: E402
from hq_dashboard import (  # noqa: E402
    LEDGER_COLUMNS, PROCESS_INSTANCES, companies, copy_rows, ensure_seasons, generate_network, generate_processes, ledger_rows,
    timed,
)

from app import create_app  # noqa: E402
from app.demo import DEMO_PASSWORD, install_demo  # noqa: E402
from app.extensions import db  # noqa: E402
from app.hq.totals import (  # noqa: E402
    rebuild_account_counts, rebuild_daily_totals, rebuild_season_totals, rebuild_step_totals,
)
from app.rls import _SET_SQL, VISIBLE_SETTING, WRITABLE_SETTING, grant_app_role, role_bypasses_rls, scope_settings  # noqa: E402
from app.tenancy import company_scope  # noqa: E402

APP_ROLE = "heatflow_app"


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--accounts", type=int, default=200_000, help="accounts over the four companies (default 200,000)")
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds per page after one warm-up (default 15)")
    arguments = parse_local(parser)
    check_range(parser, "--accounts", arguments.accounts, 4_000, 4_000_000)
    check_range(parser, "--repeat", arguments.repeat, 3, 200)
    return arguments


def build_data(accounts):
    per_company = accounts // 4
    timed(f"generate network and {per_company * 4:,} accounts", lambda: generate_network(per_company))
    seasons = ensure_seasons()
    codes = {company_id: code for code, company_id, _ in companies()}
    timed("COPY ledger lines", lambda: copy_rows("ledger_entry", LEDGER_COLUMNS, ledger_rows(seasons, codes)))
    timed(f"COPY {PROCESS_INSTANCES:,} process instances and tasks", lambda: generate_processes(PROCESS_INSTANCES))
    timed("rebuild daily and step totals", lambda: (rebuild_daily_totals(db.session.connection()), rebuild_step_totals(db.session.connection())))
    timed("rebuild season totals and account counts",
          lambda: (rebuild_season_totals(db.session.connection()), rebuild_account_counts(db.session.connection())))
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        timed("VACUUM ANALYZE", lambda: connection.execute(sa.text("VACUUM ANALYZE")))


def create_app_role(owner_url):
    """Create the restricted role if the server lacks it, and grant it the data rights of production."""
    engine = sa.create_engine(owner_url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "DO $$ BEGIN"
            f" CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;"
            " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;"
            " END $$"
        ))
        grant_app_role(connection, APP_ROLE)
    engine.dispose()


def without_scope_settings(engine):
    """Remove the set_config hook of app/rls.py from `engine`, as an app without row-level security would run."""
    from app import rls

    event.remove(engine, "before_cursor_execute", rls._apply_scope_settings)
    for name in ("begin", "commit", "rollback", "rollback_savepoint"):
        event.remove(engine, name, rls._forget_settings)


def logged_in(application, username):
    client = application.test_client()
    response = client.post("/login", data={"username": username, "password": DEMO_PASSWORD})
    if response.status_code != 302:
        raise RuntimeError(f"login of {username} returned status {response.status_code}")
    return client


def compare(label, owner_call, rls_call, repeat):
    """Run both calls once to warm up, then `repeat` rounds alternating them; print both medians and the ratio."""
    owner_call()
    rls_call()
    owner_ms, rls_ms = [], []
    for _ in range(repeat):
        for call, samples in ((owner_call, owner_ms), (rls_call, rls_ms)):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1000)
    owner, rls = statistics.median(owner_ms), statistics.median(rls_ms)
    print(f"{label:<36} {owner:10.2f} {rls:10.2f} {rls / owner:7.2f}", flush=True)
    return rls / owner


def page_getter(application, client, url):
    def get():
        with application.app_context():
            response = client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"{url} returned status {response.status_code}")
            db.session.remove()

    return get


def benchmark(owner_url, app_url, accounts, repeat):
    owner_app = create_app({"SQLALCHEMY_DATABASE_URI": owner_url}, config_name="testing")
    with owner_app.app_context():
        from flask_migrate import upgrade

        upgrade()
        install_demo()
        build_data(accounts)
        tj_id = db.session.execute(sa.text("SELECT id FROM company WHERE code = 'TJ'")).scalar_one()
        # An account in the middle of TJ, so neither the search nor the index lookup starts at an edge.
        account_id, legacy_no = db.session.execute(sa.text(
            "SELECT id, legacy_no FROM account WHERE company_id = :id AND billing_status = 'normal' ORDER BY id"
            " OFFSET (SELECT count(*) / 2 FROM account WHERE company_id = :id AND billing_status = 'normal') LIMIT 1"
        ), {"id": tj_id}).one()
        db.session.remove()
        without_scope_settings(db.engine)
    create_app_role(owner_url)
    rls_app = create_app({"SQLALCHEMY_DATABASE_URI": app_url}, config_name="testing")
    with rls_app.app_context():
        with db.engine.connect() as connection:
            if role_bypasses_rls(connection):
                raise RuntimeError(f"role {APP_ROLE} bypasses row-level security; the comparison would measure nothing")

    pages = [
        ("account search", "tj_clerk", f"/accounts/?q={legacy_no[:-1]}"),
        ("statement (account page)", "tj_clerk", f"/accounts/{account_id}"),
        ("inbox page", "tj_approver", "/processes/inbox"),
        ("HQ collection", "hq_auditor", "/hq/collection?season=2025-2026"),
    ]
    print()
    print(f"{'median of ' + str(repeat) + ' rounds':<36} {'owner ms':>10} {'RLS ms':>10} {'ratio':>7}")
    ratios = []
    for label, username, url in pages:
        with owner_app.app_context():
            owner_client = logged_in(owner_app, username)
        with rls_app.app_context():
            rls_client = logged_in(rls_app, username)
        ratios.append(compare(label, page_getter(owner_app, owner_client, url), page_getter(rls_app, rls_client, url), repeat))

    count_sql = sa.text("SELECT count(*) FROM ledger_entry WHERE company_id = :id")
    visible, writable = scope_settings(company_scope(tj_id))
    owner_engine, rls_engine = sa.create_engine(owner_url), sa.create_engine(app_url)

    def owner_count():
        with owner_engine.connect() as connection:
            connection.execute(count_sql, {"id": tj_id}).scalar_one()

    def rls_count():
        with rls_engine.connect() as connection:
            connection.exec_driver_sql(_SET_SQL, (VISIBLE_SETTING, visible, WRITABLE_SETTING, writable))
            connection.execute(count_sql, {"id": tj_id}).scalar_one()

    def owner_round_trip():
        with owner_engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def rls_round_trip():
        with rls_engine.connect() as connection:
            connection.exec_driver_sql(_SET_SQL, (VISIBLE_SETTING, visible, WRITABLE_SETTING, writable))

    ratios.append(compare("SQL: count TJ ledger lines", owner_count, rls_count, repeat))
    ratios.append(compare("SQL: SELECT 1 vs set_config alone", owner_round_trip, rls_round_trip, repeat))
    owner_engine.dispose()
    rls_engine.dispose()
    for application in (owner_app, rls_app):
        with application.app_context():
            db.session.remove()
            db.engine.dispose()
    print(f"\nratios from {min(ratios):.2f} to {max(ratios):.2f}; accounts {accounts:,}")


def main():
    arguments = parse_arguments()
    with scratch_database(arguments.admin_url) as owner_url:
        app_url = sa.engine.make_url(owner_url).set(username=APP_ROLE, password=None).render_as_string(hide_password=False)
        benchmark(owner_url, app_url, arguments.accounts, arguments.repeat)


if __name__ == "__main__":
    main()
