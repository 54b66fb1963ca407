"""Keeping the HQ daily totals in step with the ledger.

Every flush that inserts ledger lines adds them to the daily totals in the same
transaction, so a committed payment or bill is in the dashboards at once and a rolled
back one never is. `rebuild_daily_totals` recomputes both tables from the ledger; it is
the repair path (`flask heat hq-rebuild-totals`) and what a bulk load that bypasses the
ORM must run afterwards. Human tasks add to the per-step totals in the flush that sets
their completion time, and `rebuild_step_totals` recomputes those.

The same flush adds a season's receivable and received lines to the account's season
balance and to the company's season total (app/hq/models.py). The capped received total
changes by the capped received of the account after the line less the one before it, and
the balance upsert returns the account's figures after the line. On PostgreSQL one
statement does both for up to SEASON_BATCH accounts. `rebuild_season_totals`
recomputes both tables, and the nightly invariant check (app/billing/invariants.py)
compares them with the ledger. Accounts added in a flush are counted per company the same
way, `rebuild_account_counts` recounts them, and the nightly check compares the counts
with the accounts.

The upsert locks the row of a company, day and kind until commit, so two cashiers of one
company posting the same kind on the same day wait for each other's commit on that row.
Every receivable or received line also locks its company's season total row until commit,
so all postings of one company and season wait for each other there.
"""

import functools
import re
from collections import Counter, defaultdict

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from app.billing.models import RECEIVABLE_KINDS, RECEIVED_KINDS, LedgerEntry
from app.clock import local_time
from app.hq.models import (
    NO_SEASON, AccountSeasonBalance, CommunityDailyTotal, CompanyAccountCount, CompanyDailyTotal, CompanySeasonTotal,
    StepDailyTotal,
)
from app.money import ZERO
from app.network.models import Account, Building, Unit
from app.processes.models import HumanTask


def _insert(connection, table):
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _upsert_sql(table, keys, sums, replaced=(), prefix=""):
    """Return INSERT ... ON CONFLICT (keys) DO UPDATE text that adds the `sums` columns and overwrites `replaced`.

    Bind parameters are named `prefix` + column. PostgreSQL and SQLite (3.24 and later)
    both accept this form.
    """
    columns = [*keys, *sums, *replaced]
    updates = [f"{column} = {table.name}.{column} + excluded.{column}" for column in sums]
    updates += [f"{column} = excluded.{column}" for column in replaced]
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(':' + prefix + column for column in columns)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}"
    )


def _typed_text(sql, *typed_tables):
    """Wrap `sql` in text() whose bind parameters carry the types of the columns they fill, given as (table, prefix) pairs."""
    names = set(re.findall(r":(\w+)", sql))
    parameters = [
        sa.bindparam(prefix + column.name, type_=column.type)
        for table, prefix in typed_tables for column in table.columns if prefix + column.name in names
    ]
    return sa.text(sql).bindparams(*parameters)


# The upserts are text() statements because SQLAlchemy 2.0 does not cache the compiled form of
# its PostgreSQL and SQLite INSERT ... ON CONFLICT constructs (their Insert sets
# inherit_cache = False), and compiling them again cost more than sending them.
COMMUNITY_KEYS = ["company_id", "season_id", "community_id", "category", "day", "kind"]
COMPANY_KEYS = ["company_id", "season_id", "category", "day", "kind"]
STEP_KEYS = ["company_id", "process_type", "task_spec_name", "day"]
_COMMUNITY = CommunityDailyTotal.__table__
_COMPANY = CompanyDailyTotal.__table__
_STEP = StepDailyTotal.__table__
COMMUNITY_UPSERT = _typed_text(_upsert_sql(_COMMUNITY, COMMUNITY_KEYS, ["amount", "entries"]), (_COMMUNITY, ""))
COMPANY_UPSERT = _typed_text(_upsert_sql(_COMPANY, COMPANY_KEYS, ["amount", "entries"]), (_COMPANY, ""))
STEP_UPSERT = _typed_text(_upsert_sql(_STEP, STEP_KEYS, ["completed", "wait_seconds"], ["title"]), (_STEP, ""))
_SEASON = CompanySeasonTotal.__table__
SEASON_TOTAL_UPSERT = _typed_text(_upsert_sql(_SEASON, ["company_id", "season_id"], ["receivable", "received"]), (_SEASON, ""))
# One row of each, for PostgreSQL: the company upsert rides along as a data-modifying CTE
# that the main statement does not read. PostgreSQL 15 runs such a CTE to completion after
# the main statement (ExecPostprocessPlan), so the community row is locked first, as in
# the two separate statements. NOTE: the manual calls this order unpredictable, so a
# later release could invert it against a concurrent flush of several rows.
BOTH_UPSERT = _typed_text(
    f"WITH company_totals AS ({_upsert_sql(_COMPANY, COMPANY_KEYS, ['amount', 'entries'], prefix='company_')}) "
    + _upsert_sql(_COMMUNITY, COMMUNITY_KEYS, ["amount", "entries"]),
    (_COMMUNITY, ""), (_COMPANY, "company_"),
)


def _upsert_both(connection, community_rows, company_rows):
    """Add to the community totals, then to the company totals; one statement on PostgreSQL when each has one row."""
    if connection.dialect.name == "postgresql" and len(community_rows) == 1 and len(company_rows) == 1:
        parameters = {**community_rows[0], **{f"company_{name}": value for name, value in company_rows[0].items()}}
        connection.execute(BOTH_UPSERT, parameters)
        return
    if community_rows:
        connection.execute(COMMUNITY_UPSERT, community_rows)
    if company_rows:
        connection.execute(COMPANY_UPSERT, company_rows)


def _loaded_account_facts(session, account_ids):
    """Map account id -> (community id, user type) for accounts loaded in the session together with their unit and building."""
    facts = {}
    for account_id in account_ids:
        account = session.identity_map.get(identity_key(Account, account_id))
        unit = account.__dict__.get("unit") if account is not None else None
        building = unit.__dict__.get("building") if unit is not None else None
        if building is None or "user_type" not in account.__dict__ or "community_id" not in building.__dict__:
            continue
        facts[account_id] = (building.community_id, account.user_type)
    return facts


def _account_facts(connection, account_ids, session=None):
    """Map account id -> (community id, user type), taken from the session where loaded, else read without the tenant scope."""
    facts = _loaded_account_facts(session, account_ids) if session is not None else {}
    missing = set(account_ids) - set(facts)
    if not missing:
        return facts
    rows = connection.execute(
        sa.select(Account.__table__.c.id, Building.__table__.c.community_id, Account.__table__.c.user_type)
        .select_from(Account.__table__.join(Unit.__table__, Unit.__table__.c.id == Account.__table__.c.unit_id)
                     .join(Building.__table__, Building.__table__.c.id == Unit.__table__.c.building_id))
        .where(Account.__table__.c.id.in_(sorted(missing)))
    )
    facts.update({account_id: (community_id, user_type) for account_id, community_id, user_type in rows})
    return facts


def add_entries(connection, entries, session=None):
    """Add ledger lines (objects with company_id, account_id, season_id, kind, amount, created_at) to the totals.

    `session` is the flushing session, whose loaded accounts spare the facts query.
    """
    entries = list(entries)
    if not entries:
        return
    facts = _account_facts(connection, {entry.account_id for entry in entries}, session)
    community = defaultdict(lambda: [0, 0])
    company = defaultdict(lambda: [0, 0])
    for entry in entries:
        community_id, category = facts[entry.account_id]
        day = local_time(entry.created_at).date()
        season_id = entry.season_id or NO_SEASON
        for totals, key in (
            (community, (entry.company_id, season_id, community_id, category, day, entry.kind)),
            (company, (entry.company_id, season_id, category, day, entry.kind)),
        ):
            totals[key][0] += entry.amount
            totals[key][1] += 1
    _upsert_totals(connection, community, company)


def add_charge_sums(connection, company_id, season_id, kind, created_at, sums):
    """Add lines of one company, season, kind and posting time, already summed, to the totals.

    `sums` contains (community id, category, amount, line count) tuples, as the set-based
    billing run computes them in SQL.
    """
    day = local_time(created_at).date()
    season_id = season_id or NO_SEASON
    community = defaultdict(lambda: [0, 0])
    company = defaultdict(lambda: [0, 0])
    for community_id, category, amount, count in sums:
        for totals, key in (
            (community, (company_id, season_id, community_id, category, day, kind)),
            (company, (company_id, season_id, category, day, kind)),
        ):
            totals[key][0] += amount
            totals[key][1] += count
    _upsert_totals(connection, community, company)


def _upsert_totals(connection, community, company):
    """Upsert {key: [amount, count]} of the community and company tables, community rows first."""
    # Sorted so that concurrent transactions take the row locks in the same order.
    _upsert_both(
        connection,
        [dict(zip(COMMUNITY_KEYS, key), amount=amount, entries=count) for key, (amount, count) in sorted(community.items())],
        [dict(zip(COMPANY_KEYS, key), amount=amount, entries=count) for key, (amount, count) in sorted(company.items())],
    )


def add_completed_tasks(connection, tasks):
    """Add human tasks that were just completed to the per-step daily totals."""
    totals = {}
    for task in tasks:
        completed_at = local_time(task.completed_at)
        key = (task.company_id, task.process_type, task.task_spec_name, completed_at.date())
        count, seconds, _title = totals.get(key, (0, 0, ""))
        waited = round((completed_at - local_time(task.created_at)).total_seconds())
        totals[key] = (count + 1, seconds + waited, task.title)
    rows = [dict(zip(STEP_KEYS, key), completed=count, wait_seconds=seconds, title=title)
            for key, (count, seconds, title) in sorted(totals.items())]
    if rows:
        connection.execute(STEP_UPSERT, rows)


def _just_completed(task):
    """True when this flush set the task's completion time."""
    if task.completed_at is None:
        return False
    history = sa.inspect(task).attrs.completed_at.history
    return bool(history.added) and not any(old is not None for old in history.deleted)


def capped_received(receivable, received):
    """Return what an account's `received` counts as collected: at most its receivable, nothing when that is 0 or less."""
    if receivable <= 0:
        return ZERO
    return min(received, receivable)


# Balance rows per upsert statement: 5 parameters each keeps a statement well below
# SQLite's 32,766 bound parameters.
SEASON_BATCH = 1000
_BALANCE = AccountSeasonBalance.__table__
BALANCE_KEYS = ["company_id", "season_id", "account_id"]
_BALANCE_COLUMNS = [*BALANCE_KEYS, "receivable", "received"]


def _capped_sql(receivable, received):
    """Return the SQL form of capped_received over two SQL expressions."""
    return f"CASE WHEN {receivable} <= 0 THEN 0 WHEN {received} < {receivable} THEN {received} ELSE {receivable} END"


@functools.lru_cache(maxsize=16)
def _season_upsert(row_count, combined):
    """Return the cached text statement that adds `row_count` rows to the account season balances.

    Row i binds company_id_i, season_id_i, account_id_i, receivable_i and received_i. With
    `combined` (PostgreSQL) the statement also adds the balances' change to the company
    season totals and returns nothing. The totals upsert reads the balance upsert's
    RETURNING, so the balance rows are locked before the total rows. Otherwise it returns
    each balance row after the addition, for add_to_season_totals to compute the change.
    The text is built once per row count, because SQLAlchemy compiles its dialect
    INSERT ... ON CONFLICT again at every execution.
    """
    values = ", ".join(
        "(" + ", ".join(f":{column}_{index}" for column in _BALANCE_COLUMNS) + ")" for index in range(row_count)
    )
    columns = ", ".join(_BALANCE_COLUMNS)
    balance_update = (
        f"ON CONFLICT ({', '.join(BALANCE_KEYS)}) DO UPDATE SET "
        f"receivable = {_BALANCE.name}.receivable + excluded.receivable, received = {_BALANCE.name}.received + excluded.received "
        f"RETURNING {columns}"
    )
    if combined:
        after = _capped_sql("balance.receivable", "balance.received")
        before = _capped_sql("(balance.receivable - added.receivable)", "(balance.received - added.received)")
        keys = " AND ".join(f"added.{key} = balance.{key}" for key in BALANCE_KEYS)
        sql = (
            f"WITH added ({columns}) AS (VALUES {values}), "
            f"balance AS (INSERT INTO {_BALANCE.name} ({columns}) SELECT {columns} FROM added {balance_update}) "
            f"INSERT INTO {_SEASON.name} (company_id, season_id, receivable, received) "
            f"SELECT balance.company_id, balance.season_id, sum(added.receivable), sum({after} - {before}) "
            f"FROM balance JOIN added ON {keys} "
            "GROUP BY balance.company_id, balance.season_id ORDER BY balance.company_id, balance.season_id "
            f"ON CONFLICT (company_id, season_id) DO UPDATE SET "
            f"receivable = {_SEASON.name}.receivable + excluded.receivable, received = {_SEASON.name}.received + excluded.received"
        )
    else:
        sql = f"INSERT INTO {_BALANCE.name} ({columns}) VALUES {values} {balance_update}"
    parameters = [
        sa.bindparam(f"{column}_{index}", type_=_BALANCE.c[column].type)
        for index in range(row_count) for column in _BALANCE_COLUMNS
    ]
    statement = sa.text(sql).bindparams(*parameters)
    if combined:
        return statement
    # Typed result columns, so that SQLite's stored amounts come back as Decimal.
    return statement.columns(*(_BALANCE.c[column] for column in _BALANCE_COLUMNS))


def add_to_season_totals(connection, entries):
    """Add the season's receivable and received lines among `entries` to the account balances and company season totals."""
    changes = defaultdict(lambda: [ZERO, ZERO])
    for entry in entries:
        if entry.season_id is None:
            continue
        if entry.kind in RECEIVABLE_KINDS:
            changes[(entry.company_id, entry.season_id, entry.account_id)][0] += entry.amount
        elif entry.kind in RECEIVED_KINDS:
            changes[(entry.company_id, entry.season_id, entry.account_id)][1] -= entry.amount
    if not changes:
        return

    # Sorted so that concurrent transactions take the row locks in the same order.
    ordered = sorted(changes.items())
    # One statement per batch would lock a company's total row before the next batch's
    # balance rows, so more than one batch takes the total rows once, after all balances.
    combined = connection.dialect.name == "postgresql" and len(ordered) <= SEASON_BATCH
    company = defaultdict(lambda: [ZERO, ZERO])
    for start in range(0, len(ordered), SEASON_BATCH):
        batch = ordered[start:start + SEASON_BATCH]
        parameters = {}
        for index, (key, (receivable, received)) in enumerate(batch):
            for column, value in zip(_BALANCE_COLUMNS, (*key, receivable, received)):
                parameters[f"{column}_{index}"] = value
        result = connection.execute(_season_upsert(len(batch), combined), parameters)
        if combined:
            continue
        for company_id, season_id, account_id, receivable, received in result:
            added_receivable, added_received = changes[(company_id, season_id, account_id)]
            before = capped_received(receivable - added_receivable, received - added_received)
            total = company[(company_id, season_id)]
            total[0] += added_receivable
            total[1] += capped_received(receivable, received) - before

    if company:
        connection.execute(SEASON_TOTAL_UPSERT, [
            {"company_id": company_id, "season_id": season_id, "receivable": receivable, "received": received}
            for (company_id, season_id), (receivable, received) in sorted(company.items())
        ])


def add_account_counts(connection, added):
    """Add {company id: accounts added} to the account counts."""
    # NOTE: accounts inserted past the session's flush (Core or ORM bulk inserts) stay
    # uncounted until `flask heat hq-rebuild-totals`, and the nightly check reports them.
    table = CompanyAccountCount.__table__
    statement = _insert(connection, table)
    statement = statement.on_conflict_do_update(
        index_elements=["company_id"], set_={"accounts": table.c.accounts + statement.excluded.accounts},
    )
    connection.execute(statement, [
        {"company_id": company_id, "accounts": count} for company_id, count in sorted(added.items()) if count
    ])


@event.listens_for(Session, "after_flush")
def _add_flushed_rows(session, flush_context):
    entries = [obj for obj in session.new if isinstance(obj, LedgerEntry)]
    if entries:
        add_entries(session.connection(), entries, session)
        add_to_season_totals(session.connection(), entries)
    added = Counter(obj.company_id for obj in session.new if isinstance(obj, Account))
    added.subtract(obj.company_id for obj in session.deleted if isinstance(obj, Account))
    if any(added.values()):
        add_account_counts(session.connection(), added)
    tasks = [obj for obj in (*session.new, *session.dirty) if isinstance(obj, HumanTask) and _just_completed(obj)]
    if tasks:
        add_completed_tasks(session.connection(), tasks)


def _local_day(connection, column):
    if connection.dialect.name == "postgresql":
        return sa.cast(sa.func.timezone("Asia/Shanghai", column), sa.Date)
    # SQLite keeps naive UTC text; China has had no daylight saving time since 1991.
    return sa.func.date(column, "+8 hours")


def epoch_seconds(dialect_name, column):
    """SQL for a timestamp column as seconds since 1970 (SQLite stores naive UTC text)."""
    if dialect_name == "postgresql":
        return sa.extract("epoch", column)
    return (sa.func.julianday(column) - 2440587.5) * 86400


def rebuild_step_totals(connection):
    """Recompute the per-step daily totals from the completed human tasks; returns the row count."""
    task = HumanTask.__table__
    day = _local_day(connection, task.c.completed_at).label("day")
    waited = epoch_seconds(connection.dialect.name, task.c.completed_at) - epoch_seconds(connection.dialect.name, task.c.created_at)
    grouped = (
        sa.select(task.c.company_id, task.c.process_type, task.c.task_spec_name, sa.func.max(task.c.title), day,
                  sa.func.count(), sa.cast(sa.func.sum(sa.func.round(waited)), sa.BigInteger))
        .where(task.c.completed_at.is_not(None))
        .group_by(task.c.company_id, task.c.process_type, task.c.task_spec_name, day)
    )
    table = StepDailyTotal.__table__
    connection.execute(table.delete())
    connection.execute(table.insert().from_select(
        ["company_id", "process_type", "task_spec_name", "title", "day", "completed", "wait_seconds"], grouped
    ))
    return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def rebuild_daily_totals(connection):
    """Recompute both daily-total tables from the whole ledger; returns the number of community rows."""
    ledger = LedgerEntry.__table__
    account = Account.__table__
    unit = Unit.__table__
    building = Building.__table__
    day = _local_day(connection, ledger.c.created_at).label("day")
    season_id = sa.func.coalesce(ledger.c.season_id, NO_SEASON).label("season_id")
    grouped = (
        sa.select(
            ledger.c.company_id, season_id, building.c.community_id, account.c.user_type.label("category"), day, ledger.c.kind,
            sa.func.sum(ledger.c.amount).label("amount"), sa.func.count().label("entries"),
        )
        .select_from(ledger.join(account, account.c.id == ledger.c.account_id)
                     .join(unit, unit.c.id == account.c.unit_id).join(building, building.c.id == unit.c.building_id))
        .group_by(ledger.c.company_id, season_id, building.c.community_id, account.c.user_type, day, ledger.c.kind)
    )
    community_table = CommunityDailyTotal.__table__
    company_table = CompanyDailyTotal.__table__
    connection.execute(community_table.delete())
    connection.execute(company_table.delete())
    columns = ["company_id", "season_id", "community_id", "category", "day", "kind", "amount", "entries"]
    connection.execute(community_table.insert().from_select(columns, grouped))
    rolled_up = (
        sa.select(
            community_table.c.company_id, community_table.c.season_id, community_table.c.category, community_table.c.day,
            community_table.c.kind, sa.func.sum(community_table.c.amount), sa.func.sum(community_table.c.entries),
        )
        .group_by(community_table.c.company_id, community_table.c.season_id, community_table.c.category,
                  community_table.c.day, community_table.c.kind)
    )
    connection.execute(company_table.insert().from_select(
        ["company_id", "season_id", "category", "day", "kind", "amount", "entries"], rolled_up
    ))
    return connection.execute(sa.select(sa.func.count()).select_from(community_table)).scalar_one()


def rebuild_season_totals(connection):
    """Recompute the account season balances and company season totals from the ledger; returns the number of balance rows."""
    ledger = LedgerEntry.__table__
    balance = AccountSeasonBalance.__table__
    totals = CompanySeasonTotal.__table__
    receivable = sa.func.sum(sa.case((ledger.c.kind.in_(RECEIVABLE_KINDS), ledger.c.amount), else_=0))
    received = -sa.func.sum(sa.case((ledger.c.kind.in_(RECEIVED_KINDS), ledger.c.amount), else_=0))
    per_account = (
        sa.select(ledger.c.company_id, ledger.c.season_id, ledger.c.account_id, receivable, received)
        .where(ledger.c.season_id.is_not(None), ledger.c.kind.in_(RECEIVABLE_KINDS + RECEIVED_KINDS))
        .group_by(ledger.c.company_id, ledger.c.season_id, ledger.c.account_id)
    )
    connection.execute(totals.delete())
    connection.execute(balance.delete())
    connection.execute(balance.insert().from_select(
        ["company_id", "season_id", "account_id", "receivable", "received"], per_account
    ))
    # The SQL form of capped_received.
    capped = sa.case(
        (balance.c.receivable <= 0, 0),
        (balance.c.received < balance.c.receivable, balance.c.received),
        else_=balance.c.receivable,
    )
    per_company = (
        sa.select(balance.c.company_id, balance.c.season_id, sa.func.sum(balance.c.receivable), sa.func.sum(capped))
        .group_by(balance.c.company_id, balance.c.season_id)
    )
    connection.execute(totals.insert().from_select(["company_id", "season_id", "receivable", "received"], per_company))
    return connection.execute(sa.select(sa.func.count()).select_from(balance)).scalar_one()


def rebuild_account_counts(connection):
    """Recount the accounts of every company; returns the number of companies with accounts."""
    account = Account.__table__
    table = CompanyAccountCount.__table__
    connection.execute(table.delete())
    connection.execute(table.insert().from_select(
        ["company_id", "accounts"], sa.select(account.c.company_id, sa.func.count()).group_by(account.c.company_id)
    ))
    return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
