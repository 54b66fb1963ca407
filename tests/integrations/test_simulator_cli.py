"""The channel simulators started from the command line, as the README shows: they write
their keys, answer on 127.0.0.1 and stop cleanly on Ctrl-C."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for(url, process):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            return _get_json(url)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {START_TIMEOUT_S} s")


@pytest.mark.parametrize("script, key_files, probe, expected", [
    ("wechatpay_simulator.py", ["merchant_private.pem", "merchant_public.pem", "platform_private.pem",
                                "platform_public.pem", "apiv3.key"], "/simulator/deliveries", {"deliveries": []}),
    ("alipay_simulator.py", ["app_private.pem", "app_public.pem", "alipay_private.pem", "alipay_public.pem"],
     "/simulator/deliveries", {"deliveries": []}),
    ("einvoice_simulator.py", [], "/simulator/orders", {}),
])
def test_simulator_starts_and_stops(tmp_path, script, key_files, probe, expected):
    port = _free_port()
    key_dir = tmp_path / "keys"
    process = subprocess.Popen(
        [sys.executable, f"tools/{script}", "--port", str(port), *(["--key-dir", str(key_dir)] if key_files else [])],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{port}{probe}", process) == expected
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, output
    assert "Stopping" in output
    assert sorted(path.name for path in key_dir.glob("*")) == sorted(key_files)
    for name in key_files:
        if name.endswith("_private.pem"):
            assert (key_dir / name).read_text().startswith("-----BEGIN PRIVATE KEY-----")
        elif name.endswith("_public.pem"):
            assert (key_dir / name).read_text().startswith("-----BEGIN PUBLIC KEY-----")
        else:
            assert len((key_dir / name).read_text()) == 32
