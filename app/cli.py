"""Operator commands: `flask --app wsgi heat ...`. Their output format is a stable contract.

Commands run under the system scope. A command given `--company` runs its work under that
company's scope, so the tenant filter and row-level security limit it to that company.

Commands print English (CLI_LOCALE), whatever the users' interface language: messages that
come from shared code, such as import errors and model-check findings, are translated to
English too, so one line never mixes two languages. Texts a command stores (the ledger
import history) stay Chinese, with the msgid where pages translate them.
"""

import json
import signal
import sys
import time
from pathlib import Path

import click
import sqlalchemy as sa
from flask.cli import AppGroup, with_appcontext
from flask_babel import force_locale

from app.billing.services import BillingError, receivables_report, run_billing
from app.demo import install_demo
from app.ledger.services import find_company, import_ledger, record_import
from app.onboarding.services import OnboardingError, check_free, onboard_company, preflight_ledger
from app.onboarding.spec import SpecError, load_spec_toml
from app.tariffs.services import TariffError
from app.tenancy import SYSTEM_SCOPE, company_scope, scoped

# Output language of every command.
CLI_LOCALE = "en"


@with_appcontext
def _use_cli_language():
    """Translate messages into CLI_LOCALE until the command ends (the group's context closes after it)."""
    click.get_current_context().with_resource(force_locale(CLI_LOCALE))


def _check_company_codes(ctx, param, value):
    """Exit 1 on an empty or unknown `--company` value, naming it and listing the valid codes.

    Runs while click parses the option, inside the app context that the `heat` group's
    callback pushed. An empty value would otherwise read as an omitted option, which several
    commands take as "every company".
    """
    from app.extensions import db
    from app.org.models import Company

    if value is None:
        return value
    codes = value if param.multiple else (value,)
    known = db.session.scalars(sa.select(Company.code).order_by(Company.code)).all()
    for code in codes:
        if code in known:
            continue
        if code.strip():
            problem = f"Company {code} not found"
        else:
            problem = f"Company code {code!r} is empty"
        click.echo(f"{problem}; give one of the valid codes: {', '.join(known) or 'none (run flask heat demo first)'}.", err=True)
        sys.exit(1)
    return value


def company_option(help_text, required=False, multiple=False):
    """Declare the `--company` option of a command, checked by _check_company_codes."""
    name = "company_codes" if multiple else "company_code"
    return click.option(
        "--company", name, required=required, multiple=multiple, callback=_check_company_codes, help=help_text,
    )


heat = AppGroup("heat", help="Heatflow operator commands. Output is in English.", callback=_use_cli_language)


@heat.command("demo")
def demo_command():
    """Create the demo group NHG, its companies, tariffs, roles and users (idempotent)."""
    companies = install_demo()
    click.echo(f"Demo group NHG ready: {', '.join(c.code for c in companies)}.")


def read_input_file(path):
    """Return the bytes of an input file, or exit 1 naming a missing, directory or unreadable path."""
    if not path.exists():
        click.echo(f"File {path} not found.", err=True)
        sys.exit(1)
    if path.is_dir():
        click.echo(f"{path} is a directory; give the path of a file.", err=True)
        sys.exit(1)
    try:
        return path.read_bytes()
    except OSError as error:
        click.echo(f"File {path} cannot be read: {error.strerror or error}; check the file and its permissions.", err=True)
        sys.exit(1)


@heat.command("import-ledger")
@company_option("Company code, e.g. TJ.", required=True)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def import_ledger_command(company_code, path):
    """Import an .xlsx ledger; exit 1 with the row report on stderr if any row is invalid."""
    try:
        company = find_company(company_code)
    except LookupError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    content = read_input_file(path)
    with scoped(company_scope(company.id, label=f"cli:import-ledger:{company.code}")):
        result = import_ledger(company, content, path.name)
        record_import(company, path.name, content, result)
    if result.ok:
        click.echo(result.summary())
        for notice in result.notices:
            click.echo(notice.message())
        return
    click.echo(result.summary(), err=True)
    for error in result.errors:
        click.echo(error.message(), err=True)
    sys.exit(1)


@heat.command("bill")
@company_option("Company code, e.g. TJ.", required=True)
@click.option("--season", required=True, help="Season name, e.g. 2025-2026.")
def bill_command(company_code, season):
    """Post the season charge of every account that has none yet (safe to re-run)."""
    company_id = _company_id_or_exit(company_code)
    try:
        with scoped(company_scope(company_id, label=f"cli:bill:{company_code}")):
            run = run_billing(company_code, season)
    except (BillingError, TariffError) as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(f"{company_code} {season}: {run.accounts_billed} accounts billed, {run.amount_posted:.2f} yuan posted.")


@heat.command("hq-rebuild-totals")
def hq_rebuild_totals_command():
    """Recompute the HQ totals from the ledger, the human tasks and the accounts (after a bulk load or a repair)."""
    from app.extensions import db
    from app.hq.totals import rebuild_account_counts, rebuild_daily_totals, rebuild_season_totals, rebuild_step_totals

    rows = rebuild_daily_totals(db.session.connection())
    steps = rebuild_step_totals(db.session.connection())
    balances = rebuild_season_totals(db.session.connection())
    companies = rebuild_account_counts(db.session.connection())
    db.session.commit()
    click.echo(
        f"HQ totals rebuilt: {rows} community-day rows, {steps} process-step-day rows, {balances} account-season rows,"
        f" account counts of {companies} companies."
    )


@heat.command("valve-history-rebuild")
@company_option("Company code such as TJ; repeat for several (default: every company).", multiple=True)
def valve_history_rebuild_command(company_codes):
    """Write the valve history of data created before it was kept, from the process history. Safe to re-run."""
    from app.network.valve_rebuild import rebuild_valve_history

    for code in company_codes:
        _company_id_or_exit(code)
    for result in rebuild_valve_history(company_codes):
        click.echo(f"{result.company_code}: {result.from_processes} valve changes from processes, {result.baseline} baseline rows added.")


@heat.command("receivables")
@company_option("Company code, e.g. TJ.", required=True)
@click.option("--season", required=True, help="Season name, e.g. 2025-2026.")
@click.option("--format", "output_format", type=click.Choice(["json", "text"]), default="text", help="Output format.")
def receivables_command(company_code, season, output_format):
    """Print receivables per status and per account for a company and season."""
    company_id = _company_id_or_exit(company_code)
    try:
        with scoped(company_scope(company_id, label=f"cli:receivables:{company_code}")):
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


@heat.command("onboard")
@click.argument("spec_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ledger", "ledger_paths", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="An .xlsx ledger of the company; repeat for several files.")
@click.option("--check", is_flag=True, help="Validate the specification and ledgers only; write nothing.")
@click.option("--no-bill", is_flag=True, help="Import the ledgers but do not bill the season.")
def onboard_command(spec_path, ledger_paths, check, no_bill):
    """Create a company from the group template and a TOML specification, import its ledgers and bill.

    Every ledger is checked before the company is created; exit 1 lists each problem
    with its fix, and nothing is stored.
    """
    started = time.monotonic()
    problems, spec, ledgers = _onboarding_inputs(spec_path, ledger_paths)
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        sys.exit(1)
    if check:
        click.echo(f"{spec.company['code']}: specification and {len(ledgers)} ledgers are valid; nothing was stored.")
        return
    try:
        onboarded = onboard_company(spec)
    except OnboardingError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    company = onboarded.company
    click.echo(f"Company {company.code} ({company.number}) {company.name} created from the group template.")
    click.echo(f"Administrator {onboarded.admin.username}, one-time password: {onboarded.admin_password}")
    for path, content in ledgers:
        result = import_ledger(company, content, path.name)
        record_import(company, path.name, content, result)
        if not result.ok:
            click.echo(result.summary(), err=True)
            for error in result.errors:
                click.echo(error.message(), err=True)
            click.echo(f"Company {company.code} exists; fix the file and run `flask heat import-ledger --company {company.code}`.", err=True)
            sys.exit(1)
        click.echo(result.summary())
        for notice in result.notices:
            click.echo(notice.message())
    if ledgers and not no_bill:
        run = run_billing(company.code, spec.season["name"])
        click.echo(f"{company.code} {spec.season['name']}: {run.accounts_billed} accounts billed, {run.amount_posted:.2f} yuan posted.")
    click.echo(f"Done in {time.monotonic() - started:.1f} s.")


def _onboarding_inputs(spec_path, ledger_paths):
    """Return (problems, spec, [(path, content)]) after checking the specification and every ledger."""
    if not spec_path.exists():
        return [f"Specification {spec_path} not found."], None, []
    try:
        text = spec_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return [f"{spec_path}: not UTF-8 text (invalid byte at offset {error.start}); save the specification as UTF-8."], None, []
    except OSError as error:
        return [f"Specification {spec_path} cannot be read: {error.strerror}."], None, []
    try:
        spec = load_spec_toml(text)
    except SpecError as error:
        return [f"{spec_path}: {message}" for message in error.messages], None, []
    problems, ledgers = [], []
    try:
        check_free(spec)
    except OnboardingError as error:
        problems.append(str(error))
    for path in ledger_paths:
        if not path.exists():
            problems.append(f"Ledger {path} not found.")
            continue
        if path.is_dir():
            problems.append(f"Ledger {path} is a directory; give each .xlsx file with its own --ledger.")
            continue
        try:
            content = path.read_bytes()
        except OSError as error:
            problems.append(f"Ledger {path} cannot be read: {error.strerror or error}; check the file and its permissions.")
            continue
        problems.extend(preflight_ledger(path.name, content, spec.legacy_values))
        ledgers.append((path, content))
    return problems, spec, ledgers


@heat.command("bpmn-check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def bpmn_check_command(path):
    """Accept a BPMN file, or list each element Heatflow cannot run (exit 1)."""
    from app.processes.bpmn_check import check_bpmn

    report = check_bpmn(read_input_file(path))
    if report.file_error:
        click.echo(f"{path.name}: cannot be imported: {report.file_error}", err=True)
        sys.exit(1)
    if report.findings:
        click.echo(f"{path.name}: cannot be imported, {len(report.findings)} elements are not supported:", err=True)
        for finding in report.findings:
            click.echo(f"  {finding.line()}", err=True)
        sys.exit(1)
    if report.executable_processes:
        click.echo(f"{path.name}: can be imported; executable processes: {', '.join(report.executable_processes)}.")
    else:
        click.echo(f"{path.name}: can be imported as documentation only; the file has no executable process.")


@heat.command("calendar-import")
@company_option("Company code, e.g. TJ: import into this company's working calendar.")
@click.option("--all-companies", is_flag=True, help="Import into the working calendar of every subsidiary.")
@click.option("--year", type=int, help="Year every date of the file must be in (default: the year of its first date).")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def calendar_import_command(company_code, all_companies, year, path):
    """Import one year's holidays and adjusted working days from .csv or .xlsx (columns 日期, 类型, 名称).

    Nothing is stored unless every row is valid; exit 1 lists each invalid row on stderr.
    """
    from app.extensions import db
    from app.org.models import Company
    from app.processes.calendar_import import CalendarImportError, import_calendar

    if bool(company_code) == all_companies:
        click.echo("Give either --company CODE or --all-companies.", err=True)
        sys.exit(2)
    content = read_input_file(path)
    if all_companies:
        scope = SYSTEM_SCOPE
        companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.code)).all()
    else:
        company_id = _company_id_or_exit(company_code)
        scope = company_scope(company_id, label=f"cli:calendar-import:{company_code}")
        companies = [db.session.get(Company, company_id)]
    with scoped(scope):
        try:
            result = import_calendar(path.name, content, companies, year=year)
        except CalendarImportError as error:
            db.session.rollback()
            click.echo(f"{path.name}: {error}", err=True)
            sys.exit(1)
        if result.errors:
            db.session.rollback()
            click.echo(f"{path.name}: nothing imported, {len(result.errors)} invalid rows:", err=True)
            for error in result.errors:
                click.echo(f"  {error}", err=True)
            sys.exit(1)
        db.session.commit()
    for company in companies:
        click.echo(
            f"{company.code}: {result.year} calendar, {result.added[company.code]} days added, "
            f"{result.changed[company.code]} changed, {result.rows} in the file."
        )


def _company_id_or_exit(company_code):
    """Return the id of the company with this code, or print the error and exit 1."""
    try:
        return find_company(company_code).id
    except LookupError as error:
        click.echo(str(error), err=True)
        sys.exit(1)


audit = AppGroup("audit", help="Audit trail checks of process instances.")
heat.add_command(audit)


@audit.command("verify")
@company_option("Company code, e.g. TJ; all companies when omitted.")
def audit_verify_command(company_code):
    """Verify every instance's event hash chain; exit 1 listing each broken chain."""
    from app.processes.audit import verify_all_chains

    company_id = _company_id_or_exit(company_code) if company_code else None
    scope = company_scope(company_id, label=f"cli:audit-verify:{company_code}") if company_id else SYSTEM_SCOPE
    with scoped(scope):
        result = verify_all_chains(company_id)
    if not result.broken:
        click.echo(f"ok: {result.instances} instances, {result.events} events")
        return
    for instance_id, report in result.broken:
        click.echo(f"instance {instance_id}: broken at event {report.bad_seq}: {report.reason}", err=True)
    click.echo(f"failed: {len(result.broken)} of {result.instances} instances have a broken audit chain", err=True)
    sys.exit(1)


notifications = AppGroup("notifications", help="Stored WeChat Pay and Alipay notifications (the notification inbox).")
heat.add_command(notifications)


@notifications.command("failed")
@company_option("Company code, e.g. TJ; all companies when omitted.")
def notifications_failed_command(company_code):
    """List failed notifications: id, company, channel, transaction, attempts, next retry and error."""
    from app.extensions import db
    from app.payments.models import PaymentNotification

    query = sa.select(PaymentNotification).where(PaymentNotification.outcome == "failed").order_by(PaymentNotification.id)
    if company_code:
        query = query.where(PaymentNotification.company_id == _company_id_or_exit(company_code))
    codes = _company_codes()
    rows = db.session.scalars(query).all()
    for row in rows:
        retry = row.retry_at.isoformat() if row.retry_at else "none left"
        click.echo(
            f"{row.id}\t{codes.get(row.company_id, '-')}\t{row.channel}\t{row.transaction_id or '-'}\t"
            f"attempts {row.attempts}\tnext retry {retry}\t{row.reason}"
        )
    click.echo(f"{len(rows)} failed notifications")


@notifications.command("requeue")
@click.argument("notification_id", type=int)
@click.option("--reason", required=True, help="What was fixed, recorded on the notification (at most 255 characters).")
def notifications_requeue_command(notification_id, reason):
    """Set a failed notification back to pending and send the apply task; exit 1 if it is not failed."""
    from app.payments.inbox import RequeueError, apply_requests, requeue_failed

    try:
        row = requeue_failed(notification_id, reason)
    except RequeueError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    apply_requests.request(row.company_id)
    click.echo(
        f"notification {row.id} of {_company_codes().get(row.company_id, row.company_id)} is pending again "
        f"after {row.attempts} failed attempts; the apply task or the next sweep posts it"
    )


outbox = AppGroup("outbox", help="Message outbox to RabbitMQ and inbound consumers.")
heat.add_command(outbox)


@outbox.command("relay")
@click.option("--once", is_flag=True, help="Publish what is pending now, then exit.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds to wait when nothing is pending.")
@click.option("--max-seconds", type=float, help="Stop after this many seconds.")
def outbox_relay_command(once, interval, max_seconds):
    """Publish pending outbox events with publisher confirms; exit 1 if --once could not publish all."""
    import time

    from app.messaging.broker import BrokerNotConfigured
    from app.messaging.relay import backoff, relay_pending

    started = time.monotonic()
    failures = 0
    total = 0
    while True:
        try:
            result = relay_pending(max_seconds=30)
        except BrokerNotConfigured as error:
            click.echo(str(error), err=True)
            sys.exit(1)
        total += result.published
        failures = failures + 1 if result.failed else 0
        if result.failed:
            click.echo(f"publish failed after {result.published} events: {result.error}", err=True)
        if once:
            click.echo(f"published {total} events")
            sys.exit(1 if result.failed or result.waiting else 0)
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            click.echo(f"published {total} events")
            return
        if result.failed or result.waiting or result.published == 0:
            time.sleep(backoff(failures) if failures else interval)


@outbox.command("replay")
@click.option("--since", help="Replay events that occurred at or after this time (ISO 8601; local time when no offset). Not with --event-id.")
@click.option("--event-id", "event_ids", multiple=True, help="Replay the event with this id; may be repeated. Not with --since.")
@company_option("Only events of this company code.")
@click.option("--event-type", help="Only events of this type, e.g. payment.posted.")
def outbox_replay_command(since, event_ids, company_code, event_type):
    """Queue stored events to be published again under their own message ids."""
    from datetime import datetime, timezone

    from app.clock import LOCAL_TIME
    from app.messaging.relay import mark_for_replay

    if not since and not event_ids:
        click.echo("Give --since or --event-id.", err=True)
        sys.exit(1)
    if since and event_ids:
        click.echo(
            "--since and --event-id cannot be combined: give --event-id alone to replay those events,"
            " or --since (with --company or --event-type) to replay every event from that time.",
            err=True,
        )
        sys.exit(1)
    moment = None
    if since:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            click.echo(f"--since {since!r} is not an ISO 8601 time such as 2026-01-05T08:00.", err=True)
            sys.exit(1)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=LOCAL_TIME)
        try:
            moment = moment.astimezone(timezone.utc)
        except OverflowError:
            click.echo(f"--since {since!r} is out of range; give a time between the years 0002 and 9998.", err=True)
            sys.exit(1)
    company_id = _company_id_or_exit(company_code) if company_code else None
    count = mark_for_replay(since=moment, event_ids=event_ids, company_id=company_id, event_type=event_type)
    if event_ids and count != len(set(event_ids)):
        click.echo(f"queued {count} of {len(set(event_ids))} events; the others are unknown", err=True)
        sys.exit(1)
    click.echo(f"queued {count} events for the relay")


@outbox.command("consume")
@click.argument("consumer", type=click.Choice(["meter_readings", "oa_approvals"]))
@click.option("--idle-exit", type=float, help="Exit after this many seconds without a message.")
@click.option("--max-seconds", type=float, help="Exit after this many seconds.")
def outbox_consume_command(consumer, idle_exit, max_seconds):
    """Consume an inbound queue (meter readings or OA approvals) until interrupted."""
    from app.messaging.broker import BrokerNotConfigured
    from app.messaging.inbound import run_consumer

    try:
        handled = run_consumer(consumer, idle_exit_s=idle_exit, max_seconds=max_seconds)
    except BrokerNotConfigured as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(f"{consumer}: handled {handled} messages")


@heat.command("vouchers")
@click.option("--date", "voucher_date", required=True, help="Local day, e.g. 2026-01-05.")
@company_option("Company code; all companies when omitted.")
def vouchers_command(voucher_date, company_code):
    """Issue (or show again) the daily finance vouchers of a closed day."""
    from datetime import date

    from app.messaging.vouchers import VoucherError, issue_daily_vouchers, voucher_content

    try:
        day = date.fromisoformat(voucher_date)
    except ValueError:
        click.echo(f"--date {voucher_date!r} is not a date such as 2026-01-05.", err=True)
        sys.exit(1)
    try:
        vouchers = issue_daily_vouchers(day, company_code)
    except VoucherError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    for voucher in vouchers:
        content = voucher_content(voucher)
        click.echo(f"{content['voucher_no']}: debit {content['debit_total']}, credit {content['credit_total']}, {len(content['lines'])} lines")


@heat.command("reconcile")
@click.option("--date", "day_text", required=True, help="Local business day whose statements to reconcile, e.g. 2026-01-05.")
@company_option("Company code, e.g. TJ; all companies when omitted.")
@click.option("--channel", help="Statement channel: wechatpay, alipay or bank:<bank code>; all when omitted.")
def reconcile_command(day_text, company_code, channel):
    """Download each merchant's statement of a day and reconcile it; exit 1 when any failed.

    Prints one line per merchant: company, channel, merchant, then the counts or the error.
    """
    from datetime import date

    from app.payments.daily_reconciliation import reconcile_targets, reconciliation_targets

    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        click.echo(f"--date {day_text!r} is not a date such as 2026-01-05.", err=True)
        sys.exit(1)
    company_ids = {_company_id_or_exit(company_code)} if company_code else None
    targets = reconciliation_targets(company_ids, channel)
    if not targets:
        click.echo("No active merchant matches; nothing reconciled.", err=True)
        sys.exit(1)
    failed = 0
    codes = _company_codes()
    for outcome in reconcile_targets(targets, day):
        target = outcome.target
        prefix = f"{codes.get(target.company_id, target.company_id)} {target.channel} {target.merchant_id} {day}"
        if outcome.error:
            failed += 1
            click.echo(f"{prefix}: failed: {outcome.error}", err=True)
        else:
            run = outcome.run
            click.echo(f"{prefix}: {run.matched} matched, {run.differences} differences, run {run.runs}")
    if failed:
        sys.exit(1)


def _company_codes():
    """{company id: company code} of every company."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.org.models import Company

    return dict(db.session.execute(sa.select(Company.id, Company.code)).all())


@heat.command("run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the web server listens on.")
@click.option("--port", default=5000, show_default=True, help="Port of the web server.")
def run_command(host, port):
    """Serve the web app and run a Celery worker with the beat scheduler (process timers) beside it until interrupted."""
    import subprocess

    from werkzeug.serving import run_simple

    from app.celery_worker import flask_app
    from app.child_processes import stop_child

    # The worker embeds the beat scheduler, which queues the process-timer scan; run exactly one such worker.
    Path(flask_app.instance_path).mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "app.celery_worker", "worker", "--pool", "solo", "--beat",
         "--schedule", str(Path(flask_app.instance_path) / "celerybeat-schedule"), "--loglevel", "INFO"],
    )
    # SIGTERM (kill, systemd, docker stop) would skip the finally below and leave the worker
    # and its beat running. Exiting through SystemExit runs the finally, as Ctrl+C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        click.echo(f"Heatflow on http://{host}:{port} with a Celery worker (pid {worker.pid}); Ctrl+C stops both.")
        run_simple(host, port, flask_app, threaded=True, use_reloader=False)
    finally:
        stop_child(worker, grace_s=15)


rls = AppGroup("rls", help="PostgreSQL row-level security of the company-owned tables.")
heat.add_command(rls)


@rls.command("grant")
@click.argument("role")
def rls_grant_command(role):
    """Refresh the tenant policies and grant ROLE data access only; run as the table owner after `db upgrade`."""
    from app.extensions import db
    from app.rls import grant_app_role, sync_row_level_security

    if db.engine.dialect.name != "postgresql":
        click.echo("Row-level security needs PostgreSQL; DATABASE_URL points elsewhere.", err=True)
        sys.exit(1)
    with db.engine.begin() as connection:
        tables = sync_row_level_security(connection)
        grant_app_role(connection, role)
    click.echo(f"{len(tables)} tables under row-level security; {role} may read and write rows, not change the schema.")


@rls.command("check")
def rls_check_command():
    """Check that every company-owned table has its policies and the connected role cannot bypass them; exit 1 if not."""
    from app.extensions import db
    from app.rls import missing_policies, role_bypasses_rls

    if db.engine.dialect.name != "postgresql":
        click.echo("Row-level security needs PostgreSQL; DATABASE_URL points elsewhere.", err=True)
        sys.exit(1)
    with db.engine.connect() as connection:
        covered, missing = missing_policies(connection)
        bypasses = role_bypasses_rls(connection)
        user = connection.execute(sa.text("SELECT current_user")).scalar()
    for table in missing:
        click.echo(f"table {table} has company_id but lacks tenant policies; run `flask heat rls grant ROLE` as the owner.", err=True)
    if bypasses:
        click.echo(f"role {user} is a superuser or has BYPASSRLS, so no policy applies to it; connect the app as a restricted role.", err=True)
    if missing or bypasses:
        sys.exit(1)
    click.echo(f"ok: {covered} tables under row-level security, role {user} is bound by the policies")


def register_cli(app):
    app.cli.add_command(heat)
