"""PostgreSQL restarted under load: a private cluster, owned by the test, is restarted while a
Celery worker imports a ledger and the web process posts a counter payment. Both were stopped
inside their transactions by a lock, so the restart cuts them off in flight. The import is
retried and stored once. The payment gets 503, and sent again it is posted once.

The cluster is made with `initdb` under /usr/lib/postgresql/*/bin in a temporary directory
and listens on a free port of 127.0.0.1, so the shared server on port 5432 is never touched.
"""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import create_app
from app.billing.services import run_billing
from app.demo import install_demo
from app.extensions import celery as celery_app
from app.extensions import db
from app.ledger.services import import_ledger
from app.network.models import Account
from app.org.models import Company
from app.payments.models import Payment
from app.tenancy import SYSTEM_SCOPE, set_scope
from tests.conftest import LEDGERS, POSTGRES_APP_ROLE, app_role_url, grant_test_app_role, migrate_database
from tests.faults.conftest import (
    WAIT_S, Browser, assert_retried_import_stored_once, free_port, queue_ledger_import, wait_for_import, wait_until,
    with_application_name,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]
QD = next(e for e in json.loads((LEDGERS / "expected.json").read_text()) if e["file"] == "QD-shared.xlsx")
PG_CTL_TIMEOUT_S = 60


def _postgres_bin_dir():
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql that has initdb, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda path: int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0)
    return Path(newest).parent


class PrivateCluster:
    """A PostgreSQL cluster in a temporary directory on 127.0.0.1:`port`, trust authentication.

    initdb and postgres refuse to run as root, so under root they run as the system user
    `postgres`, which then owns the directory.
    """

    def __init__(self, bin_dir):
        self.bin_dir = bin_dir
        self.directory = Path(tempfile.mkdtemp(prefix="heatflow_pg_restart_"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.port = free_port()
        self.run_as = "postgres" if os.geteuid() == 0 else None
        if self.run_as:
            shutil.chown(self.directory, user=self.run_as)

    def _run(self, program, *args):
        command = [str(self.bin_dir / program), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=PG_CTL_TIMEOUT_S)

    def init(self):
        result = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        assert result.returncode == 0, result.stdout + result.stderr

    def _pg_ctl(self, action, *args):
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                           "-t", str(PG_CTL_TIMEOUT_S), *args)
        assert result.returncode == 0, result.stdout + result.stderr + self.server_log()

    def start(self):
        self._pg_ctl("start")

    def restart(self):
        """Stop in fast mode (every session is terminated, open transactions roll back), then start again."""
        self._pg_ctl("restart", "-m", "fast")

    def server_log(self):
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def url(self, database, user="postgres"):
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def close(self):
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_cluster():
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no initdb under /usr/lib/postgresql/*/bin: install the PostgreSQL server package to run this test")
    cluster = PrivateCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def restart_app(private_cluster):
    """The app on a migrated database of the private cluster, connected as the restricted role, with TJ billed."""
    admin = sa.create_engine(private_cluster.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text('CREATE DATABASE "heatflow"'))
        connection.execute(sa.text(f"CREATE ROLE {POSTGRES_APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
    admin.dispose()
    owner_url = private_cluster.url("heatflow")
    # create_app binds the shared Celery object to the new app; the session app gets it back.
    bound_before = getattr(celery_app, "flask_app", None)
    try:
        migrate_database(owner_url)
        grant_test_app_role(owner_url)
        application = create_app({"SQLALCHEMY_DATABASE_URI": app_role_url(owner_url)}, config_name="testing")
        with application.app_context():
            set_scope(SYSTEM_SCOPE)
            companies = {c.code: c for c in install_demo()}
            import_ledger(companies["TJ"], (LEDGERS / "TJ-shared.xlsx").read_bytes(), "TJ-shared.xlsx")
            run_billing("TJ", "2025-2026")
            db.session.commit()
            yield application
            db.session.rollback()
            db.session.remove()
            db.engine.dispose()
    finally:
        if bound_before is not None:
            celery_app.flask_app = bound_before


def test_restart_mid_import_and_payment(private_cluster, restart_app, processes, rabbit_vhost):
    app_url = restart_app.config["SQLALCHEMY_DATABASE_URI"]
    qd = db.session.scalar(sa.select(Company.id).filter_by(code="QD"))
    tj_accounts = db.session.scalars(
        sa.select(Account.id).join(Company).where(Company.code == "TJ", Account.billing_status == "normal").order_by(Account.id).limit(3)
    ).all()
    db.session.close()

    worker = processes.celery_worker("restart_worker", rabbit_vhost, DATABASE_URL=with_application_name(app_url, "restart_worker"))
    port = free_port()
    web = processes.web("restart_web", port, DATABASE_URL=with_application_name(app_url, "restart_web"))
    cashier = Browser(f"http://127.0.0.1:{port}").login("tj_cashier")

    def pay(account_id, request_token):
        path = f"/payments/accounts/{account_id}"
        form = {"amount": "10.00", "method": "cash", "csrf_token": cashier.token(path), "request_token": request_token}
        return cashier.request(path, form)[0]

    # One payment before the restart creates the receipt counter that the blocker locks.
    assert pay(tj_accounts[0], "before") == 302

    blocker_engine = sa.create_engine(private_cluster.url("heatflow"))
    blocker = blocker_engine.connect()
    try:
        # The import waits for this lock after inserting its accounts and before its arrears
        # lines; the payment waits for the receipt counter.
        blocker.begin()
        blocker.execute(sa.text("LOCK TABLE ledger_entry IN SHARE MODE"))
        blocker.execute(sa.text("SELECT * FROM receipt_counter FOR UPDATE"))
        job_id = queue_ledger_import(rabbit_vhost, qd, "QD-shared.xlsx")
        answers = []
        token = cashier.token(f"/payments/accounts/{tj_accounts[1]}")
        form = {"amount": "10.00", "method": "cash", "csrf_token": token, "request_token": "cut-off"}
        thread = threading.Thread(target=lambda: answers.append(cashier.request(f"/payments/accounts/{tj_accounts[1]}", form)[0]))
        thread.start()

        def both_waiting():
            with blocker_engine.connect() as probe:
                names = probe.scalars(sa.text(
                    "SELECT DISTINCT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )).all()
            return {"restart_worker", "restart_web"} <= set(names)

        wait_until(lambda: both_waiting() or worker.poll() is not None or web.poll() is not None)
        assert worker.poll() is None, processes.logs()
        assert web.poll() is None, processes.logs()
        private_cluster.restart()
        thread.join(timeout=WAIT_S)
    finally:
        blocker.invalidate()
        blocker.close()
        blocker_engine.dispose()

    # The cut-off payment stored nothing and said so; sent again it is posted once.
    assert answers == [503], processes.logs()
    assert cashier.request(f"/payments/accounts/{tj_accounts[1]}", form)[0] == 302
    assert pay(tj_accounts[2], "after") == 302

    job = wait_for_import(job_id, timeout_s=2 * WAIT_S)
    assert worker.poll() is None
    assert web.poll() is None
    assert_retried_import_stored_once(processes, job, QD)
    payments = db.session.scalars(sa.select(Payment).order_by(Payment.receipt_no)).all()
    assert [p.request_token for p in payments] == ["before", "cut-off", "after"]
    assert [p.receipt_no[-6:] for p in payments] == ["000001", "000002", "000003"]
