"""Operator commands: `flask --app wsgi heat ...`. Their output format is a stable contract."""

import json
import sys
from pathlib import Path

import click
from flask.cli import AppGroup

from app.billing.services import BillingError, receivables_report, run_billing
from app.demo import install_demo
from app.ledger.services import find_company, import_ledger, record_import
from app.tariffs.services import TariffError

heat = AppGroup("heat", help="Heatflow operator commands.")


@heat.command("demo")
def demo_command():
    """Create the demo group NHG, its companies, tariffs, roles and users (idempotent)."""
    companies = install_demo()
    click.echo(f"Demo group NHG ready: {', '.join(c.code for c in companies)}.")


@heat.command("import-ledger")
@click.option("--company", "company_code", required=True, help="Company code, e.g. TJ.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def import_ledger_command(company_code, path):
    """Import an .xlsx ledger; exit 1 with the row report on stderr if any row is invalid."""
    try:
        company = find_company(company_code)
    except LookupError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    if not path.exists():
        click.echo(f"File {path} not found.", err=True)
        sys.exit(1)
    content = path.read_bytes()
    result = import_ledger(company, content, path.name)
    record_import(company, path.name, content, result)
    if result.ok:
        click.echo(result.summary())
        return
    click.echo(result.summary(), err=True)
    for error in result.errors:
        click.echo(error.message(), err=True)
    sys.exit(1)


@heat.command("bill")
@click.option("--company", "company_code", required=True, help="Company code, e.g. TJ.")
@click.option("--season", required=True, help="Season name, e.g. 2025-2026.")
def bill_command(company_code, season):
    """Post the season charge of every account that has none yet (safe to re-run)."""
    try:
        run = run_billing(company_code, season)
    except (BillingError, TariffError) as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(f"{company_code} {season}: {run.accounts_billed} accounts billed, {run.amount_posted:.2f} yuan posted.")


@heat.command("receivables")
@click.option("--company", "company_code", required=True, help="Company code, e.g. TJ.")
@click.option("--season", required=True, help="Season name, e.g. 2025-2026.")
@click.option("--format", "output_format", type=click.Choice(["json", "text"]), default="text", help="Output format.")
def receivables_command(company_code, season, output_format):
    """Print receivables per status and per account for a company and season."""
    try:
        report = receivables_report(company_code, season)
    except (BillingError, TariffError) as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    if output_format == "json":
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(f"{report['company']} {report['season']}: {report['accounts']} accounts, receivable {report['receivable_total']}")
    for status, figures in report["by_status"].items():
        click.echo(f"  {status}: {figures['accounts']} accounts, {figures['receivable']}")


@heat.command("bpmn-check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def bpmn_check_command(path):
    """Accept a BPMN file, or list each element Heatflow cannot run (exit 1)."""
    from app.processes.bpmn_check import check_bpmn

    if not path.exists():
        click.echo(f"File {path} not found.", err=True)
        sys.exit(1)
    report = check_bpmn(path.read_bytes())
    if report.file_error:
        click.echo(f"{path.name}: rejected: {report.file_error}", err=True)
        sys.exit(1)
    if report.findings:
        click.echo(f"{path.name}: rejected, {len(report.findings)} unsupported elements:", err=True)
        for finding in report.findings:
            click.echo(f"  {finding.line()}", err=True)
        sys.exit(1)
    if report.executable_processes:
        click.echo(f"{path.name}: accepted; executable processes: {', '.join(report.executable_processes)}.")
    else:
        click.echo(f"{path.name}: accepted as documentation only; it has no executable process.")


audit = AppGroup("audit", help="Audit trail checks of process instances.")
heat.add_command(audit)


@audit.command("verify")
@click.option("--company", "company_code", help="Company code, e.g. TJ; all companies when omitted.")
def audit_verify_command(company_code):
    """Verify every instance's event hash chain; exit 1 listing each broken chain."""
    from app.processes.audit import verify_all_chains

    company_id = None
    if company_code:
        try:
            company_id = find_company(company_code).id
        except LookupError as error:
            click.echo(str(error), err=True)
            sys.exit(1)
    result = verify_all_chains(company_id)
    if not result.broken:
        click.echo(f"ok: {result.instances} instances, {result.events} events")
        return
    for instance_id, report in result.broken:
        click.echo(f"instance {instance_id}: broken at event {report.bad_seq}: {report.reason}", err=True)
    click.echo(f"failed: {len(result.broken)} of {result.instances} instances have a broken audit chain", err=True)
    sys.exit(1)


@heat.command("run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the web server listens on.")
@click.option("--port", default=5000, show_default=True, help="Port of the web server.")
def run_command(host, port):
    """Serve the web app and run a Celery worker with the beat scheduler (process timers) beside it until interrupted."""
    import subprocess

    from werkzeug.serving import run_simple

    from app.celery_worker import flask_app

    # The worker embeds the beat scheduler, which queues the process-timer scan; run exactly one such worker.
    Path(flask_app.instance_path).mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "app.celery_worker", "worker", "--pool", "solo", "--beat",
         "--schedule", str(Path(flask_app.instance_path) / "celerybeat-schedule"), "--loglevel", "INFO"],
    )
    try:
        click.echo(f"Heatflow on http://{host}:{port} with a Celery worker (pid {worker.pid}); Ctrl+C stops both.")
        run_simple(host, port, flask_app, threaded=True, use_reloader=False)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()


def register_cli(app):
    app.cli.add_command(heat)
