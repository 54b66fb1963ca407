"""Valve history: shut-off counts as of a date, kept by field tasks, imports and the rebuild command."""

import io
import uuid
from datetime import date, datetime, timedelta

import openpyxl
import psycopg
import pytest
import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.ledger.services import import_ledger
from app.network.models import Account, Building, Unit
from app.network.valves import ValveChange, record_valve_change, shut_off_counts
from app.org.models import User
from app.tenancy import SYSTEM_SCOPE, company_scope, scoped
from tests.fieldwork.conftest import photo, valve_task  # noqa: F401
from tests.processes.conftest import instance_of, make_account, open_task, start_process_request, submit_task  # noqa: F401

SEASON = "2025-2026"
# Day D of the worked example: closed at local noon on D, opened at local noon on D+10.
CLOSED_ON = date(2026, 1, 5)
OPENED_ON = CLOSED_ON + timedelta(days=10)


def _noon(day):
    return datetime(day.year, day.month, day.day, 12, tzinfo=LOCAL_TIME)


def _shut_off(client, code, day):
    data = client.get(f"/hq/dashboard/companies.json?season={SEASON}&as_of={day.isoformat()}").get_json()
    row = next(r for r in data["rows"] if r.get("code") == code)
    return row["shut_off"], data["rows"][-1]["shut_off"]


def _community_shut_off(client, code, day, community_id):
    data = client.get(f"/hq/dashboard/companies/{code}.json?season={SEASON}&as_of={day.isoformat()}").get_json()
    return next(r for r in data["rows"] if r["id"] == community_id)["shut_off"]


def _community_of(account):
    return db.session.scalar(
        sa.select(Building.community_id).join(Unit, Unit.building_id == Building.id).where(Unit.id == account.unit_id)
    )


def _close_and_open(account, opened_first=False):
    """Record the worked example on `account`; with `opened_first`, the opening arrives before the closing."""
    steps = [("closed", _noon(CLOSED_ON)), ("open", _noon(OPENED_ON))]
    for state, at in reversed(steps) if opened_first else steps:
        record_valve_change(account, state, at, "process_instance", cause_id=None)
    db.session.commit()


@pytest.mark.parametrize("opened_first", [False, True], ids=["in-order", "opening-first"])
def test_closed_d_opened_d10_counts_between(demo, make_account, login, opened_first):
    account = make_account("TJ", "87.35")
    _close_and_open(account, opened_first)
    client = login("hq_auditor")

    assert _shut_off(client, "TJ", CLOSED_ON - timedelta(days=1)) == (0, 0)
    assert _shut_off(client, "TJ", CLOSED_ON) == (1, 1)
    assert _shut_off(client, "TJ", CLOSED_ON + timedelta(days=5)) == (1, 1)
    assert _shut_off(client, "TJ", OPENED_ON) == (0, 0)
    assert _shut_off(client, "TJ", OPENED_ON + timedelta(days=1)) == (0, 0)


def test_closed_period_links_to_the_opening(demo, make_account):
    account = make_account("TJ", "87.35")
    _close_and_open(account, opened_first=True)

    closed, opened = db.session.scalars(
        sa.select(ValveChange).where(ValveChange.account_id == account.id).order_by(ValveChange.effective_at)
    ).all()

    assert (closed.state, opened.state) == ("closed", "open")
    assert closed.ended_at == opened.effective_at
    assert opened.ended_at is None


def test_drill_down_and_account_list_as_of(demo, make_account, login):
    account = make_account("TJ", "87.35")
    _close_and_open(account)
    client = login("hq_auditor")
    community_id = _community_of(account)
    middle = CLOSED_ON + timedelta(days=5)
    after = OPENED_ON + timedelta(days=1)

    assert _community_shut_off(client, "TJ", middle, community_id) == 1
    assert _community_shut_off(client, "TJ", after, community_id) == 0
    url = f"/hq/dashboard/companies/TJ/communities/{community_id}.json?season={SEASON}"
    valve_middle = next(r for r in client.get(f"{url}&as_of={middle}").get_json()["rows"] if r["id"] == account.id)["valve"]
    valve_after = next(r for r in client.get(f"{url}&as_of={after}").get_json()["rows"] if r["id"] == account.id)["valve"]
    assert valve_middle == "关栓"
    assert valve_after == "开栓"


def test_companies_counted_apart(demo, make_account, login):
    tj = make_account("TJ", "87.35")
    qd_accounts = [make_account("QD", "90.00"), make_account("QD", "91.00")]
    _close_and_open(tj)
    for account in qd_accounts:
        record_valve_change(account, "sealed", _noon(CLOSED_ON), "process_instance")
    db.session.commit()
    client = login("hq_auditor")
    middle = CLOSED_ON + timedelta(days=5)

    assert _shut_off(client, "TJ", middle) == (1, 3)
    assert _shut_off(client, "QD", middle)[0] == 2
    assert _shut_off(client, "QD", OPENED_ON + timedelta(days=1)) == (2, 2)
    with scoped(company_scope(demo["TJ"].id)):
        assert shut_off_counts(_noon(middle)) == {demo["TJ"].id: 1}


def test_every_unique_key_has_company_id():
    keys = [c for c in ValveChange.__table__.constraints if isinstance(c, sa.UniqueConstraint)]

    assert keys
    for key in keys:
        assert "company_id" in key.columns


def test_rls_hides_other_company_history(backend, demo, make_account):
    if backend != "postgres":
        pytest.skip("row-level security exists on PostgreSQL only")
    tj, qd = make_account("TJ", "87.35"), make_account("QD", "90.00")
    record_valve_change(tj, "closed", _noon(CLOSED_ON), "process_instance")
    record_valve_change(qd, "closed", _noon(CLOSED_ON), "process_instance")
    db.session.commit()
    tj_id, qd_id, qd_account_id, qd_community_id = demo["TJ"].id, demo["QD"].id, qd.id, _community_of(qd)

    with scoped(company_scope(tj_id)):
        seen = set(db.session.execute(sa.text("SELECT DISTINCT company_id FROM valve_change")).scalars())
        with pytest.raises(sa.exc.ProgrammingError) as raised:
            db.session.execute(sa.text(
                "INSERT INTO valve_change (company_id, account_id, community_id, state, effective_at, cause_type, recorded_at, note)"
                " VALUES (:company, :account, :community, 'open', now(), 'import', now(), '')"
            ), {"company": qd_id, "account": qd_account_id, "community": qd_community_id})
        db.session.rollback()

    assert seen == {tj_id}
    assert isinstance(raised.value.orig, psycopg.errors.InsufficientPrivilege)


def _close_on_phone(login, task):
    data = {"submission_id": str(uuid.uuid4()), "result": "sealed", "seal_no": "TJ-S-0042", "comment": "", "photos": [photo()]}
    response = login("tj_field").post(f"/field/tasks/{task.id}", data=data, content_type="multipart/form-data")
    assert response.status_code == 302


def test_field_task_writes_one_change(valve_task, login):
    account, _instance, task = valve_task
    _close_on_phone(login, task)
    field_user = db.session.scalar(sa.select(User).filter_by(username="tj_field"))

    changes = db.session.scalars(sa.select(ValveChange).where(ValveChange.account_id == account.id)).all()

    assert len(changes) == 1
    assert changes[0].state == "sealed"
    assert (changes[0].cause_type, changes[0].cause_id) == ("field_task", task.id)
    assert changes[0].recorded_by_id == field_user.id
    assert changes[0].company_id == account.company_id
    assert changes[0].ended_at is None


def test_reheating_ends_the_closed_period(demo, make_account, login):
    account = make_account("TJ", "87.35", status="suspended")
    account.valve_state = "closed"
    record_valve_change(account, "closed", _noon(CLOSED_ON), "import")
    db.session.commit()
    response = start_process_request(login("tj_clerk"), "reheating", account.id, {"requested_on": "2026-01-20", "comment": ""})
    assert response.status_code == 302
    instance = instance_of(account.id, "reheating")
    assert submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"}).status_code == 302
    field_task = open_task(instance.id, "valve_open")
    response = submit_task(login("tj_field"), field_task.id, {"opened_on": "2026-01-20", "photo_note": "阀门照片"})
    assert response.status_code == 302, response.get_data(as_text=True)

    closed, opened = db.session.scalars(
        sa.select(ValveChange).where(ValveChange.account_id == account.id).order_by(ValveChange.effective_at)
    ).all()

    assert (opened.state, opened.cause_type, opened.cause_id) == ("open", "field_task", field_task.id)
    assert closed.ended_at == opened.effective_at
    assert opened.ended_at is None


def test_rebuild_restores_history_once(valve_task, login, app_ctx):
    account, _instance, task = valve_task
    _close_on_phone(login, task)
    db.session.execute(sa.delete(ValveChange))
    legacy = db.session.get(Account, account.id)
    # An account closed before any history was kept, with no process behind it.
    other = Account(company_id=legacy.company_id, account_no=legacy.account_no[:-4] + "9999", customer_name="旧户",
                    unit_id=legacy.unit_id, room="9999", building_area=legacy.building_area, user_type="residential",
                    billing_status="suspended", valve_state="closed")
    db.session.add(other)
    db.session.commit()
    runner = app_ctx.test_cli_runner()

    first = runner.invoke(args=["heat", "valve-history-rebuild", "--company", "TJ"])
    second = runner.invoke(args=["heat", "valve-history-rebuild"])

    assert first.exit_code == 0, first.output
    assert "TJ: 1 valve changes from processes, 1 baseline rows added." in first.output
    assert second.exit_code == 0, second.output
    assert "TJ: 0 valve changes from processes, 0 baseline rows added." in second.output
    rows = {row.account_id: row for row in db.session.scalars(sa.select(ValveChange))}
    assert len(rows) == 2
    assert (rows[account.id].state, rows[account.id].cause_type, rows[account.id].cause_id) == ("sealed", "field_task", task.id)
    assert (rows[other.id].state, rows[other.id].cause_type) == ("closed", "import")
    with scoped(SYSTEM_SCOPE):
        assert shut_off_counts(datetime.now(LOCAL_TIME) + timedelta(seconds=1))[account.company_id] == 2


def test_rebuild_rejects_unknown_company(app_ctx, demo):
    result = app_ctx.test_cli_runner().invoke(args=["heat", "valve-history-rebuild", "--company", "XX"])

    assert result.exit_code == 1
    assert "XX" in result.output


def _ledger(valves):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["原用户编号", "户主姓名", "小区名称", "楼号", "单元", "房号", "建筑面积", "用户类型", "供热状态", "阀门状态"])
    for n, valve in enumerate(valves, start=1):
        sheet.append([f"V-{n}", "测试", "阀门小区", 1, 1, f"{100 + n}", 80, "居民", "报停", valve])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_import_records_legacy_valve_states(demo):
    result = import_ledger(demo["BJ"], _ledger(["关栓", "施封", None, "开栓"]), "valves.xlsx")
    assert result.ok, result.errors
    again = import_ledger(demo["BJ"], _ledger(["关栓", "开栓", None, "开栓"]), "valves-2.xlsx")
    assert again.ok, again.errors

    rows = db.session.scalars(sa.select(ValveChange).order_by(ValveChange.id)).all()
    accounts = {a.legacy_no: a for a in db.session.scalars(sa.select(Account).where(Account.company_id == demo["BJ"].id))}

    assert [(r.account_id, r.state) for r in rows] == [
        (accounts["V-1"].id, "closed"), (accounts["V-2"].id, "sealed"), (accounts["V-2"].id, "open"),
    ]
    assert {r.cause_type for r in rows} == {"import"}
    assert rows[0].note == "valves.xlsx 第 2 行"
    assert rows[1].ended_at == rows[2].effective_at
    assert accounts["V-3"].valve_state == "open"
    assert accounts["V-2"].valve_state == "open"


def test_import_rejects_unknown_valve_text(demo):
    result = import_ledger(demo["BJ"], _ledger(["半开"]), "valves.xlsx")

    assert not result.ok
    assert "阀门状态无法识别" in result.errors[0].reason
    assert result.errors[0].value == "半开"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ValveChange)) == 0


def test_reimport_batches_valve_changes(demo):
    company = demo["BJ"]
    assert import_ledger(company, _ledger(["关栓"] * 20), "valves.xlsx").ok
    accounts = {a.legacy_no: a for a in db.session.scalars(sa.select(Account).where(Account.company_id == company.id))}
    # A change already recorded for tomorrow: the import's change of V-3 must end there.
    tomorrow = datetime.now(LOCAL_TIME) + timedelta(days=1)
    record_valve_change(accounts["V-3"], "sealed", tomorrow, "import", note="planned")
    db.session.commit()
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "valve_change" in statement:
            statements.append(statement)

    # 15 valves opened, 3 left closed and 2 blank cells that keep what is stored.
    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        result = import_ledger(company, _ledger(["开栓"] * 15 + ["关栓"] * 3 + [None] * 2), "valves-2.xlsx")
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert result.ok, result.errors

    # One read of the neighbours, one UPDATE of the changes they end and one INSERT, however many valves changed.
    assert len(statements) == 3, statements
    history = {}
    for change in db.session.scalars(sa.select(ValveChange).order_by(ValveChange.effective_at, ValveChange.id)):
        history.setdefault(change.account_id, []).append(change)
    for n in range(1, 16):
        account_id = accounts[f"V-{n}"].id
        states = [change.state for change in history[account_id]]
        expected = ["closed", "open", "sealed"] if n == 3 else ["closed", "open"]
        assert states == expected, (n, states)
        closed, opened = history[account_id][:2]
        assert closed.ended_at == opened.effective_at, n
        assert opened.note == f"valves-2.xlsx 第 {n + 1} 行", n
        assert opened.cause_type == "import", n
        assert opened.community_id == closed.community_id, n
    assert history[accounts["V-3"].id][1].ended_at == history[accounts["V-3"].id][2].effective_at
    assert history[accounts["V-1"].id][1].ended_at is None
    for n in range(16, 21):
        changes = history[accounts[f"V-{n}"].id]
        assert [(change.state, change.ended_at) for change in changes] == [("closed", None)], n
    db.session.expire_all()
    assert db.session.get(Account, accounts["V-1"].id).valve_state == "open"
    assert db.session.get(Account, accounts["V-20"].id).valve_state == "closed"
