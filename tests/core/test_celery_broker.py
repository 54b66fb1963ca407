"""Background tasks through real brokers: RabbitMQ on 127.0.0.1 and the embedded SQLite transport."""

import contextlib
import logging
import subprocess
import time
import uuid

import pytest
import sqlalchemy as sa
from celery.contrib.testing.worker import start_worker
from kombu.asynchronous import set_event_loop

from app.extensions import celery, db
from app.ledger.models import LedgerImport
from app.ledger.services import sha256_of
from app.network.models import Account
from tests.conftest import LEDGERS


def _rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _switch_broker(**settings):
    """Point Celery at another broker, dropping pooled connections to the previous one."""
    celery.close()
    celery.amqp._producer_pool = None
    celery.conf.update(**settings)


@contextlib.contextmanager
def embedded_worker(broker_url):
    """Run a solo Celery worker thread on `broker_url`, then restore the previous broker.

    A worker on an asynchronous transport (py-amqp) takes kombu's process-wide event loop,
    creating it with its own timer only when none is set, and leaves it set when it stops.
    A second worker in the same process would then reuse the first one's loop, which fires
    the old timer, and so never run a task with an ETA or countdown, such as a retry. The
    loop is cleared before and after each worker.

    The worker also sets up logging for the whole process: it raises the root logger to its
    own level and replaces the root handlers. Both are put back, so that later tests in this
    process still see the warnings the app logs.
    """
    previous = dict(celery.conf)
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    _switch_broker(broker_url=broker_url, task_always_eager=False)
    set_event_loop(None)
    try:
        with start_worker(celery, pool="solo", perform_ping_check=False, shutdown_timeout=30) as worker:
            yield worker
    finally:
        set_event_loop(None)
        root.setLevel(root_level)
        root.handlers[:] = root_handlers
        _switch_broker(broker_url=previous["broker_url"], task_always_eager=previous["task_always_eager"])


@pytest.fixture
def broker_url(request, tmp_path):
    if request.param == "sqla":
        yield f"sqla+sqlite:///{tmp_path / 'broker.db'}"
        return
    vhost = "heatflow_test_" + uuid.uuid4().hex[:8]
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.mark.parametrize("broker_url", ["amqp", "sqla"], indirect=True)
def test_ledger_import_runs_on_worker(demo, broker_url):
    from app.tasks.ledger import import_ledger_task

    content = (LEDGERS / "SJZ-shared.xlsx").read_bytes()
    job = LedgerImport(company_id=demo["SJZ"].id, filename="SJZ-shared.xlsx", sha256=sha256_of(content), content=content)
    db.session.add(job)
    db.session.commit()
    job_id = job.id
    with embedded_worker(broker_url):
        import_ledger_task.delay(job_id, demo["SJZ"].id)
        deadline = time.monotonic() + 120
        status = "queued"
        while time.monotonic() < deadline and status in ("queued", "running"):
            time.sleep(0.5)
            db.session.expire_all()
            status = db.session.scalar(sa.select(LedgerImport.status).filter_by(id=job_id))

    assert status == "succeeded"
    assert db.session.scalar(sa.select(sa.func.count(Account.id)).filter_by(company_id=demo["SJZ"].id)) == 1460
