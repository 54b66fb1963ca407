"""The fault fixtures leave no process behind: `celery worker --beat` forks its beat, and
killing the worker alone would orphan that child, which then keeps running after the test."""

from pathlib import Path

import pytest

from tests.faults.conftest import wait_until

pytestmark = pytest.mark.faults


def session_members(session_id):
    """Return the ids of live processes whose session is `session_id`, read from /proc (Linux)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # Fields after the command name are state, ppid, pgrp and session. A zombie (Z) has ended.
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def forked_children(worker):
    """Return the ids of the worker's session members other than the worker itself."""
    return [pid for pid in session_members(worker.pid) if pid != worker.pid]


def beat_started(worker):
    """True once the beat child has logged its start and is still a member of the worker's session.

    While starting, the worker also forks short commands such as `uname`, which join its
    session for a moment, so a count of members alone can be met before the beat runs.
    """
    return "beat: Starting" in worker.log_path.read_text() and bool(forked_children(worker))


def start_worker_with_beat(processes, rabbit_vhost, name):
    worker = processes.start(
        name,
        ["celery", "-A", "app.celery_worker", "worker", "--beat", "--schedule", str(processes.tmp_path / f"{name}-schedule"),
         "--pool", "solo", "--loglevel", "INFO"],
        CELERY_BROKER_URL=rabbit_vhost,
    )
    # The worker leads its own session, and the beat child joins it once forked.
    wait_until(lambda: beat_started(worker) or worker.poll() is not None)
    assert worker.poll() is None, worker.log_path.read_text()[-3000:]
    return worker


def test_kill_ends_forked_beat(processes, rabbit_vhost):
    worker = start_worker_with_beat(processes, rabbit_vhost, "cleanup_kill")
    assert forked_children(worker)

    processes.kill(worker)

    wait_until(lambda: not session_members(worker.pid), timeout_s=10)
    assert session_members(worker.pid) == []


def test_close_ends_worker_and_beat(processes, rabbit_vhost):
    worker = start_worker_with_beat(processes, rabbit_vhost, "cleanup_close")

    processes.close()

    wait_until(lambda: not session_members(worker.pid), timeout_s=10)
    assert worker.returncode is not None
    assert session_members(worker.pid) == []
