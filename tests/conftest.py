"""Shared fixtures: one app per database backend, a clean schema per test, demo data and
logged-in clients.

HEATFLOW_TEST_BACKENDS lists the backends (default "sqlite,postgres"). PostgreSQL runs on
127.0.0.1:5432: each test session creates its own database as user postgres, migrates it
as postgres (the table owner), and runs the app as the restricted role HEATFLOW_TEST_PG_APP_ROLE
(default heatflow_app: no superuser, no BYPASSRLS, data grants only), so every test also
passes through the row-level security policies of app/rls.py. The database is dropped at
the end.
"""

import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery.result import _set_task_join_will_block
from flask import g
from flask_babel import refresh as refresh_language
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from app import create_app
from app.extensions import db
from app.tenancy import SYSTEM_SCOPE, set_scope

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEDGERS = FIXTURES / "ledgers"
KNOWN_BACKENDS = ("sqlite", "postgres")
BACKENDS = [b.strip() for b in os.environ.get("HEATFLOW_TEST_BACKENDS", ",".join(KNOWN_BACKENDS)).split(",") if b.strip()]
_unknown = [b for b in BACKENDS if b not in KNOWN_BACKENDS]
if _unknown or not BACKENDS:
    raise pytest.UsageError(
        f"HEATFLOW_TEST_BACKENDS={os.environ.get('HEATFLOW_TEST_BACKENDS')!r} names no known backend"
        f" ({', '.join(_unknown) or 'empty'}); use a comma-separated list of: {', '.join(KNOWN_BACKENDS)}."
    )
SERVER_STOP_TIMEOUT_S = 10
POSTGRES_ADMIN_URL = os.environ.get("HEATFLOW_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
POSTGRES_APP_ROLE = os.environ.get("HEATFLOW_TEST_PG_APP_ROLE", "heatflow_app")


def _ensure_app_role():
    """Create the restricted login role once per cluster; parallel sessions may race for it."""
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(
            sa.text(
                "DO $$ BEGIN"
                f" CREATE ROLE {POSTGRES_APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;"
                " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;"
                " END $$"
            )
        )
    engine.dispose()


def grant_test_app_role(owner_url):
    """Grant the app role the data rights production gives it (`app.rls.grant_app_role`)."""
    from app.rls import grant_app_role

    engine = sa.create_engine(owner_url)
    with engine.begin() as connection:
        grant_app_role(connection, POSTGRES_APP_ROLE)
    engine.dispose()


def app_role_url(owner_url):
    """Return `owner_url` with the user replaced by the restricted app role."""
    return sa.make_url(owner_url).set(username=POSTGRES_APP_ROLE, password=None).render_as_string(hide_password=False)


def _create_postgres_database():
    name = "heatflow_test_" + uuid.uuid4().hex[:10]
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name, POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_postgres_database(name):
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def database_url_for(backend, tmp_path_factory):
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'heatflow.db'}", None
    name, url = _create_postgres_database()
    return url, name


def pytest_configure(config):
    """Compile the translation catalogs once, in the main process, so English pages use the current messages.po."""
    if not hasattr(config, "workerinput"):
        subprocess.run([str(ROOT / "bin" / "i18n"), "compile"], check=True, capture_output=True)


class UserClient(FlaskClient):
    """A test client whose every request loads its own logged-in user.

    Test requests reuse the test's app context, and flask-login caches the current user
    on `g` there, so without this a second client in the same test would act as the
    first client's user. Flask-Babel caches the language on `g` in the same way, so it is
    dropped too and each request picks its own.
    """

    def open(self, *args, **kwargs):
        g.pop("_login_user", None)
        refresh_language()
        return super().open(*args, **kwargs)


@pytest.fixture(autouse=True)
def task_joins_allowed():
    """Clear Celery's process-wide "joining a result would block" flag before each test.

    A worker pool started in this process sets it, and eager tasks sent from several threads
    at once can leave it set. A later test's `apply().get()`, or a view that waits on an
    eager result, would then raise "Never call result.get() within a task!".
    """
    _set_task_join_will_block(False)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    return request.param


def migrate_database(url):
    """Upgrade the database at `url` to the head revision, connected as the user in `url`."""
    from flask_migrate import upgrade

    owner_app = create_app({"SQLALCHEMY_DATABASE_URI": url}, config_name="testing")
    with owner_app.app_context():
        upgrade()
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def database_owner_url(backend, tmp_path_factory):
    """URL of the session database as its owner (on SQLite simply the file)."""
    url, pg_name = database_url_for(backend, tmp_path_factory)
    yield url
    if pg_name:
        _drop_postgres_database(pg_name)


@pytest.fixture(scope="session")
def app(backend, database_owner_url):
    """The app on a migrated database of `backend`, shared by the session.

    On PostgreSQL the app connects as the restricted role, not as the owner.
    """
    migrate_database(database_owner_url)
    url = database_owner_url
    if backend == "postgres":
        _ensure_app_role()
        grant_test_app_role(database_owner_url)
        url = app_role_url(database_owner_url)
    application = create_app({"SQLALCHEMY_DATABASE_URI": url}, config_name="testing")
    application.test_client_class = UserClient
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def live_server_url(app):
    """Serve the session `app` with werkzeug on a free port of 127.0.0.1 in a daemon thread; yield its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=SERVER_STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def owner_engine(database_owner_url):
    """An engine connected as the owner of the session database, for cleanup between tests."""
    engine = sa.create_engine(database_owner_url)
    yield engine
    engine.dispose()


def _empty_all_tables(owner_engine):
    tables = list(reversed(db.metadata.sorted_tables))
    if owner_engine.dialect.name == "postgresql":
        # As the owner, because RESTART IDENTITY needs the sequences' owner. The lock timeout
        # turns a connection left in a transaction by the previous test into an error, not a hang.
        names = ", ".join(f'"{t.name}"' for t in tables)
        with owner_engine.begin() as connection:
            connection.execute(sa.text("SET LOCAL lock_timeout = '60s'"))
            connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(table.delete())
        db.session.commit()


@pytest.fixture
def app_ctx(app, owner_engine):
    """An app context on an empty schema, under the system scope."""
    with app.app_context():
        set_scope(SYSTEM_SCOPE)
        _empty_all_tables(owner_engine)
        yield app
        db.session.rollback()
        set_scope(SYSTEM_SCOPE)
        db.session.remove()


@pytest.fixture
def demo(app_ctx):
    """The demo group installed; returns {code: Company}."""
    from app.demo import install_demo

    companies = install_demo()
    return {c.code: c for c in companies}


@pytest.fixture
def import_fixture(demo):
    """Import a fixture ledger into a company: import_fixture('TJ', 'TJ-shared.xlsx')."""
    from app.ledger.services import import_ledger

    def _import(code, filename):
        path = LEDGERS / filename
        return import_ledger(demo[code], path.read_bytes(), filename)

    return _import


@pytest.fixture
def client(app_ctx):
    return app_ctx.test_client()


@pytest.fixture
def login(app_ctx):
    """Return a test client logged in as `username` (demo password)."""
    from app.demo import DEMO_PASSWORD

    def _login(username):
        c = app_ctx.test_client()
        response = c.post("/login", data={"username": username, "password": DEMO_PASSWORD})
        assert response.status_code == 302, f"login of {username} failed: {response.status_code}"
        return c

    return _login
