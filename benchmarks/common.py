"""Argument parsing, throw-away PostgreSQL databases and timing shared by the benchmark scripts.

Every script creates its own database heatflow_bench_<random> on a local server, runs
every statement under STATEMENT_TIMEOUT_SECONDS, and drops the database at the end, also
after a failure.
"""

import argparse
import contextlib
import logging
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
# Every statement of a benchmark is cancelled after this long, so a bad plan cannot run unbounded.
STATEMENT_TIMEOUT_SECONDS = 600


def argument_parser(doc):
    """Return an ArgumentParser showing `doc` and taking --admin-url."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--admin-url", default=DEFAULT_ADMIN_URL,
        help="URL of a PostgreSQL database from which the benchmark database is created and dropped",
    )
    return parser


def check_range(parser, option, value, low, high):
    """Stop with a usage error when `value` of `option` lies outside low..high."""
    if not low <= value <= high:
        parser.error(f"{option} {value} is out of range; use {low:,} to {high:,}.")


def parse_local(parser):
    """Parse the command line and refuse an --admin-url on another host."""
    arguments = parser.parse_args()
    host = sa.engine.make_url(arguments.admin_url).host
    if host not in LOCAL_HOSTS:
        parser.error(f"--admin-url host {host} is not local; the benchmark runs against 127.0.0.1 or localhost only.")
    logging.basicConfig(level=logging.WARNING)
    return arguments


def admin_execute(admin_url, statement):
    """Run one statement outside a transaction (CREATE or DROP DATABASE)."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def timed(label, function):
    """Call `function`, print its wall time after `label` and return (result, seconds)."""
    started = time.perf_counter()
    result = function()
    elapsed = time.perf_counter() - started
    print(f"{label:<44} {elapsed:8.2f} s", flush=True)
    return result, elapsed


@contextlib.contextmanager
def scratch_database(admin_url, statement_timeout=True):
    """Create heatflow_bench_<random>, yield its URL as a string, and drop it afterwards.

    With `statement_timeout` the URL sets STATEMENT_TIMEOUT_SECONDS on every connection.
    """
    name = "heatflow_bench_" + uuid.uuid4().hex[:10]
    url = sa.engine.make_url(admin_url).set(database=name)
    if statement_timeout:
        url = url.set(query={"options": f"-c statement_timeout={STATEMENT_TIMEOUT_SECONDS * 1000}"})
    admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    print(f"database {name}", flush=True)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"dropped {name}")


@contextlib.contextmanager
def demo_app(database_url, config=None, demo=True, system_scope=False):
    """Yield the app on `database_url`, migrated and (with `demo`) with the demo group installed.

    The block runs inside the app context; the session is closed and the engine disposed
    at the end, so the database can be dropped.
    """
    from flask_migrate import upgrade

    from app import create_app
    from app.demo import install_demo
    from app.extensions import db
    from app.tenancy import SYSTEM_SCOPE, set_scope

    application = create_app({"SQLALCHEMY_DATABASE_URI": database_url, **(config or {})}, config_name="testing")
    with application.app_context():
        upgrade()
        if system_scope:
            set_scope(SYSTEM_SCOPE)
        if demo:
            install_demo()
        try:
            yield application
        finally:
            db.session.remove()
            db.engine.dispose()
