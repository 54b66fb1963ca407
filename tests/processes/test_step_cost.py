"""The SQL statements and flushes of one company approval and one valve task, which bound the cost of a process step."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.billing.models import LedgerEntry
from app.billing.precision import set_group_precision
from app.billing.services import season_receivable
from app.extensions import db
from app.hq.models import AccountSeasonBalance, CompanySeasonTotal, StepDailyTotal
from app.network.models import AccountTerms
from app.network.valves import ValveChange
from app.org.models import Group
from app.tariffs.models import Season, Tariff, TariffPrice
from app.org.admin import set_user_roles
from app.org.models import Company, Role, UserRole
from app.org.services import AccessError
from app.processes.calendar import delete_day, save_day
from app.processes.models import HumanTask, TimerSetting
from app.processes.services import claim_task, complete_task, start_process
import pytest
from app.org.services import scope_for
from app.tenancy import scoped
from tests.processes.conftest import open_task, user

# Statements of one company approval that re-rates the season (see docs/benchmarks.md), in a
# process that has not kept the company's timer settings and tariffs yet. The claim has kept
# the approver's roles already. SQLite also sends a no-op UPDATE before the row lock, one
# INSERT per audit event, and the daily and season totals as two statements each.
MAX_STATEMENTS = {"postgresql": 16, "sqlite": 21}
# The same approval in a process that has kept the timer settings and tariffs too.
MAX_WARM_STATEMENTS = {"postgresql": 14, "sqlite": 19}
# Statements of the valve task that records the seal and ends the instance.
MAX_VALVE_STATEMENTS = {"postgresql": 11, "sqlite": 15}
VALVE_RESULT = {"result": "sealed", "seal_no": "B-0001", "photo_note": "", "comment": ""}


def _season_id(demo):
    return db.session.scalar(sa.select(Season.id).where(Season.company_id == demo["TJ"].id, Season.name == "2025-2026"))


def _claimed_approval(make_account):
    """File a suspension and let the TJ approver claim its company approval; returns (approver, task id)."""
    return _claimed_approval_of(make_account("TJ", "87.35"))


def _claimed_approval_of(account):
    """File a suspension of `account` and let the TJ approver claim its company approval; returns (approver, task id)."""
    clerk, approver = user("tj_clerk"), user("tj_approver")
    with scoped(scope_for(clerk)):
        instance = start_process("suspension", account.id, clerk, {"reason": "vacant", "comment": ""})
    task_id = open_task(instance.id, "company_approval").id
    with scoped(scope_for(approver)):
        claim_task(task_id, approver)
    # A request has loaded its user and the user's company before the view runs.
    db.session.refresh(approver)
    assert approver.company.code == "TJ"
    return approver, task_id


def _complete_recording(task_id, approver, values=None):
    """Complete the task; returns (SQL statements sent, number of flushes that wrote rows)."""
    sent, flushes = [], []

    def record_statement(connection, cursor, statement, *args):
        sent.append(" ".join(statement.split()))

    def record_flush(session, flush_context):
        flushes.append(1)

    sa.event.listen(db.engine, "before_cursor_execute", record_statement)
    sa.event.listen(Session, "after_flush", record_flush)
    try:
        with scoped(scope_for(approver)):
            complete_task(task_id, approver, values or {"decision": "approve", "comment": "同意"})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record_statement)
        sa.event.remove(Session, "after_flush", record_flush)
    # The tenant scope's set_config calls are not the step's own statements.
    return [statement for statement in sent if "set_config" not in statement], len(flushes)


def test_approval_statement_count(demo, make_account):
    approver, task_id = _claimed_approval(make_account)
    sent, _flushes = _complete_recording(task_id, approver)

    dialect = db.engine.dialect.name
    assert len(sent) <= MAX_STATEMENTS[dialect], "\n".join(sent)
    # The current season, the line posted under the step's key and the receivable come in one read.
    season_reads = [statement for statement in sent if statement.startswith("SELECT") and "FROM season" in statement]
    assert len(season_reads) == 1, season_reads
    assert "ledger_entry" in season_reads[0]
    season_total_writes = [statement for statement in sent if "INTO hq_company_season_total" in statement]
    assert len(season_total_writes) == 1
    if dialect == "postgresql":
        # The account balance and the company season total are one statement.
        assert "INTO hq_account_season_balance" in season_total_writes[0]
    # The group's money rule and the account's dated terms come with the season read.
    assert [statement for statement in sent if 'FROM "group"' in statement and "FROM season" not in statement] == []
    assert [statement for statement in sent if "FROM account_terms" in statement and "FROM season" not in statement] == []
    # The instance's waiting timers come with its row lock.
    assert [statement for statement in sent if statement.startswith("SELECT process_timer.")] == []


def test_approval_rounds_by_group_rule(demo, make_account):
    group = db.session.scalar(sa.select(Group).filter_by(code="NHG"))
    set_group_precision(group, Decimal("1"), "half_up")
    db.session.commit()
    # TJ bills residential heat at 25.00 yuan/m² and a suspension at 0.20 of it. The full fee of
    # 87.33 m² is 2183.25 and rounds to 2183; the suspended fee of 436.65 rounds to 437.
    account = make_account("TJ", "87.33")
    assert season_receivable(account.id, _season_id(demo)) == Decimal("2183")
    approver, task_id = _claimed_approval_of(account)

    _complete_recording(task_id, approver)

    line = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "rerate"))
    assert line.amount == Decimal("437") - Decimal("2183")
    assert season_receivable(account.id, _season_id(demo)) == Decimal("437")


def test_approval_rerates_with_dated_terms(demo, make_account):
    account = make_account("TJ", "87.35")
    season = db.session.get(Season, _season_id(demo))
    # 100 m² until 2025-12-31, then the 87.35 m² that the account row carries.
    for effective_from, area in ((date(2025, 1, 1), Decimal("100")), (date(2026, 1, 1), Decimal("87.35"))):
        db.session.add(AccountTerms(
            company_id=account.company_id, account_id=account.id, effective_from=effective_from,
            building_area=area, user_type="residential",
        ))
    db.session.commit()
    approver, task_id = _claimed_approval_of(account)

    sent, _flushes = _complete_recording(task_id, approver)

    assert [statement for statement in sent if "FROM account_terms" in statement and "FROM season" not in statement] != []
    # Suspended at 0.20 of 25.00 yuan/m²: 500.00 for 100 m² over 2025-11-15..2025-12-31
    # (47 days) and 436.75 for 87.35 m² over 2026-01-01..2026-03-15 (74 days), each prorated
    # over the season's statutory days and rounded to the fen. The receivable before was the
    # whole season's 2183.75, billed before the terms rows existed.
    days = Decimal(season.statutory_days)
    first = (Decimal("500.00") * 47 / days).quantize(Decimal("0.01"))
    second = (Decimal("436.75") * 74 / days).quantize(Decimal("0.01"))
    line = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "rerate"))
    assert line.amount == first + second - Decimal("2183.75")
    assert line.amount != Decimal("436.75") - Decimal("2183.75")


def test_valve_task_statement_count(demo, make_account):
    approver, task_id = _claimed_approval(make_account)
    instance_id = db.session.get(HumanTask, task_id).instance_id
    _complete_recording(task_id, approver)
    field = user("tj_field")
    valve_task_id = open_task(instance_id, "valve_close").id
    with scoped(scope_for(field)):
        claim_task(valve_task_id, field)
    db.session.refresh(field)
    assert field.company.code == "TJ"

    sent, _flushes = _complete_recording(valve_task_id, field, VALVE_RESULT)

    dialect = db.engine.dialect.name
    assert len(sent) <= MAX_VALVE_STATEMENTS[dialect], "\n".join(sent)
    # The valve history's neighbours come in one read, the community from the locked account's
    # building, and the finished event reuses the locked account.
    assert len([statement for statement in sent if statement.startswith("SELECT") and "FROM valve_change" in statement]) == 1
    assert [statement for statement in sent if statement.startswith("SELECT building.community_id")] == []
    assert len([statement for statement in sent if statement.startswith("SELECT") and "FROM account" in statement]) == 1
    db.session.expire_all()
    change = db.session.scalar(sa.select(ValveChange).where(ValveChange.cause_type == "field_task", ValveChange.cause_id == valve_task_id))
    assert change.state == "sealed"
    assert change.ended_at is None


def test_approval_flushes_twice(demo, make_account):
    approver, task_id = _claimed_approval(make_account)
    _sent, flushes = _complete_recording(task_id, approver)

    # The re-rating's ledger line, then everything else of the step in the save's flush.
    assert flushes == 2
    db.session.expire_all()
    task = db.session.get(HumanTask, task_id)
    assert task.status == "completed"
    assert task.decision == "approve"
    valve_task = open_task(task.instance_id, "valve_close")
    assert valve_task is not None
    assert valve_task.due_at is not None
    steps = db.session.scalar(sa.select(StepDailyTotal.completed).where(StepDailyTotal.task_spec_name == "company_approval"))
    assert steps == 1


def test_approval_updates_season_totals(demo, make_account):
    approver, task_id = _claimed_approval(make_account)
    account_id = db.session.get(HumanTask, task_id).account_id
    before = db.session.scalar(sa.select(CompanySeasonTotal.receivable).where(CompanySeasonTotal.company_id == demo["TJ"].id))
    balance_before = db.session.scalar(
        sa.select(AccountSeasonBalance.receivable).where(AccountSeasonBalance.account_id == account_id)
    )

    _complete_recording(task_id, approver)

    db.session.expire_all()
    balance_after = db.session.scalar(
        sa.select(AccountSeasonBalance.receivable).where(AccountSeasonBalance.account_id == account_id)
    )
    after = db.session.scalar(sa.select(CompanySeasonTotal.receivable).where(CompanySeasonTotal.company_id == demo["TJ"].id))
    season_id = db.session.scalar(sa.select(AccountSeasonBalance.season_id).where(AccountSeasonBalance.account_id == account_id))
    assert balance_after == season_receivable(account_id, season_id)
    assert balance_after < balance_before
    assert after - before == balance_after - balance_before


def _timing_reads(sent):
    return [statement for statement in sent if "FROM timer_setting" in statement]


def test_second_approval_reuses_timer_settings(demo, make_account):
    approver, first_task = _claimed_approval(make_account)
    _complete_recording(first_task, approver)
    approver, second_task = _claimed_approval(make_account)

    sent, _flushes = _complete_recording(second_task, approver)

    # The company's timer settings did not change, so this process's copy of them serves.
    assert _timing_reads(sent) == []
    assert len(sent) <= MAX_STATEMENTS[db.engine.dialect.name] - 1, "\n".join(sent)
    instance_id = db.session.get(HumanTask, second_task).instance_id
    db.session.expire_all()
    assert open_task(instance_id, "valve_close").due_at is not None


def test_timer_setting_edit_reaches_next_step(demo, make_account):
    approver, first_task = _claimed_approval(make_account)
    _complete_recording(first_task, approver)
    tj = demo["TJ"].id
    stamp = db.session.scalar(sa.select(Company.timing_stamp).where(Company.id == tj))
    row = db.session.scalar(sa.select(TimerSetting).filter_by(company_id=tj, timer_key="task_due"))
    if row is None:
        db.session.add(TimerSetting(company_id=tj, timer_key="task_due", amount=40, unit="days"))
    else:
        row.amount, row.unit = 40, "days"
    db.session.commit()
    assert db.session.scalar(sa.select(Company.timing_stamp).where(Company.id == tj)) != stamp
    approver, second_task = _claimed_approval(make_account)

    before = datetime.now(UTC)
    sent, _flushes = _complete_recording(second_task, approver)

    assert len(_timing_reads(sent)) == 1
    instance_id = db.session.get(HumanTask, second_task).instance_id
    db.session.expire_all()
    due = open_task(instance_id, "valve_close").due_at
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    assert before + timedelta(days=40) <= due <= datetime.now(UTC) + timedelta(days=40)


def test_calendar_edit_renews_timing_stamp(demo):
    tj = demo["TJ"].id
    admin = user("tj_admin")

    def stamp():
        return db.session.scalar(sa.select(Company.timing_stamp).where(Company.id == tj))

    first = stamp()
    save_day(tj, {"day": "2031-05-06", "kind": "holiday", "name": "测试假日"}, admin)
    db.session.commit()
    second = stamp()
    delete_day(tj, "2031-05-06", admin)
    db.session.commit()
    third = stamp()
    db.session.execute(sa.update(TimerSetting).where(TimerSetting.company_id == tj).values(amount=TimerSetting.amount))
    db.session.commit()

    assert first != ""
    assert second != first
    assert third != second
    assert stamp() != third


def _tariff_reads(sent):
    return [statement for statement in sent if statement.startswith("SELECT") and "FROM tariff" in statement]


def _role_reads(sent):
    return [statement for statement in sent if statement.startswith("SELECT") and "FROM role" in statement]


def test_second_approval_reuses_tariffs_and_roles(demo, make_account):
    approver, first_task = _claimed_approval(make_account)
    _complete_recording(first_task, approver)
    account = make_account("TJ", "87.35")
    approver, second_task = _claimed_approval_of(account)

    sent, _flushes = _complete_recording(second_task, approver)

    # Neither the tariffs nor the approver's roles changed, so this process's copies serve.
    assert len(sent) <= MAX_WARM_STATEMENTS[db.engine.dialect.name], "\n".join(sent)
    assert _tariff_reads(sent) == []
    assert _role_reads(sent) == []
    # Suspended at 0.20 of 25.00 yuan/m² after the full season's 2183.75.
    line = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "rerate"))
    assert line.amount == Decimal("436.75") - Decimal("2183.75")


def _tariff_stamp(company_id):
    return db.session.scalar(sa.select(Company.tariff_stamp).where(Company.id == company_id))


def test_tariff_price_edit_reaches_next_step(demo, make_account):
    approver, first_task = _claimed_approval(make_account)
    _complete_recording(first_task, approver)
    account = make_account("TJ", "87.35")
    approver, second_task = _claimed_approval_of(account)
    tj = demo["TJ"].id
    stamp = _tariff_stamp(tj)
    tariff = db.session.scalar(sa.select(Tariff).where(Tariff.company_id == tj, Tariff.season_id == _season_id(demo)))
    price = db.session.scalar(
        sa.select(TariffPrice).filter_by(tariff_id=tariff.id, category="residential", heat_source_kind="")
    )
    price.unit_price = Decimal("30.00")
    tariff.suspension_ratio = Decimal("0.25")
    db.session.commit()
    assert _tariff_stamp(tj) != stamp

    sent, _flushes = _complete_recording(second_task, approver)

    assert len(_tariff_reads(sent)) == 1
    # Suspended at 0.25 of 30.00 yuan/m² of 87.35 m², after the 2183.75 billed at 25.00.
    line = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "rerate"))
    assert line.amount == Decimal("655.13") - Decimal("2183.75")


def test_tariff_version_added_reaches_next_step(demo, make_account):
    approver, first_task = _claimed_approval(make_account)
    _complete_recording(first_task, approver)
    account = make_account("TJ", "87.35")
    approver, second_task = _claimed_approval_of(account)
    tj = demo["TJ"].id
    season = db.session.get(Season, _season_id(demo))
    current = db.session.scalar(sa.select(Tariff).where(Tariff.company_id == tj, Tariff.season_id == season.id))
    stamp = _tariff_stamp(tj)
    # A version in force from 2026-01-01 with a suspension ratio of 0.50.
    added = Tariff(
        company_id=tj, season_id=season.id, effective_from=date(2026, 1, 1), suspension_ratio=Decimal("0.50"),
        late_fee_starts_after=current.late_fee_starts_after, late_fee_rate_per_day=current.late_fee_rate_per_day,
        late_fee_stops_after=current.late_fee_stops_after,
    )
    db.session.add(added)
    db.session.flush()
    for price in current.prices:
        db.session.add(TariffPrice(
            company_id=tj, tariff_id=added.id, category=price.category, heat_source_kind=price.heat_source_kind,
            unit_price=price.unit_price,
        ))
    db.session.commit()
    assert _tariff_stamp(tj) != stamp

    sent, _flushes = _complete_recording(second_task, approver)

    assert len(_tariff_reads(sent)) == 1
    # 0.20 of 2183.75 for 2025-11-15..2025-12-31 (47 days), then 0.50 of it for
    # 2026-01-01..2026-03-15 (74 days), each prorated over the season's statutory days.
    days = Decimal(season.statutory_days)
    first = (Decimal("436.75") * 47 / days).quantize(Decimal("0.01"))
    second = (Decimal("1091.875") * 74 / days).quantize(Decimal("0.01"))
    line = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "rerate"))
    assert line.amount == first + second - Decimal("2183.75")


def test_tariff_bulk_update_renews_stamp(demo):
    tj = demo["TJ"].id
    stamp = _tariff_stamp(tj)
    db.session.execute(sa.update(TariffPrice).where(TariffPrice.company_id == tj).values(unit_price=TariffPrice.unit_price))
    db.session.commit()

    assert stamp != ""
    assert _tariff_stamp(tj) != stamp


def _rights_stamp(company_id):
    return db.session.scalar(sa.select(Company.rights_stamp).where(Company.id == company_id))


def test_role_permission_edit_reaches_next_step(demo, make_account):
    approver, first_task = _claimed_approval(make_account)
    _complete_recording(first_task, approver)
    approver, second_task = _claimed_approval(make_account)
    tj = demo["TJ"].id
    stamp = _rights_stamp(tj)
    role = db.session.scalar(sa.select(Role).filter_by(company_id=tj, code="company_approver"))
    role.permissions = [permission for permission in role.permissions if permission != "process.approve"]
    db.session.commit()
    assert _rights_stamp(tj) != stamp

    with pytest.raises(AccessError):
        _complete_recording(second_task, approver)

    db.session.expire_all()
    assert db.session.get(HumanTask, second_task).status == "open"


def test_role_removal_reaches_next_step(demo, make_account):
    approver, first_task = _claimed_approval(make_account)
    _complete_recording(first_task, approver)
    approver, second_task = _claimed_approval(make_account)
    tj = demo["TJ"].id
    stamp = _rights_stamp(tj)
    approver_role = db.session.scalar(sa.select(Role.id).filter_by(company_id=tj, code="company_approver"))
    kept_roles = [
        role_id for role_id in db.session.scalars(sa.select(UserRole.role_id).filter_by(user_id=approver.id))
        if role_id != approver_role
    ]
    admin = user("tj_admin")
    with scoped(scope_for(admin)):
        set_user_roles(admin, approver, kept_roles)
    assert _rights_stamp(tj) != stamp

    with pytest.raises(AccessError):
        _complete_recording(second_task, approver)

    db.session.expire_all()
    assert db.session.get(HumanTask, second_task).status == "open"
