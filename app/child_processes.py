"""Stopping the child processes that the demo command, tests and benchmarks start."""

import subprocess


def stop_child(process, grace_s=30):
    """Ask a child to stop with SIGTERM, wait `grace_s` seconds, then SIGKILL it.

    Returns the exit code. A child that has already exited is only reaped.
    """
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=10)
