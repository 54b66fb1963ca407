"""Time the process runtime on PostgreSQL: task completion, the inbox query and state size.

Creates a database named heatflow_bench_<random>, migrates it, installs the demo and
measures, each against a raw baseline taken in the same run:

  completion  complete_task for the two human steps of --instances TJ suspensions
              (company approval, then the valve task), per step in ms. Baselines: the
              same state text read FOR UPDATE and written back in one transaction (the
              database floor), and deserialize + run + serialize without the database
              (the engine floor). Each step also prints the median CPU time of the
              benchmark process, which a loaded machine inflates less than wall time.
  inbox       inbox_page for the TJ approver with --tasks open tasks in the table: first
              page, a deep page by cursor, and the process, account and overdue filters.
              Baseline: SELECT ... ORDER BY id LIMIT 50 on the same table.
  state size  bytes of the stored state after start and after each step, and of the
              spec documents (diagram and decision tables) the states reference.

With --profile it instead completes the company approval of a few instances and prints,
for the last one, every SQL statement sent and the cProfile of complete_task.

The database is dropped at the end, also after a failure.

    .venv/bin/python benchmarks/process_runtime.py --instances 200 --tasks 100000
    .venv/bin/python benchmarks/process_runtime.py --profile
"""

import cProfile
import json
import logging
import pstats
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import sqlalchemy as sa

from common import argument_parser, check_range, demo_app, parse_local, scratch_database  # noqa: E402

from app.billing.services import run_billing  # noqa: E402
from app.demo import SEASON_NAME  # noqa: E402
from app.extensions import db  # noqa: E402
from app.network.models import Account, Building, Community, Unit  # noqa: E402
from app.org.models import Company, User  # noqa: E402
from app.processes.engine import RunContext, dump_workflow, load_workflow  # noqa: E402
from app.processes.inbox import InboxFilters, inbox_page  # noqa: E402
from app.processes.models import HumanTask, ProcessInstance, ProcessSpec  # noqa: E402
from app.processes.services import claim_task, complete_task, start_process  # noqa: E402

APPROVE = {"decision": "approve", "comment": "同意"}
VALVE = {"result": "sealed", "seal_no": "B-0001", "photo_note": "", "comment": ""}
REPEATS = 20

# --tasks open inbox rows spread over the demo companies, lanes and process types; 1 in 10
# is in TJ's company_approver lane, about 1 in 4 is overdue. They point at a few real instances.
TASKS_SQL = """
INSERT INTO human_task (company_id, instance_id, spiff_task_id, task_spec_name, title, lane_role, form, status,
                        claimed_by_name, comment, created_at, due_at, delegated_to_name, process_type, account_id)
SELECT CASE WHEN n % 10 = 0 THEN :tj ELSE (ARRAY[:qd, :sjz, :bj])[1 + n % 3] END,
       :instance_id, 'bench-' || n, 'company_approval', '分公司审批',
       (ARRAY['company_approver', 'group_approver', 'clerk', 'field_staff', 'finance'])[1 + (n / 10) % 5],
       'approval', 'open', '', '',
       :start + n * interval '1 second', :start + n * interval '1 second' + interval '3 days' - (n % 4) * interval '30 days',
       '', (ARRAY['suspension', 'waiver', 'forced_shutoff', 'area_adjustment'])[1 + n % 4], :account_id
FROM generate_series(1, :count) AS n
"""


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--instances", type=int, default=200, help="TJ suspensions whose two steps are completed (default 200)")
    parser.add_argument("--tasks", type=int, default=100_000, help="open inbox rows for the inbox query (default 100,000)")
    parser.add_argument("--profile", action="store_true", help="print the SQL statements and cProfile of one company approval instead")
    arguments = parse_local(parser)
    check_range(parser, "--instances", arguments.instances, 1, 10_000)
    check_range(parser, "--tasks", arguments.tasks, 1, 2_000_000)
    return arguments


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def create_accounts(company, count):
    community = Community(company_id=company.id, code="9001", name="压测小区")
    db.session.add(community)
    db.session.flush()
    building = Building(company_id=company.id, community_id=community.id, code="001")
    db.session.add(building)
    db.session.flush()
    unit = Unit(company_id=company.id, building_id=building.id, code="01")
    db.session.add(unit)
    db.session.flush()
    accounts = []
    for number in range(count):
        room = f"{number + 1:04d}"
        account = Account(
            company_id=company.id, account_no=f"{company.number}900100101{room}", customer_name="压测户", unit_id=unit.id,
            room=room, building_area=Decimal("87.35"), user_type="residential", billing_status="normal",
        )
        db.session.add(account)
        accounts.append(account)
    db.session.commit()
    run_billing(company.code, SEASON_NAME)
    return [account.id for account in accounts]


class StatementCounter:
    """Counts SQL statements sent on the engine, a figure that does not depend on the machine's load; keeps their first lines."""

    def __init__(self, engine):
        self.count = 0
        self.log = []
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, connection, cursor, statement, *args):
        self.count += 1
        self.log.append(" ".join(statement.split())[:150])


def _ms(seconds):
    return seconds * 1000


def _summary(label, samples, baseline=None):
    median = statistics.median(samples)
    p95 = sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]
    ratio = f"  ratio {median / baseline:6.2f}" if baseline else ""
    print(f"{label:<48} median {_ms(median):7.2f} ms  p95 {_ms(p95):7.2f} ms{ratio}", flush=True)
    return median


def _load_like_a_request(user):
    """Load the user row and its company, as app.web does before a view runs."""
    db.session.refresh(user)
    _ = user.company.is_headquarters


def _db_floor(instance_id):
    """Read the state FOR UPDATE and write it back, as one transaction."""
    started = time.perf_counter()
    state = db.session.execute(
        sa.text("SELECT state FROM process_instance WHERE id = :id FOR UPDATE"), {"id": instance_id}
    ).scalar_one()
    db.session.execute(sa.text("UPDATE process_instance SET state = :state WHERE id = :id"), {"state": state, "id": instance_id})
    db.session.commit()
    return time.perf_counter() - started


def _engine_floor(instance, spiff_task_id, values):
    """Deserialize, complete one READY task, run the engine and serialize, with no database access."""
    state = instance.state
    started = time.perf_counter()
    workflow = load_workflow(state, RunContext(instance))
    spiff_task = workflow.get_task_from_id(UUID(spiff_task_id))
    spiff_task.data.update(values)
    spiff_task.run()
    # Automatic steps after the task call billing services, which need the database, so the floor stops here.
    dump_workflow(workflow)
    return time.perf_counter() - started


def benchmark_completion(instances):
    company = db.session.scalar(sa.select(Company).filter_by(code="TJ"))
    clerk, approver, field = _user("tj_clerk"), _user("tj_approver"), _user("tj_field")
    account_ids = create_accounts(company, instances)
    started = [start_process("suspension", account_id, clerk, {"reason": "vacant", "comment": ""}) for account_id in account_ids]
    sizes = {"after start": [len(instance.state) for instance in started]}
    digests = {json.loads(instance.state)["spec_digest"] for instance in started}
    spec_sizes = [len(text) for text in db.session.scalars(sa.select(ProcessSpec.document).where(ProcessSpec.digest.in_(digests)))]

    db_floor, engine_floor, steps = [], [], {"company approval": [], "valve task": []}
    counter = StatementCounter(db.engine)
    statements = {"company approval": [], "valve task": []}
    # CPU time of this process alone: the step's Python work without waiting for PostgreSQL or for a CPU.
    cpu_times = {"company approval": [], "valve task": []}
    for instance in started:
        db_floor.append(_db_floor(instance.id))
        task = db.session.scalar(sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open"))
        engine_floor.append(_engine_floor(db.session.get(ProcessInstance, instance.id), task.spiff_task_id, {"company_decision": "approve"}))
        task_id = claim_task(task.id, approver).id
        # A request has loaded its user, and the user's company for its tenant scope
        # (app.web._set_request_scope), before the view calls complete_task.
        _load_like_a_request(approver)
        before, moment, cpu = counter.count, time.perf_counter(), time.process_time()
        complete_task(task_id, approver, APPROVE)
        steps["company approval"].append(time.perf_counter() - moment)
        cpu_times["company approval"].append(time.process_time() - cpu)
        statements["company approval"].append(counter.count - before)
    sizes["after company approval"] = [len(db.session.get(ProcessInstance, i.id).state) for i in started]
    for instance in started:
        task = db.session.scalar(sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open"))
        task_id = claim_task(task.id, field).id
        _load_like_a_request(field)
        before, moment, cpu = counter.count, time.perf_counter(), time.process_time()
        complete_task(task_id, field, VALVE)
        steps["valve task"].append(time.perf_counter() - moment)
        cpu_times["valve task"].append(time.process_time() - cpu)
        statements["valve task"].append(counter.count - before)
    sizes["after valve task (completed)"] = [len(db.session.get(ProcessInstance, i.id).state) for i in started]

    print(f"\n-- task completion, {instances} TJ suspensions, two human steps each")
    floor = _summary("baseline: state read FOR UPDATE + written back", db_floor)
    _summary("engine only: load + run task + dump (no DB)", engine_floor, floor)
    for label, samples in steps.items():
        _summary(f"complete_task, {label}", samples, floor)
        print(f"{'':<48} {statistics.median(statements[label]):.0f} SQL statements (baseline: 3), "
              f"{_ms(statistics.median(cpu_times[label])):.2f} ms CPU in this process")
    print("\n-- serialized state per instance")
    for label, values in sizes.items():
        print(f"{label:<48} median {statistics.median(values) / 1024:7.1f} KiB  max {max(values) / 1024:7.1f} KiB")
    print(f"{'spec documents referenced (process_spec rows)':<48} {len(spec_sizes)}, {sum(spec_sizes) / 1024:.1f} KiB in all")
    return started[0]


def profile_completion(instances=5):
    """Complete the company approval of a few TJ suspensions; print the statements and profile of the last one."""
    company = db.session.scalar(sa.select(Company).filter_by(code="TJ"))
    clerk, approver = _user("tj_clerk"), _user("tj_approver")
    started = [start_process("suspension", account_id, clerk, {"reason": "vacant", "comment": ""}) for account_id in create_accounts(company, instances)]
    counter = StatementCounter(db.engine)
    for number, instance in enumerate(started, start=1):
        task = db.session.scalar(sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open"))
        task_id = claim_task(task.id, approver).id
        _load_like_a_request(approver)
        counter.log.clear()
        profile = cProfile.Profile()
        profile.enable()
        complete_task(task_id, approver, APPROVE)
        profile.disable()
        if number == len(started):
            print(f"\n-- complete_task, company approval: {len(counter.log)} SQL statements")
            for line in counter.log:
                print(f"  {line}")
            print()
            pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(30)


def benchmark_inbox(count, instance):
    companies = {c.code: c.id for c in db.session.scalars(sa.select(Company))}
    start = datetime.now(timezone.utc) - timedelta(days=200)
    moment = time.perf_counter()
    db.session.execute(sa.text(TASKS_SQL), {
        "tj": companies["TJ"], "qd": companies["QD"], "sjz": companies["SJZ"], "bj": companies["BJ"],
        "instance_id": instance.id, "account_id": instance.account_id, "start": start, "count": count,
    })
    db.session.commit()
    db.session.execute(sa.text("ANALYZE human_task"))
    db.session.commit()
    total = db.session.scalar(sa.select(sa.func.count()).select_from(HumanTask).where(HumanTask.status == "open"))
    print(f"\n-- inbox, {total:,} open tasks (inserted in {time.perf_counter() - moment:.1f} s)")

    def baseline():
        db.session.execute(sa.text("SELECT * FROM human_task ORDER BY id LIMIT 50")).all()

    def repeat(function):
        samples = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            function()
            samples.append(time.perf_counter() - started)
        db.session.rollback()
        return samples

    floor = _summary("baseline: SELECT * ... ORDER BY id LIMIT 50", repeat(baseline))
    approver = _user("tj_approver")
    account_no = db.session.get(Account, instance.account_id).account_no
    _, cursor = inbox_page(approver, InboxFilters())
    for _ in range(20):
        _, cursor = inbox_page(approver, InboxFilters(after=cursor))
    cases = {
        "inbox_page, first page": InboxFilters(),
        "inbox_page, page 22 by cursor": InboxFilters(after=cursor),
        "inbox_page, newest first": InboxFilters(sort="created_desc"),
        "inbox_page, by due date": InboxFilters(sort="due"),
        "inbox_page, process type waiver": InboxFilters(process_type="waiver"),
        "inbox_page, overdue only": InboxFilters(overdue=True),
        "inbox_page, account number prefix": InboxFilters(account_no=account_no[:8]),
    }
    for label, filters in cases.items():
        rows = inbox_page(approver, filters)[0]
        _summary(f"{label} ({len(rows)} rows)", repeat(lambda f=filters: inbox_page(approver, f)), floor)
    hq = _user("hq_approver")
    rows = inbox_page(hq, InboxFilters())[0]
    _summary(f"inbox_page, group approver ({len(rows)} rows)", repeat(lambda: inbox_page(hq, InboxFilters())), floor)


def main():
    arguments = parse_arguments()
    logging.basicConfig(level=logging.WARNING)
    with scratch_database(arguments.admin_url) as url, demo_app(url, system_scope=True):
        if arguments.profile:
            profile_completion()
        else:
            instance = benchmark_completion(arguments.instances)
            benchmark_inbox(arguments.tasks, instance)


if __name__ == "__main__":
    main()
