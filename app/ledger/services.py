"""Store a parsed ledger: all rows or none, and the same file twice changes nothing."""

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale, gettext

from app.billing.models import LedgerEntry, memo_columns
from app.billing.seasons import POSTED_CHARGE_KINDS
from app.extensions import db
from app.hq.totals import add_account_counts, add_entries
from app.i18n import DEFAULT_LOCALE, M_, N_, Message, message_of
from app.ledger.models import LedgerValueMap
from app.ledger.parser import FIELD_LABELS, LedgerFileError, RowError, parse_ledger
from app.network.models import BILLING_METHODS, BILLING_STATUSES, USER_TYPES, Account, Building, Community, HeatSource, Station, Unit
from app.network.numbering import format_account_no
from app.network.valves import ValveChange, same_instant, utcnow
from app.org.models import Company
from app.tariffs.models import Season
from app.tenancy import TenantScopeError, current_scope

logger = logging.getLogger(__name__)


@dataclass
class ImportResult:
    """Outcome of one import: counts on success, or the row errors that rejected it."""

    filename: str
    data_rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list = field(default_factory=list)
    # RowErrors describing values the import changed, such as a trimmed legacy number.
    notices: list = field(default_factory=list)
    # Why the whole file was rejected: a Message (app.i18n), or plain text from older callers.
    file_error: object = ""

    @property
    def ok(self):
        return not self.errors and not self.file_error

    def summary(self):
        if self.file_error:
            return f"{self.filename}: rejected: {self.file_error}"
        if self.errors:
            rows = len({e.excel_row for e in self.errors})
            return f"{self.filename}: rejected, {len(self.errors)} errors in {rows} rows; nothing was stored."
        summary = (
            f"{self.filename}: {self.data_rows} accounts imported "
            f"({self.created} new, {self.updated} updated, {self.unchanged} unchanged)."
        )
        if self.notices:
            summary += f" {len(self.notices)} values were normalised; see the listed changes."
        return summary


# Notices kept with an import job. A file whose every legacy number had a trailing space
# would otherwise store one JSON entry per account; the count is stored in full.
MAX_STORED_NOTICES = 1000


def record_import(company, filename, content, result, user_id=None):
    """Keep a finished import (e.g. one run from the CLI) in the import history of its company."""
    from app.ledger.models import LedgerImport, utcnow

    job = LedgerImport(company_id=company.id, filename=filename, sha256=sha256_of(content), content=content,
                       created_by_id=user_id, finished_at=utcnow())
    apply_result(job, result)
    db.session.add(job)
    db.session.commit()
    return job


def apply_result(job, result):
    """Copy an ImportResult onto a LedgerImport row."""
    job.status = "succeeded" if result.ok else "rejected"
    job.data_rows = result.data_rows
    job.processed_rows = result.data_rows if result.ok else 0
    job.created_count, job.updated_count, job.unchanged_count = result.created, result.updated, result.unchanged
    job.errors = [e.as_dict() for e in result.errors]
    job.notices = [n.as_dict() for n in result.notices[:MAX_STORED_NOTICES]]
    job.notice_count = len(result.notices)
    if result.file_error:
        job.errors = [file_error_dict(result.file_error)]
    with force_locale(DEFAULT_LOCALE):
        job.summary = result.summary()


def file_error_dict(file_error):
    """Build the stored form of a file-level error: the Chinese `reason`, plus `reason_message` that pages translate."""
    with force_locale(DEFAULT_LOCALE):
        reason = str(file_error)
    stored = {"excel_row": None, "column": "", "value": "", "reason": reason}
    if isinstance(file_error, Message):
        stored["reason_message"] = file_error.as_data()
    return stored


def sha256_of(content):
    return hashlib.sha256(content).hexdigest()


def company_value_maps(company_id):
    """Return {field: {ledger text: code}} of a company's own ledger wording."""
    maps = {}
    for row in db.session.scalars(sa.select(LedgerValueMap).filter_by(company_id=company_id)):
        maps.setdefault(row.field, {})[row.ledger_text] = row.code
    return maps


def import_ledger(company, content, filename, user_id=None, progress=None):
    """Parse, validate and store a ledger for `company`; commit only when every row is valid.

    `progress(phase, done, total)` is called while rows are validated (phase "validating")
    and while they are stored ("storing"). Returns an ImportResult.
    """
    result = ImportResult(filename=filename)

    def validating(done, total):
        progress("validating", done, total)

    try:
        parsed = parse_ledger(
            content, max_rows=current_app.config.get("LEDGER_MAX_ROWS", 200_000), progress=validating if progress else None,
            value_maps=company_value_maps(company.id),
        )
    except LedgerFileError as error:
        result.file_error = message_of(error) or str(error)
        return result
    result.data_rows = parsed.data_rows
    result.notices = parsed.notices
    if parsed.errors:
        result.errors = parsed.errors
        return result
    if not parsed.rows:
        result.file_error = M_("台账只有表头，没有数据行；未导入任何数据。")
        return result
    stored = _StoredAccounts(company.id)
    numbers = _AccountNumbers(company)
    communities = {c.name: c.code for c in db.session.scalars(sa.select(Community).filter_by(company_id=company.id))}
    conflicts = [
        *_dwelling_conflicts(company, parsed, stored, communities, numbers),
        *_address_conflicts(company, parsed, stored, communities, numbers),
        *_moved_address_reused(parsed, stored, communities, numbers),
        *_billed_changes(company, parsed, stored, communities, numbers),
        *_arrears_changes(company, parsed, stored, communities, numbers),
    ]
    if conflicts:
        result.errors = conflicts
        return result

    try:
        _store(company, parsed, result, user_id, progress, stored, numbers)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    logger.info("Ledger %s imported into company %s: %s", filename, company.code, result.summary())
    return result


# Heat-source kinds that a source's name may state, as in 西山燃气锅炉房.
KNOWN_HEAT_SOURCE_KINDS = ("燃气锅炉", "燃煤锅炉", "燃油锅炉", "电锅炉", "热电联产")


def infer_heat_source_kind(name):
    """Kind named inside a heat source's name, for ledgers that have no 热源 sheet; else ''."""
    return next((kind for kind in KNOWN_HEAT_SOURCE_KINDS if kind in name), "")


class _NetworkCache:
    """Find or create heat sources, stations, communities, buildings and units of one company."""

    def __init__(self, company):
        self.company = company
        cid = company.id
        self.sources = {s.name: s for s in db.session.scalars(sa.select(HeatSource).filter_by(company_id=cid))}
        self.stations = {s.name: s for s in db.session.scalars(sa.select(Station).filter_by(company_id=cid))}
        self.communities = {c.name: c for c in db.session.scalars(sa.select(Community).filter_by(company_id=cid))}
        self.next_community = max((int(c.code) for c in self.communities.values()), default=0) + 1
        self.buildings = {
            (b.community_id, b.code): b for b in db.session.scalars(sa.select(Building).filter_by(company_id=cid))
        }
        # Keyed by (community id, building code, unit code), so a new building needs no id before its units.
        self.units = {
            (community_id, building_code, u.code): u
            for u, community_id, building_code in db.session.execute(
                sa.select(Unit, Building.community_id, Building.code)
                .join(Building, Unit.building_id == Building.id)
                .where(Unit.company_id == cid)
            )
        }

    def heat_source(self, name, kind=None):
        source = self.sources.get(name)
        if source is None:
            source = HeatSource(company_id=self.company.id, name=name, kind=kind or infer_heat_source_kind(name))
            db.session.add(source)
            self.sources[name] = source
        elif kind is not None and source.kind != kind:
            source.kind = kind
        return source

    def station(self, name, source_name):
        station = self.stations.get(name)
        source = self.heat_source(source_name) if source_name else None
        if station is None:
            station = Station(company_id=self.company.id, name=name, heat_source=source)
            db.session.add(station)
            self.stations[name] = station
        elif source is not None and station.heat_source is not source:
            station.heat_source = source
        return station

    def community(self, name):
        community = self.communities.get(name)
        if community is None:
            if self.next_community > 9999:
                raise LedgerFileError(M_("本公司小区已达 9999 个，4 位小区编码已用完。"))
            community = Community(company_id=self.company.id, name=name, code=f"{self.next_community:04d}")
            self.next_community += 1
            db.session.add(community)
            db.session.flush()
            self.communities[name] = community
        return community

    def unit(self, community, building_no, unit_no, has_lift):
        key = (community.id, f"{building_no:03d}")
        building = self.buildings.get(key)
        if building is None:
            building = Building(company_id=self.company.id, community_id=community.id, code=key[1], has_lift=has_lift)
            db.session.add(building)
            self.buildings[key] = building
        elif building.has_lift != has_lift:
            building.has_lift = has_lift
        unit_key = (*key, f"{unit_no:02d}")
        unit = self.units.get(unit_key)
        if unit is None:
            unit = Unit(company_id=self.company.id, building=building, code=unit_key[2])
            db.session.add(unit)
            self.units[unit_key] = unit
        return unit


# Account columns that an import writes from a row, compared with the stored values to tell an update from no change.
IMPORTED_COLUMNS = (
    "customer_name", "phone", "room", "building_area", "usable_area", "user_type", "billing_status", "billing_method",
    "note", "prior_arrears",
)
# Rows sent per INSERT or UPDATE executemany. Progress is reported after each batch of new accounts.
STORE_BATCH = 5000
# Account ids per IN list when reading or updating the valve history of stored accounts.
READ_BATCH = 5000


class _StoredAccounts:
    """A company's accounts as plain dicts, read in one query for the import checks and the store.

    Dicts in place of ORM objects keep 100,000 accounts out of the session's unit of work.
    """

    def __init__(self, company_id):
        table = Account.__table__
        columns = [table.c.id, table.c.account_no, table.c.legacy_no, table.c.unit_id, table.c.station_id, table.c.valve_state]
        columns += [table.c[name] for name in IMPORTED_COLUMNS]
        rows = db.session.execute(sa.select(*columns).where(table.c.company_id == company_id)).mappings()
        self.accounts = [dict(row) for row in rows]
        self.by_legacy = {a["legacy_no"]: a for a in self.accounts if a["legacy_no"]}
        self.by_number = {a["account_no"]: a for a in self.accounts}

    def match(self, legacy_no, account_no):
        """Return the stored account of a row: by legacy number, else by address; or None."""
        account = self.by_legacy.get(legacy_no) if legacy_no else None
        if account is None:
            account = self.by_number.get(account_no)
        return account


class _AccountNumbers:
    """Unified account numbers of one company, with each community's checked prefix built once."""

    def __init__(self, company):
        self.company_number = company.number
        self.prefixes = {}

    def format(self, community_code, building, unit, room):
        prefix = self.prefixes.get(community_code)
        if prefix is None:
            # format_account_no checks the company number and the community code. The parser
            # has already bounded building (1-999), unit (1-99) and room (1-9999).
            prefix = format_account_no(self.company_number, community_code, 1, 1, 1)[:6]
            self.prefixes[community_code] = prefix
        return f"{prefix}{building:03d}{unit:02d}{room:04d}"


def _dwelling_conflicts(company, parsed, stored, communities, numbers):
    """Rows whose legacy number belongs to one stored account but whose address to another."""
    legacy_by_number = {a["account_no"]: a["legacy_no"] for a in stored.accounts}
    errors = []
    for row in parsed.rows:
        code = communities.get(row.community)
        if code is None or not row.legacy_no or row.legacy_no not in stored.by_legacy:
            continue
        account_no = numbers.format(code, row.building, row.unit, row.room)
        owner_of_legacy = stored.by_legacy[row.legacy_no]["account_no"]
        if account_no != owner_of_legacy and account_no in legacy_by_number:
            errors.append(RowError.build(
                row.excel_row, parsed.columns.get("room", "房号"), str(row.room),
                N_("该房屋已是用户 %(account_no)s（原编号 %(legacy_no)s），而原编号 %(row_legacy_no)s 属于用户 %(other_account_no)s；请核对原编号或地址"),
                account_no=account_no, legacy_no=legacy_by_number[account_no] or "无", row_legacy_no=row.legacy_no,
                other_account_no=owner_of_legacy,
            ))
    return errors


def _address_conflicts(company, parsed, stored, communities, numbers):
    """Rows with a new legacy number at the address of a stored account that has another legacy number.

    Without this check the row would take over that account: its legacy number, owner and areas.
    """
    errors = []
    for row in parsed.rows:
        code = communities.get(row.community)
        # A legacy number already stored is matched by _dwelling_conflicts and by _store.
        if code is None or not row.legacy_no or row.legacy_no in stored.by_legacy:
            continue
        account_no = numbers.format(code, row.building, row.unit, row.room)
        account = stored.by_number.get(account_no)
        if account is not None and account["legacy_no"] and account["legacy_no"] != row.legacy_no:
            errors.append(RowError.build(
                row.excel_row, parsed.columns.get("legacy_no", "原用户编号"), row.legacy_no,
                N_("该地址已是用户 %(account_no)s（原编号 %(legacy_no)s，户主 %(owner)s），与本行原编号 %(row_legacy_no)s 不符；"
                   "若是同一户，请把原编号改为 %(legacy_no)s；若是另一户，请核对小区、楼号、单元和房号"),
                account_no=account_no, legacy_no=account["legacy_no"], owner=account["customer_name"], row_legacy_no=row.legacy_no,
            ))
    return errors


def _moved_address_reused(parsed, stored, communities, numbers):
    """Rows matched by address to a stored account that another row of the file moves by its legacy number.

    _store would apply both rows to that one account, so the later row would silently
    overwrite the earlier one, and one household would be lost.
    """
    moved_by = {}
    for row in parsed.rows:
        if row.legacy_no and row.legacy_no in stored.by_legacy:
            moved_by[stored.by_legacy[row.legacy_no]["id"]] = row
    errors = []
    for row in parsed.rows:
        code = communities.get(row.community)
        if code is None or (row.legacy_no and row.legacy_no in stored.by_legacy):
            continue
        account = stored.by_number.get(numbers.format(code, row.building, row.unit, row.room))
        mover = moved_by.get(account["id"]) if account is not None else None
        if mover is None:
            continue
        errors.append(RowError.build(
            row.excel_row, parsed.columns.get("room", "房号"), str(row.room),
            N_("该地址原是用户 %(account_no)s（原编号 %(legacy_no)s），第 %(row)s 行把该用户改到了另一地址；"
               "一次导入不能同时迁出并新建同一地址，请先导入不含本行的台账，再导入本行"),
            account_no=account["account_no"], legacy_no=mover.legacy_no, row=mover.excel_row,
        ))
    return errors


def _stored_account_of(row, stored, communities, numbers):
    """Return the stored account a row matches as _store does, or None; a new community has no address match."""
    code = communities.get(row.community)
    account_no = numbers.format(code, row.building, row.unit, row.room) if code is not None else None
    return stored.match(row.legacy_no, account_no)


# Account fields that set a season charge: an import must not change them once charges are posted.
BILLED_FIELDS = {
    "building_area": None,
    "usable_area": None,
    "user_type": USER_TYPES,
    "billing_status": BILLING_STATUSES,
    "billing_method": BILLING_METHODS,
}


def _billed_changes(company, parsed, stored, communities, numbers):
    """Rows that would change a billing field of an account that already has charges posted in a season.

    Such a change needs re-rating, so the row names the process to use; name, phone and
    note corrections of the same row stay allowed.
    """
    latest_season = dict(
        db.session.execute(
            sa.select(LedgerEntry.account_id, sa.func.max(LedgerEntry.season_id)).where(
                LedgerEntry.company_id == company.id,
                LedgerEntry.season_id.is_not(None),
                LedgerEntry.kind.in_(POSTED_CHARGE_KINDS),
            ).group_by(LedgerEntry.account_id)
        ).all()
    )
    if not latest_season:
        return []
    season_names = dict(db.session.execute(sa.select(Season.id, Season.name).where(Season.company_id == company.id)).all())
    errors = []
    for row in parsed.rows:
        account = _stored_account_of(row, stored, communities, numbers)
        if account is None or account["id"] not in latest_season:
            continue
        for name, labels in BILLED_FIELDS.items():
            old, new = account[name], getattr(row, name)
            if old == new:
                continue
            if name.endswith("_area"):
                reason = N_("用户 %(account_no)s 已有 %(season)s 采暖季的已过账热费，导入不能把%(field)s从 %(old)s 改为 %(new)s；"
                            "请在台账中保留 %(old)s，并在用户页提交“调整面积”申请，或在 /billing/rerates 提交追溯调整")
            else:
                reason = N_("用户 %(account_no)s 已有 %(season)s 采暖季的已过账热费，导入不能把%(field)s从 %(old)s 改为 %(new)s；"
                            "请在台账中保留 %(old)s，并在 /billing/rerates 提交追溯调整")
            errors.append(RowError.build(
                row.excel_row, parsed.columns.get(name, FIELD_LABELS[name]), _shown_value(new, labels), reason,
                account_no=account["account_no"], season=season_names.get(latest_season[account["id"]], ""),
                field=parsed.columns.get(name, FIELD_LABELS[name]),
                old=_shown_value(old, labels), new=_shown_value(new, labels),
            ))
    return errors


def _arrears_changes(company, parsed, stored, communities, numbers):
    """Rows whose 往年欠费 differs from the prior-arrears line an earlier import posted for the account.

    The posted line is what the account owes from before the platform, so a changed amount
    is rejected rather than written to the account alone; the difference goes through a
    waiver or a write-off, which post their own lines.
    """
    if "prior_arrears" not in parsed.columns:
        return []
    posted = dict(
        db.session.execute(
            sa.select(LedgerEntry.account_id, LedgerEntry.amount).where(
                LedgerEntry.company_id == company.id,
                LedgerEntry.kind == "prior_arrears",
                LedgerEntry.idempotency_key.like("arrears-import:%"),
            )
        ).all()
    )
    if not posted:
        return []
    column = parsed.columns["prior_arrears"]
    errors = []
    for row in parsed.rows:
        account = _stored_account_of(row, stored, communities, numbers)
        if account is None or account["id"] not in posted or posted[account["id"]] == row.prior_arrears:
            continue
        errors.append(RowError.build(
            row.excel_row, column, str(row.prior_arrears),
            N_("用户 %(account_no)s 的往年欠费已按 %(old)s 元入账，导入不能改为 %(new)s 元；"
               "请在台账中保留 %(old)s，差额在用户页通过减免申请或核销处理"),
            account_no=account["account_no"], old=str(posted[account["id"]]), new=str(row.prior_arrears),
        ))
    return errors


def _shown_value(value, labels):
    """Return a stored field value as the ledger writes it: an area without trailing zeros, a code as its label."""
    if value is None:
        return "—"
    if labels is not None:
        return labels.get(value, value)
    return f"{value.normalize():f}"


def _store(company, parsed, result, user_id, progress, stored, numbers):
    """Write the network objects with the ORM, then the accounts and their lines with Core executemany batches."""
    scope = current_scope()
    if not scope.can_write(company.id):
        raise TenantScopeError(f"Accounts of company {company.id} are outside the writable companies of {scope.label}.")
    placements = _place_rows(company, parsed)

    new_accounts, changed_accounts, with_arrears, valve_changes = [], [], [], []
    for row, (community_code, community_id, unit_id, station_id) in zip(parsed.rows, placements):
        account_no = numbers.format(community_code, row.building, row.unit, row.room)
        values = {name: getattr(row, name) for name in IMPORTED_COLUMNS}
        values["room"] = f"{row.room}"
        values["unit_id"] = unit_id
        account = stored.match(row.legacy_no, account_no)
        if account is None:
            values.update(company_id=company.id, account_no=account_no, legacy_no=row.legacy_no, station_id=station_id,
                          valve_state=row.valve_state or "open")
            new_accounts.append(values)
            stored.by_number[account_no] = values
            valve_before = "open"
        else:
            valve_before = account["valve_state"]
            # A blank station, legacy number or valve cell keeps what is stored.
            if station_id is not None:
                values["station_id"] = station_id
            if row.legacy_no:
                values["legacy_no"] = row.legacy_no
            if row.valve_state is not None:
                values["valve_state"] = row.valve_state
            values["account_no"] = account_no
            if any(account[name] != value for name, value in values.items()):
                account.update(values)
                changed_accounts.append(account)
                result.updated += 1
            else:
                result.unchanged += 1
            values = account
        if row.prior_arrears > 0:
            with_arrears.append((values, row))
        if row.valve_state is not None and row.valve_state != valve_before:
            valve_changes.append((values, row, community_id, account is None))
    result.created = len(new_accounts)

    _insert_accounts(company, new_accounts, progress, len(parsed.rows))
    _update_accounts(changed_accounts)
    if new_accounts and (with_arrears or valve_changes):
        ids = dict(db.session.execute(
            sa.select(Account.account_no, Account.id).where(Account.company_id == company.id)
        ).all())
        for values in new_accounts:
            values["id"] = ids[values["account_no"]]
    _insert_prior_arrears(company, with_arrears, result.filename, user_id)
    _record_valve_changes(company, valve_changes, result.filename, user_id)
    if progress:
        progress("storing", len(parsed.rows), len(parsed.rows))


def _place_rows(company, parsed):
    """Find or create the network of every row; return (community code, community id, unit id, station id or None) per row.

    One flush at the end gives every new unit and station its id.
    """
    cache = _NetworkCache(company)
    for name, kind in parsed.heat_sources.items():
        cache.heat_source(name, kind)
    for name, source_name in parsed.stations.items():
        cache.station(name, source_name)
    # Most rows repeat a unit and a station of an earlier row, and the cache calls would
    # change nothing for them, so each is made once per distinct key. The parser rejects a
    # building given two lift values, so has_lift in the unit key changes nothing either.
    units = {}
    stations = {}
    placed = []
    for row in parsed.rows:
        unit_key = (row.community, row.building, row.unit, row.has_lift)
        if unit_key not in units:
            community = cache.community(row.community)
            units[unit_key] = (community.code, community.id, cache.unit(community, row.building, row.unit, row.has_lift))
        community_code, community_id, unit = units[unit_key]
        station = None
        if row.station:
            # A station given another heat source than on its last row is looked up again, so the last row wins as before.
            station_source = stations.get(row.station)
            if station_source is None or station_source[1] != row.heat_source:
                stations[row.station] = (cache.station(row.station, row.heat_source), row.heat_source)
            station = stations[row.station][0]
        placed.append((community_code, community_id, unit, station))
    db.session.flush()
    return [
        (code, community_id, unit.id, station.id if station is not None else None)
        for code, community_id, unit, station in placed
    ]


def _insert_accounts(company, accounts, progress, total):
    """Insert new accounts in executemany batches and add them to the company's account count.

    A plain INSERT per row lets psycopg 3 pipeline the batch. COPY is not used because
    PostgreSQL 15 does not support COPY FROM on tables with row-level security (COPY
    documentation). On a 20,000-row import, one INSERT ... SELECT FROM unnest per batch
    took as long (2.1 s against 2.0 s), because the server's index and foreign-key work
    per row dominates.
    """
    if not accounts:
        return
    connection = db.session.connection()
    statement = sa.insert(Account.__table__)
    for start in range(0, len(accounts), STORE_BATCH):
        connection.execute(statement, accounts[start:start + STORE_BATCH])
        if progress:
            progress("storing", min(start + STORE_BATCH, len(accounts)), total)
    add_account_counts(connection, {company.id: len(accounts)})


def _update_accounts(accounts):
    """Write the imported columns of changed stored accounts, one executemany per batch."""
    if not accounts:
        return
    table = Account.__table__
    names = (*IMPORTED_COLUMNS, "account_no", "legacy_no", "unit_id", "station_id", "valve_state")
    statement = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("account_id"))
        .values({name: sa.bindparam(f"new_{name}") for name in names})
    )
    parameters = [{"account_id": a["id"], **{f"new_{name}": a[name] for name in names}} for a in accounts]
    connection = db.session.connection()
    for start in range(0, len(parameters), STORE_BATCH):
        connection.execute(statement, parameters[start:start + STORE_BATCH])


# Maximum file-name length quoted in a generated memo or valve note. Both columns hold 255
# characters, so this leaves room for " 第 200000 行" and the row number is not cut off.
SOURCE_FILENAME_MAX_CHARS = 200


def _short_filename(filename):
    """Return `filename`, or its start and end around "…" when it is longer than SOURCE_FILENAME_MAX_CHARS."""
    if len(filename) <= SOURCE_FILENAME_MAX_CHARS:
        return filename
    half = (SOURCE_FILENAME_MAX_CHARS - 1) // 2
    return f"{filename[:half]}…{filename[-half:]}"


@dataclass
class _ArrearsLine:
    """The fields of a prior-arrears ledger line that the HQ totals read."""

    company_id: int
    account_id: int
    season_id: None
    kind: str
    amount: Decimal
    created_at: datetime


def _insert_prior_arrears(company, with_arrears, filename, user_id):
    """Insert a prior_arrears line for each account that has none from an import yet, and add them to the totals."""
    if not with_arrears:
        return
    keys = set(
        db.session.scalars(
            sa.select(LedgerEntry.idempotency_key).where(
                LedgerEntry.company_id == company.id, LedgerEntry.kind == "prior_arrears"
            )
        )
    )
    created_at = utcnow()
    lines = []
    for account, row in with_arrears:
        key = f"arrears-import:{account['id']}"
        # An earlier import's line stays as posted: _arrears_changes rejects a file that changes its amount.
        if key in keys:
            continue
        keys.add(key)
        lines.append({
            "company_id": company.id, "account_id": account["id"], "season_id": None, "kind": "prior_arrears",
            "amount": row.prior_arrears, "cause_type": "ledger_import", "cause_id": None, "idempotency_key": key,
            **memo_columns(M_("%(filename)s 第 %(row)s 行", filename=_short_filename(filename), row=row.excel_row)),
            "created_by_id": user_id, "created_at": created_at,
        })
    if not lines:
        return
    connection = db.session.connection()
    statement = sa.insert(LedgerEntry.__table__)
    for start in range(0, len(lines), STORE_BATCH):
        batch = lines[start:start + STORE_BATCH]
        connection.execute(statement, batch)
        # Core inserts pass by the session's after_flush hook, so the HQ totals are added here.
        add_entries(connection, [
            _ArrearsLine(line["company_id"], line["account_id"], None, line["kind"], line["amount"], created_at) for line in batch
        ])


def _record_valve_changes(company, changes, filename, user_id):
    """Add the valve states the ledger changed to the valve history, effective at the import.

    A new account has no history, so its change is inserted as it is. A stored account's
    change is linked to its neighbours as record_valve_change does: the change in effect
    before the import ends where the import starts, and the new change ends where a later
    one starts. The neighbours of every stored account are read in one statement per
    READ_BATCH accounts, the earlier changes are ended in one UPDATE per batch, and every
    new change is inserted in executemany batches.
    """
    imported_at = utcnow()
    stored_ids = [account["id"] for account, _, _, is_new in changes if not is_new]
    earlier, later = _valve_neighbours(company.id, stored_ids, imported_at)
    new_changes, ended_ids, seen = [], [], set()
    for account, row, community_id, is_new in changes:
        account_id = account["id"]
        previous = earlier.get(account_id)
        if account_id in seen or (previous is not None and same_instant(previous.effective_at, imported_at)):
            # As record_valve_change does: one account keeps one change per instant.
            logger.warning("Account %s already has a valve change at %s; import %s row %s not recorded",
                           account_id, imported_at, filename, row.excel_row)
            continue
        seen.add(account_id)
        if previous is not None:
            ended_ids.append(previous.id)
        following = later.get(account_id)
        new_changes.append({
            "company_id": company.id, "account_id": account_id, "community_id": community_id,
            "state": row.valve_state, "effective_at": imported_at,
            "ended_at": following.effective_at if following is not None else None, "cause_type": "import",
            "cause_id": None, "recorded_by_id": user_id, "recorded_at": imported_at,
            "note": f"{_short_filename(filename)} 第 {row.excel_row} 行",
        })
    connection = db.session.connection()
    for start in range(0, len(ended_ids), READ_BATCH):
        connection.execute(
            sa.update(ValveChange.__table__)
            .where(ValveChange.company_id == company.id, ValveChange.id.in_(ended_ids[start:start + READ_BATCH]))
            .values(ended_at=imported_at)
        )
    statement = sa.insert(ValveChange.__table__)
    for start in range(0, len(new_changes), STORE_BATCH):
        connection.execute(statement, new_changes[start:start + STORE_BATCH])


def _valve_neighbours(company_id, account_ids, effective_at):
    """Map account id -> its change in effect at `effective_at`, and account id -> its first change after it.

    Reads both sides in one statement per READ_BATCH accounts, with window functions that
    PostgreSQL and SQLite 3.25+ both run.
    """
    earlier, later = {}, {}
    table = ValveChange.__table__
    for start in range(0, len(account_ids), READ_BATCH):
        of_accounts = sa.and_(table.c.company_id == company_id, table.c.account_id.in_(account_ids[start:start + READ_BATCH]))
        sides = []
        for side, condition, order in (
            ("earlier", table.c.effective_at <= effective_at, table.c.effective_at.desc()),
            ("later", table.c.effective_at > effective_at, table.c.effective_at.asc()),
        ):
            rank = sa.func.row_number().over(partition_by=table.c.account_id, order_by=order).label("rank")
            ranked = sa.select(table.c.id, table.c.account_id, table.c.effective_at, rank).where(of_accounts, condition).subquery()
            sides.append(
                sa.select(sa.literal(side).label("side"), ranked.c.id, ranked.c.account_id, ranked.c.effective_at)
                .where(ranked.c.rank == 1)
            )
        for row in db.session.execute(sa.union_all(*sides)):
            (earlier if row.side == "earlier" else later)[row.account_id] = row
    return earlier, later


def find_company(code):
    """Return the company with `code`, or raise LookupError naming it."""
    company = db.session.scalar(sa.select(Company).filter_by(code=code))
    if company is None:
        raise LookupError(gettext("未找到公司 %(code)s；请检查公司代码（如 TJ），或先运行 flask heat demo。", code=code))
    return company
