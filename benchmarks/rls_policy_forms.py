"""Compare two forms of the tenant policy predicate on one table, in one run.

The per-row form reads and parses `heatflow.visible_companies` for every row it filters.
The current form (`app.rls.policy_statements`) puts both reads in scalar subqueries, which
PostgreSQL computes once per statement. The script creates a database named
heatflow_bench_<random>, fills three copies of a table with --rows rows over 4 companies
(no policy, the per-row form, the current form), and counts one company's rows as the
restricted role heatflow_app under a headquarters-like setting that lists 5 companies.
Rounds alternate the three tables; it prints each median and its ratio to the table
without a policy. The database is dropped at the end, also after a failure.

    .venv/bin/python benchmarks/rls_policy_forms.py --rows 1000000
"""

import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import argument_parser, check_range, parse_local, scratch_database  # noqa: E402
from rls_cost import APP_ROLE, create_app_role  # noqa: E402

from app.rls import _SET_SQL, VISIBLE_SETTING, WRITABLE_SETTING, policy_statements  # noqa: E402

SETTING = f"current_setting('{VISIBLE_SETTING}', true)"
# The predicate as app/rls.py wrote it before the scalar subqueries.
PER_ROW_FORM = f"({SETTING} = '*' OR company_id = ANY (string_to_array(NULLIF({SETTING}, '*'), ',')::integer[]))"
VISIBLE = "1,2,3,4,5"


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of each table (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=9, help="timed rounds after one warm-up (default 9)")
    arguments = parse_local(parser)
    check_range(parser, "--rows", arguments.rows, 1_000, 20_000_000)
    check_range(parser, "--repeat", arguments.repeat, 3, 100)
    return arguments


def create_tables(connection, rows):
    connection.execute(sa.text(
        "CREATE TABLE no_policy AS SELECT g AS id, 1 + g % 4 AS company_id, g AS amount FROM generate_series(1, :rows) g"
    ), {"rows": rows})
    for table in ("per_row_form", "current_form"):
        connection.execute(sa.text(f"CREATE TABLE {table} AS SELECT * FROM no_policy"))
    for table in ("no_policy", "per_row_form", "current_form"):
        connection.execute(sa.text(f"CREATE INDEX ON {table} (company_id)"))
        connection.execute(sa.text(f"GRANT SELECT ON {table} TO {APP_ROLE}"))
    for statement in policy_statements("current_form"):
        connection.execute(sa.text(statement))
    connection.execute(sa.text("ALTER TABLE per_row_form ENABLE ROW LEVEL SECURITY"))
    connection.execute(sa.text("ALTER TABLE per_row_form FORCE ROW LEVEL SECURITY"))
    connection.execute(sa.text(f"CREATE POLICY per_row ON per_row_form FOR SELECT USING {PER_ROW_FORM}"))


def count_ms(engine, table):
    """Count company 2's rows of `table` as the restricted role; return the statement's milliseconds."""
    with engine.begin() as connection:
        connection.execute(sa.text(f"SET LOCAL ROLE {APP_ROLE}"))
        connection.exec_driver_sql(_SET_SQL, (VISIBLE_SETTING, VISIBLE, WRITABLE_SETTING, ""))
        started = time.perf_counter()
        connection.execute(sa.text(f"SELECT count(*) FROM {table} WHERE company_id = 2")).scalar_one()
        return (time.perf_counter() - started) * 1000


def main():
    arguments = parse_arguments()
    with scratch_database(arguments.admin_url) as url:
        create_app_role(url)
        engine = sa.create_engine(url)
        try:
            with engine.begin() as connection:
                create_tables(connection, arguments.rows)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(sa.text("VACUUM ANALYZE"))
            tables = ("no_policy", "per_row_form", "current_form")
            samples = {table: [] for table in tables}
            for table in tables:
                count_ms(engine, table)
            for _ in range(arguments.repeat):
                for table in tables:
                    samples[table].append(count_ms(engine, table))
            base = statistics.median(samples["no_policy"])
            print(f"\ncount of {arguments.rows // 4:,} of {arguments.rows:,} rows, median of {arguments.repeat} rounds")
            print(f"{'table':<16} {'ms':>10} {'ratio':>7}")
            for table in tables:
                median = statistics.median(samples[table])
                print(f"{table:<16} {median:10.1f} {median / base:7.2f}", flush=True)
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
