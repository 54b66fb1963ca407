"""Run a spreadsheet importer on files and print, per file, its outcome and the process's peak memory as JSON.

Usage: python -m tests.fuzz.measure_upload ledger|meter MAX_ROWS PATH...

The test runs this in a fresh process. ru_maxrss only grows, so "peak_mb" after a file is
the peak of the interpreter, the app modules and every import so far ("baseline_mb" is
the peak before the first file is read).
"""

import json
import resource
import sys
import time
from pathlib import Path


def _peak_mb():
    """Return this process's peak resident set size in MB.

    Linux keeps ru_maxrss across exec, so a child of a large pytest worker starts with the
    worker's peak. VmHWM in /proc/self/status belongs to the new program's memory alone.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(importer, max_rows, paths):
    from app.billing.meter_import import MeterImportError, read_rows
    from app.ledger.parser import LedgerFileError, parse_ledger

    baseline = _peak_mb()
    for path in paths:
        content = Path(path).read_bytes()
        started = time.monotonic()
        outcome = {"path": path, "error": None, "rows": None, "row_errors": None}
        try:
            if importer == "ledger":
                parsed = parse_ledger(content, max_rows=max_rows)
                outcome.update(rows=len(parsed.rows), row_errors=[error.message() for error in parsed.errors[:5]])
            else:
                outcome["rows"] = len(read_rows(content, max_rows=max_rows))
        except (LedgerFileError, MeterImportError) as error:
            outcome["error"] = str(error)
        del content
        outcome.update(seconds=time.monotonic() - started, baseline_mb=baseline, peak_mb=_peak_mb())
        print(json.dumps(outcome, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
