"""Store a parsed ledger: all rows or none, and the same file twice changes nothing."""

import collections
import hashlib
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale, gettext

from app.billing.models import LedgerEntry, memo_columns
from app.billing.seasons import POSTED_CHARGE_KINDS
from app.extensions import db
from app.i18n import DEFAULT_LOCALE, M_, N_, Message, message_of
from app.ledger.models import LedgerValueMap
from app.ledger.parser import FIELD_LABELS, LedgerFileError, RowError, parse_ledger
from app.network.models import BILLING_METHODS, BILLING_STATUSES, USER_TYPES, Account, Building, Community, HeatSource, Station, Unit
from app.network.numbering import format_account_no
from app.network.valves import record_valve_change, utcnow
from app.org.models import Company
from app.tariffs.models import Season

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
        return (
            f"{self.filename}: {self.data_rows} accounts imported "
            f"({self.created} new, {self.updated} updated, {self.unchanged} unchanged)."
        )


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
    if parsed.errors:
        result.errors = parsed.errors
        return result
    if not parsed.rows:
        result.file_error = M_("台账只有表头，没有数据行；未导入任何数据。")
        return result
    conflicts = _dwelling_conflicts(company, parsed) + _address_conflicts(company, parsed) + _billed_changes(company, parsed)
    if conflicts:
        result.errors = conflicts
        return result

    try:
        _store(company, parsed, result, user_id, progress)
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


class _AccountIds:
    """Account ids taken from the PostgreSQL sequence before the flush, a block at a time.

    With every primary key known, SQLAlchemy inserts the new accounts with a plain
    executemany, which psycopg 3 pipelines, in place of INSERT ... RETURNING batches whose
    long statements psycopg converts on the client each time. On SQLite `take()` returns
    None and the database assigns the ids as before. Ids of an import that is rolled back
    stay unused, as with any sequence.
    """

    BLOCK = 1000

    def __init__(self):
        self.enabled = db.session.get_bind().dialect.name == "postgresql"
        self.free = collections.deque()

    def take(self):
        if not self.enabled:
            return None
        if not self.free:
            self.free.extend(
                db.session.scalars(
                    sa.text("SELECT nextval(pg_get_serial_sequence('account', 'id')) FROM generate_series(1, :count)"),
                    {"count": self.BLOCK},
                )
            )
        return self.free.popleft()


def _dwelling_conflicts(company, parsed):
    """Rows whose legacy number belongs to one stored account but whose address to another."""
    communities = {c.name: c.code for c in db.session.scalars(sa.select(Community).filter_by(company_id=company.id))}
    accounts = db.session.execute(
        sa.select(Account.legacy_no, Account.account_no).where(Account.company_id == company.id)
    ).all()
    number_by_legacy = {legacy: number for legacy, number in accounts if legacy}
    legacy_by_number = {number: legacy for legacy, number in accounts}
    errors = []
    for row in parsed.rows:
        code = communities.get(row.community)
        if code is None or not row.legacy_no or row.legacy_no not in number_by_legacy:
            continue
        account_no = format_account_no(company.number, code, row.building, row.unit, row.room)
        if account_no != number_by_legacy[row.legacy_no] and account_no in legacy_by_number:
            errors.append(RowError.build(
                row.excel_row, parsed.columns.get("room", "房号"), str(row.room),
                N_("该房屋已是用户 %(account_no)s（原编号 %(legacy_no)s），而原编号 %(row_legacy_no)s 属于用户 %(other_account_no)s；请核对原编号或地址"),
                account_no=account_no, legacy_no=legacy_by_number[account_no] or "无", row_legacy_no=row.legacy_no,
                other_account_no=number_by_legacy[row.legacy_no],
            ))
    return errors


def _address_conflicts(company, parsed):
    """Rows with a new legacy number at the address of a stored account that has another legacy number.

    Without this check the row would take over that account: its legacy number, owner and areas.
    """
    communities = {c.name: c.code for c in db.session.scalars(sa.select(Community).filter_by(company_id=company.id))}
    accounts = db.session.execute(
        sa.select(Account.legacy_no, Account.account_no, Account.customer_name).where(Account.company_id == company.id)
    ).all()
    known_legacy = {legacy for legacy, _number, _name in accounts if legacy}
    by_number = {number: (legacy, name) for legacy, number, name in accounts}
    errors = []
    for row in parsed.rows:
        code = communities.get(row.community)
        # A legacy number already stored is matched by _dwelling_conflicts and by _store.
        if code is None or not row.legacy_no or row.legacy_no in known_legacy:
            continue
        account_no = format_account_no(company.number, code, row.building, row.unit, row.room)
        stored_legacy, owner = by_number.get(account_no, (None, None))
        if stored_legacy and stored_legacy != row.legacy_no:
            errors.append(RowError.build(
                row.excel_row, parsed.columns.get("legacy_no", "原用户编号"), row.legacy_no,
                N_("该地址已是用户 %(account_no)s（原编号 %(legacy_no)s，户主 %(owner)s），与本行原编号 %(row_legacy_no)s 不符；"
                   "若是同一户，请把原编号改为 %(legacy_no)s；若是另一户，请核对小区、楼号、单元和房号"),
                account_no=account_no, legacy_no=stored_legacy, owner=owner, row_legacy_no=row.legacy_no,
            ))
    return errors


# Account fields that set a season charge: an import must not change them once charges are posted.
BILLED_FIELDS = {
    "building_area": None,
    "usable_area": None,
    "user_type": USER_TYPES,
    "billing_status": BILLING_STATUSES,
    "billing_method": BILLING_METHODS,
}


def _billed_changes(company, parsed):
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
    communities = {c.name: c.code for c in db.session.scalars(sa.select(Community).filter_by(company_id=company.id))}
    billed = db.session.scalars(
        sa.select(Account).where(Account.company_id == company.id, Account.id.in_(list(latest_season)))
    ).all()
    by_legacy = {a.legacy_no: a for a in billed if a.legacy_no}
    by_number = {a.account_no: a for a in billed}
    errors = []
    for row in parsed.rows:
        # Match the row to its account as _store does: by legacy number, else by address.
        account = by_legacy.get(row.legacy_no) if row.legacy_no else None
        code = communities.get(row.community)
        if account is None and code is not None:
            account = by_number.get(format_account_no(company.number, code, row.building, row.unit, row.room))
        if account is None:
            continue
        for name, labels in BILLED_FIELDS.items():
            old, new = getattr(account, name), getattr(row, name)
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
                account_no=account.account_no, season=season_names.get(latest_season[account.id], ""),
                field=parsed.columns.get(name, FIELD_LABELS[name]),
                old=_shown_value(old, labels), new=_shown_value(new, labels),
            ))
    return errors


def _shown_value(value, labels):
    """Return a stored field value as the ledger writes it: an area without trailing zeros, a code as its label."""
    if value is None:
        return "—"
    if labels is not None:
        return labels.get(value, value)
    return f"{value.normalize():f}"


def _store(company, parsed, result, user_id, progress):
    cache = _NetworkCache(company)
    for name, kind in parsed.heat_sources.items():
        cache.heat_source(name, kind)
    for name, source_name in parsed.stations.items():
        cache.station(name, source_name)

    existing = db.session.scalars(sa.select(Account).filter_by(company_id=company.id)).all()
    by_legacy = {a.legacy_no: a for a in existing if a.legacy_no}
    by_number = {a.account_no: a for a in existing}
    arrears_keys = set(
        db.session.scalars(
            sa.select(LedgerEntry.idempotency_key).where(
                LedgerEntry.company_id == company.id, LedgerEntry.kind == "prior_arrears"
            )
        )
    )

    # Accounts with arrears get their line after one flush at the end, which assigns every new account id.
    with_arrears = []
    valve_changes = []
    account_ids = _AccountIds()
    total = len(parsed.rows)
    for done, row in enumerate(parsed.rows, start=1):
        community = cache.community(row.community)
        unit = cache.unit(community, row.building, row.unit, row.has_lift)
        station = cache.station(row.station, row.heat_source) if row.station else None
        account_no = format_account_no(company.number, community.code, row.building, row.unit, row.room)
        values = {
            "customer_name": row.customer_name,
            "phone": row.phone,
            "room": f"{row.room}",
            "building_area": row.building_area,
            "usable_area": row.usable_area,
            "user_type": row.user_type,
            "billing_status": row.billing_status,
            "billing_method": row.billing_method,
            "note": row.note,
            "prior_arrears": row.prior_arrears,
        }
        if row.valve_state is not None:
            values["valve_state"] = row.valve_state
        account = by_legacy.get(row.legacy_no) if row.legacy_no else None
        if account is None:
            account = by_number.get(account_no)
        valve_before = account.valve_state if account is not None else "open"
        if account is None:
            account = Account(id=account_ids.take(), company_id=company.id, account_no=account_no, legacy_no=row.legacy_no,
                              unit=unit, station=station, **values)
            db.session.add(account)
            by_number[account_no] = account
            result.created += 1
        else:
            changed = _update_account(account, values, unit, station, row.legacy_no, account_no)
            if changed:
                result.updated += 1
            else:
                result.unchanged += 1
        if row.prior_arrears > 0:
            with_arrears.append((account, row))
        if row.valve_state is not None and row.valve_state != valve_before:
            valve_changes.append((account, row))
        if progress and (done % 500 == 0 or done == total):
            db.session.flush()
            progress("storing", done, total)

    db.session.flush()
    for account, row in with_arrears:
        key = f"arrears-import:{account.id}"
        if key not in arrears_keys:
            db.session.add(
                LedgerEntry(
                    company_id=company.id,
                    account_id=account.id,
                    season_id=None,
                    kind="prior_arrears",
                    amount=row.prior_arrears,
                    cause_type="ledger_import",
                    idempotency_key=key,
                    **memo_columns(M_("%(filename)s 第 %(row)s 行", filename=result.filename, row=row.excel_row)),
                    created_by_id=user_id,
                )
            )
            arrears_keys.add(key)
    _record_valve_changes(valve_changes, result.filename, user_id)


def _record_valve_changes(changes, filename, user_id):
    """Add the valve states the ledger changed to the valve history, effective at the import."""
    imported_at = utcnow()
    for account, row in changes:
        record_valve_change(account, row.valve_state, imported_at, "import", recorded_by_id=user_id,
                            note=f"{filename} 第 {row.excel_row} 行")


def _update_account(account, values, unit, station, legacy_no, account_no):
    changed = False
    for name, value in values.items():
        if getattr(account, name) != value:
            setattr(account, name, value)
            changed = True
    if account.unit_id != unit.id:
        account.unit = unit
        changed = True
    if station is not None and account.station_id != station.id:
        account.station = station
        changed = True
    if legacy_no and account.legacy_no != legacy_no:
        account.legacy_no = legacy_no
        changed = True
    if account.account_no != account_no:
        account.account_no = account_no
        changed = True
    return changed


def find_company(code):
    """Return the company with `code`, or raise LookupError naming it."""
    company = db.session.scalar(sa.select(Company).filter_by(code=code))
    if company is None:
        raise LookupError(gettext("未找到公司 %(code)s；请检查公司代码（如 TJ），或先运行 flask heat demo。", code=code))
    return company
