"""The operator CLI contract: exit codes and output shapes."""

import json

from tests.conftest import LEDGERS


def test_cli_import_bill_receivables(app_ctx):
    runner = app_ctx.test_cli_runner()

    assert runner.invoke(args=["heat", "demo"]).exit_code == 0
    again = runner.invoke(args=["heat", "demo"])
    imported = runner.invoke(args=["heat", "import-ledger", "--company", "BJ", str(LEDGERS / "BJ-shared.xlsx")])
    billed = runner.invoke(args=["heat", "bill", "--company", "BJ", "--season", "2025-2026"])
    report = runner.invoke(args=["heat", "receivables", "--company", "BJ", "--season", "2025-2026", "--format", "json"])

    assert again.exit_code == 0
    assert imported.exit_code == 0, imported.output
    assert len(imported.output.strip().splitlines()) == 1
    assert billed.exit_code == 0
    data = json.loads(report.output)
    assert set(data) == {"company", "season", "accounts", "receivable_total", "by_status", "by_account"}
    assert data["receivable_total"] == "14982560.50"
    assert data["by_account"]["JX002306"] == "38970.45"


def test_cli_rejects_dirty_ledger(app_ctx):
    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "demo"])

    result = runner.invoke(args=["heat", "import-ledger", "--company", "TJ", str(LEDGERS / "TJ-dirty-shared.xlsx")])

    assert result.exit_code == 1
    rows = [int(line.split()[1].rstrip(",")) for line in result.stderr.splitlines() if line.startswith("Row ")]
    assert rows == [4, 8, 12, 15, 19, 22, 26, 29]


def test_cli_unknown_company_and_season(app_ctx):
    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "demo"])

    unknown = runner.invoke(args=["heat", "bill", "--company", "XX", "--season", "2025-2026"])
    no_season = runner.invoke(args=["heat", "bill", "--company", "TJ", "--season", "1999-2000"])

    assert unknown.exit_code == 1
    assert "XX" in unknown.stderr
    assert no_season.exit_code == 1
    assert "1999-2000" in no_season.stderr


def test_demo_twice_changes_nothing(app_ctx):
    from app.extensions import db

    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "demo"])
    counts_before = {t.name: db.session.execute(t.select()).all() for t in db.metadata.sorted_tables}
    runner.invoke(args=["heat", "demo"])
    counts_after = {t.name: db.session.execute(t.select()).all() for t in db.metadata.sorted_tables}

    assert counts_after == counts_before


def test_cli_company_commands_use_company_scope(app_ctx, monkeypatch):
    import app.cli as cli
    from app.ledger.services import find_company
    from app.tenancy import current_scope

    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "demo"])
    seen = {}

    def spy(name, function):
        def wrapper(*args, **kwargs):
            seen[name] = current_scope().visible
            return function(*args, **kwargs)

        monkeypatch.setattr(cli, name, wrapper)

    for name in ("import_ledger", "run_billing", "receivables_report"):
        spy(name, getattr(cli, name))
    runner.invoke(args=["heat", "import-ledger", "--company", "BJ", str(LEDGERS / "BJ-shared.xlsx")])
    runner.invoke(args=["heat", "bill", "--company", "BJ", "--season", "2025-2026"])
    runner.invoke(args=["heat", "receivables", "--company", "BJ", "--season", "2025-2026"])

    bj = frozenset([find_company("BJ").id])
    assert seen["import_ledger"] == bj
    assert seen["run_billing"] == bj
    assert seen["receivables_report"] == bj


# Every `heat` command with a --company option, with the other arguments it needs to parse.
COMPANY_COMMANDS = [
    ["import-ledger", "--company", "{code}", str(LEDGERS / "BJ-shared.xlsx")],
    ["bill", "--company", "{code}", "--season", "2025-2026"],
    ["valve-history-rebuild", "--company", "{code}"],
    ["receivables", "--company", "{code}", "--season", "2025-2026"],
    ["calendar-import", "--company", "{code}", str(LEDGERS / "BJ-shared.xlsx")],
    ["audit", "verify", "--company", "{code}"],
    ["notifications", "failed", "--company", "{code}"],
    ["outbox", "replay", "--since", "2026-01-01", "--company", "{code}"],
    ["vouchers", "--date", "2026-01-05", "--company", "{code}"],
    ["reconcile", "--date", "2026-01-05", "--company", "{code}"],
]


def test_company_option_rejects_empty_and_unknown(app_ctx):
    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "demo"])

    for command in COMPANY_COMMANDS:
        for code, problem in (("", "Company code '' is empty"), ("  ", "Company code '  ' is empty"), ("XX", "Company XX not found")):
            args = ["heat"] + [part.format(code=code) for part in command]
            result = runner.invoke(args=args)
            assert result.exit_code == 1, (args, result.output)
            assert problem in result.stderr, (args, result.stderr)
            assert "give one of the valid codes: BJ, " in result.stderr, (args, result.stderr)
            assert "TJ" in result.stderr, (args, result.stderr)
            assert result.stdout == "", (args, result.stdout)


def test_notifications_failed_empty_company_lists_nothing(app_ctx):
    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "demo"])

    every = runner.invoke(args=["heat", "notifications", "failed"])
    empty = runner.invoke(args=["heat", "notifications", "failed", "--company", ""])

    assert every.exit_code == 0
    assert every.stdout.strip().endswith("failed notifications")
    assert empty.exit_code == 1
    assert "failed notifications" not in empty.stdout


def test_repeated_company_checks_each(app_ctx):
    runner = app_ctx.test_cli_runner()
    runner.invoke(args=["heat", "demo"])

    result = runner.invoke(args=["heat", "valve-history-rebuild", "--company", "TJ", "--company", ""])

    assert result.exit_code == 1
    assert "Company code '' is empty" in result.stderr
    assert result.stdout == ""


def test_input_file_unreadable_or_directory_named(app_ctx, demo, tmp_path):
    runner = app_ctx.test_cli_runner()
    commands = (
        ["import-ledger", "--company", "TJ"],
        ["bpmn-check"],
        ["calendar-import", "--company", "TJ", "--year", "2027"],
    )
    for command in commands:
        # /proc/self/mem exists but fails to read at offset 0 (EIO), even for root.
        for path, problem in (("/proc/self/mem", "File /proc/self/mem cannot be read: Input/output error"), (str(tmp_path), "is a directory")):
            result = runner.invoke(args=["heat", *command, path])
            assert result.exit_code in (1, 2), (command, path, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), (command, path, result.exception)
            assert problem in result.output, (command, path, result.output)
