"""`flask heat run` stops its Celery worker when it is stopped with SIGTERM, as with Ctrl+C."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _worker_pid(process):
    """Read the server's output until it names its worker; return that pid."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"with a Celery worker \(pid (\d+)\)", line)
        if match:
            return int(match.group(1))
        assert line or process.poll() is None, "heat run exited before it started its worker"
    raise AssertionError(f"heat run did not report its worker within {START_TIMEOUT_S} s")


def _wait_listening(port):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {START_TIMEOUT_S} s")


def test_sigterm_stops_worker(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/heatflow.db",
        "CELERY_BROKER_URL": f"sqla+sqlite:///{tmp_path}/celery-broker.db",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "heat", "run", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    worker_pid = None
    try:
        worker_pid = _worker_pid(process)
        _wait_listening(port)
        assert _alive(worker_pid)

        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker_pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if worker_pid is not None and _alive(worker_pid):
            # SIGTERM lets the worker stop its embedded beat process too.
            os.kill(worker_pid, signal.SIGTERM)
            time.sleep(5)
            if _alive(worker_pid):
                os.kill(worker_pid, signal.SIGKILL)
