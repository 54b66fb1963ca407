"""Run every benchmark one after another and print the ratios each one measured.

Each script runs as its own process with the sizes recorded in docs/benchmarks.md, or
with small sizes under --quick (a check that the scripts still work, not a measurement).
Their output is shown as it comes; the lines with a ratio are repeated at the end.

    .venv/bin/python benchmarks/run_all.py
    .venv/bin/python benchmarks/run_all.py --quick
    .venv/bin/python benchmarks/run_all.py --only billing_run --only ledger_import
"""

import subprocess
import sys
import threading
import time

from common import ROOT, argument_parser, parse_local

# name -> (arguments at full size, arguments under --quick, takes --admin-url)
BENCHMARKS = {
    "billing_run": (["--accounts", "1000000"], ["--accounts", "20000"], True),
    "ledger_import": (["--rows", "100000"], ["--rows", "2000"], True),
    "process_runtime": (["--instances", "200", "--tasks", "100000"], ["--instances", "3", "--tasks", "1000"], True),
    "wechatpay_notifications": (["--notifications", "5000", "--clients", "8"], ["--notifications", "20"], True),
    "outbox_relay": (["--events", "20000"], ["--events", "500"], True),
    "onboarding_walkthrough": (["--rows", "10000"], ["--rows", "300"], False),
    "hq_dashboard": (["--accounts", "1000000"], ["--accounts", "4000", "--repeat", "2"], True),
    # Five rounds, because the HQ collection page takes about 25 s a request at this size.
    "rls_cost": (["--accounts", "1000000", "--repeat", "5"], ["--accounts", "4000", "--repeat", "3"], True),
}
# A script still running after this long is stopped and counted as failed.
SCRIPT_LIMIT_SECONDS = 3600


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: check that every script runs")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark (repeatable)")
    return parse_local(parser)


def run(name, arguments, admin_url):
    """Run one script, echoing its output; return (exit code, seconds, lines that carry a ratio)."""
    full, quick, takes_admin_url = BENCHMARKS[name]
    command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *(quick if arguments.quick else full)]
    if takes_admin_url:
        command += ["--admin-url", admin_url]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    ratios = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        # Killing the script ends its output, so the loop below stops too.
        watchdog = threading.Timer(SCRIPT_LIMIT_SECONDS, process.kill)
        watchdog.start()
        try:
            for line in process.stdout:
                print(line, end="", flush=True)
                if "ratio" in line.lower() or line.startswith("relay published"):
                    ratios.append(line.rstrip())
            code = process.wait()
        finally:
            watchdog.cancel()
    return code, time.perf_counter() - started, ratios


def main():
    arguments = parse_arguments()
    results = {name: run(name, arguments, arguments.admin_url) for name in arguments.only or BENCHMARKS}
    print("\n=== ratios")
    for name, (code, seconds, ratios) in results.items():
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"{name} ({seconds:.0f} s, {status})")
        for line in ratios:
            print(f"    {line.strip()}")
    if any(code != 0 for code, _, _ in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
