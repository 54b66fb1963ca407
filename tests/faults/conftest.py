"""Fixtures of the fault-injection tests: app processes started as subprocesses, killed with
SIGKILL at a known point, and a PostgreSQL session that holds a lock to stop them there.

A process is stopped "in the middle" deterministically: the test holds a lock that the
process needs at the chosen step, waits until PostgreSQL shows the process's connection
waiting for that lock (its `application_name` names it), then sends SIGKILL. Every wait is
bounded by WAIT_S.
"""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.child_processes import stop_child
from tests.processes.test_timer_worker import rabbit_vhost  # noqa: F401  rabbit_vhost: an AMQP URL on a fresh vhost

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60
HIDDEN = 'name="{}"[^>]*value="([^"]*)"'


@pytest.fixture(autouse=True)
def postgres_only(backend):
    """Skip on SQLite before any other fixture builds data: these tests are about the server's recovery."""
    if backend != "postgres":
        pytest.skip("fault injection runs against PostgreSQL")


@pytest.fixture
def pg_app(app):
    """The session app, on PostgreSQL."""
    return app


def with_application_name(url, name):
    """The database URL with `application_name` set, so pg_stat_activity shows which process a backend serves."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


class Processes:
    """Subprocesses of one test; anything still running at the end is killed."""

    def __init__(self, app, tmp_path):
        self.app = app
        self.tmp_path = tmp_path
        self.started = []

    def env(self, name, **extra):
        env = {
            **os.environ,
            "DATABASE_URL": with_application_name(self.app.config["SQLALCHEMY_DATABASE_URI"], name),
            "CELERY_BROKER_URL": f"sqla+sqlite:///{self.tmp_path / 'celery-broker.db'}",
            "HEATFLOW_OUTBOX_BROKER_URL": "",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("HEATFLOW_CONFIG", None)
        env.update(extra)
        return env

    def start(self, name, args, **extra_env):
        """Start `python -m ARGS…` in the project directory with its own application name; output goes to NAME.log.

        The process leads a new session and process group, so the children it forks (the
        beat of `celery worker --beat`) can be killed with it.
        """
        log = open(self.tmp_path / f"{name}.log", "a")
        process = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, env=self.env(name, **extra_env), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = self.tmp_path / f"{name}.log"
        self.started.append(process)
        return process

    def flask(self, name, *args, **extra_env):
        return self.start(name, ["flask", "--app", "wsgi", *args], **extra_env)

    def celery_worker(self, name, broker_url, **extra_env):
        return self.start(
            name, ["celery", "-A", "app.celery_worker", "worker", "--pool", "solo", "--hostname", f"{name}@%h", "--loglevel", "INFO"],
            CELERY_BROKER_URL=broker_url, **extra_env,
        )

    def web(self, name, port, **extra_env):
        """`flask run` (werkzeug, threaded) on 127.0.0.1:`port`; returns once it serves the login page."""
        process = self.flask(name, "run", "--host", "127.0.0.1", "--port", str(port), "--no-reload", "--no-debugger", **extra_env)
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/login") == 200 or process.poll() is not None)
        assert process.poll() is None, process.log_path.read_text()[-3000:]
        return process

    def kill(self, process):
        """SIGKILL the process and its children, as a power cut would, so no cleanup runs in them."""
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout=WAIT_S)
        assert process.returncode == -signal.SIGKILL

    def stop(self, process):
        """SIGTERM and wait up to 30 s, then SIGKILL whatever is left of the process group."""
        if process.poll() is None:
            stop_child(process)
        _signal_group(process, signal.SIGKILL)

    def logs(self):
        return "\n".join(p.read_text() for p in self.tmp_path.glob("*.log"))[-6000:]

    def close(self):
        """SIGKILL every process group this test started, including children left by a parent that has exited."""
        for process in self.started:
            _signal_group(process, signal.SIGKILL)
            if process.poll() is None:
                process.wait(timeout=10)


def _signal_group(process, signum):
    """Send `signum` to the process group that `process` leads, unless no process of it is left."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


@pytest.fixture
def processes(pg_app, tmp_path):
    started = Processes(pg_app, tmp_path)
    yield started
    started.close()


@pytest.fixture
def blocker(pg_app, database_owner_url):
    """A PostgreSQL connection outside the app's pool, for the test to hold locks with.

    It connects as the database owner, a superuser that row-level security does not filter,
    because it locks and inserts rows of a company without setting the app's tenant scope.
    """
    engine = sa.create_engine(database_owner_url)
    connection = engine.connect()
    yield connection
    if connection.in_transaction():
        connection.rollback()
    connection.close()
    engine.dispose()


class Browser:
    """Cookies and CSRF tokens against a live server, as a user's browser sends them."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect)

    def request(self, path, data=None, timeout=30, files=None):
        """GET, or POST `data` form-encoded (multipart with `files` {field: (filename, bytes)}); returns (status, text)."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        headers = {}
        if files:
            boundary = uuid.uuid4().hex
            parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in data.items()]
            for field, (filename, content) in files.items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
                )
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def hidden(self, path, name="csrf_token"):
        """The value of a hidden form field on a page, such as the CSRF token."""
        status, page = self.request(path)
        assert status == 200, (path, status)
        return re.search(HIDDEN.format(name), page).group(1)

    def token(self, path):
        return self.hidden(path)

    def login(self, username):
        from app.demo import DEMO_PASSWORD

        token = self.token("/login")
        status, _ = self.request("/login", {"username": username, "password": DEMO_PASSWORD, "csrf_token": token})
        assert status == 302
        return self

    def submit(self, task_id, data, timeout=30):
        token = self.token(f"/processes/tasks/{task_id}")
        return self.request(f"/processes/tasks/{task_id}", {**data, "csrf_token": token}, timeout=timeout)[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wait_until(condition, timeout_s=WAIT_S, step_s=0.1):
    """Poll until `condition()` is true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"condition not met within {timeout_s} s: {getattr(condition, '__name__', condition)}")


def waiting_on_lock(connection, application_name):
    """True while a backend of `application_name` waits for a lock (seen from `connection`, outside its transaction)."""
    with connection.engine.connect() as probe:
        return probe.scalar(
            sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND wait_event_type = 'Lock'"),
            {"name": application_name},
        ) > 0


def backends_of(connection, application_name):
    with connection.engine.connect() as probe:
        return probe.scalar(
            sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"), {"name": application_name},
        )


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def queue_ledger_import(broker_url, company_id, filename):
    """Store a queued LedgerImport of a fixture ledger and send its task to `broker_url`; return the job id."""
    from celery import Celery

    from app.extensions import db
    from app.ledger.models import LedgerImport
    from app.ledger.services import sha256_of
    from tests.conftest import LEDGERS

    content = (LEDGERS / filename).read_bytes()
    job = LedgerImport(company_id=company_id, filename=filename, sha256=sha256_of(content), content=content)
    db.session.add(job)
    db.session.commit()
    job_id = job.id
    # The test's own session must not keep a connection that a fault would end.
    db.session.close()
    sender = Celery(broker=broker_url)
    try:
        sender.send_task("ledger.import_ledger", args=[job_id, company_id])
    finally:
        sender.close()
    return job_id


def wait_for_import(job_id, timeout_s=WAIT_S):
    """Wait until the import job ends (succeeded, rejected or failed) and return it."""
    from app.extensions import db
    from app.ledger.models import LedgerImport

    def finished():
        db.session.rollback()
        return db.session.scalar(sa.select(LedgerImport.status).filter_by(id=job_id)) in ("succeeded", "rejected", "failed")

    wait_until(finished, timeout_s=timeout_s)
    return db.session.get(LedgerImport, job_id)


def assert_retried_import_stored_once(processes, job, expected):
    """Check that a job retried after a lost connection stored its ledger once; `expected` is its entry of expected.json."""
    from app.billing.models import LedgerEntry
    from app.extensions import db
    from app.network.models import Account

    assert (job.status, job.created_count, job.unchanged_count) == ("succeeded", expected["accounts"], 0), processes.logs()
    assert "lost its database connection" in processes.logs()
    company_id = job.company_id
    accounts = db.session.scalar(sa.select(sa.func.count(Account.id)).filter_by(company_id=company_id))
    numbers = db.session.scalar(sa.select(sa.func.count(sa.distinct(Account.account_no))).filter_by(company_id=company_id))
    assert accounts == expected["accounts"]
    assert numbers == expected["accounts"]
    arrears = db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).filter_by(company_id=company_id, kind="prior_arrears"))
    assert arrears == expected["prior_arrears"]["accounts"]
