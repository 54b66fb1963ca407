"""Arrears (欠费) by season: ageing buckets, write-offs (核销) and collection work lists (清欠).

An account's unpaid receivable stays on the season it was billed in, so its age is the
number of the company's seasons that started after that season, up to the season the
report is taken for. Arrears imported with a ledger from before the platform carry no
season and form their own bucket.
"""

import io
import logging
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _
from openpyxl import Workbook
from openpyxl.styles import Font

from app.billing.models import RECEIVABLE_KINDS, CollectionTask, LedgerEntry, memo_columns, utcnow
from app.billing.seasons import default_season
from app.extensions import db
from app.i18n import M_, N_, join_items, translate_label
from app.locking import lock_row
from app.money import ZERO
from app.network.models import Account, Building, Community, Unit
from app.org.models import User
from app.payments.services import amount_owed, parse_amount
from app.tariffs.models import Season
from app.texts import clean_text, visible_length

logger = logging.getLogger(__name__)

# Bucket code -> Chinese label (translated where shown), in display order.
AGE_BUCKETS = {
    "current": N_("本季"),
    "1": N_("欠1季"),
    "2": N_("欠2季"),
    "3+": N_("欠3季及以上"),
    "imported": N_("导入往年欠费（季别不详）"),
}
REASON_MIN_LENGTH = 4
REASON_MAX_LENGTH = 200


class ArrearsError(ValueError):
    """An arrears request that cannot be carried out as given; the message is shown to staff."""


def age_bucket(age):
    """Return the bucket code of an age in seasons; None is arrears without a season."""
    if age is None:
        return "imported"
    if age <= 0:
        return "current"
    if age >= 3:
        return "3+"
    return str(age)


@dataclass
class AccountArrears:
    """The outstanding receivable of one account by season and by age bucket."""

    account_id: int
    account_no: str
    customer_name: str
    phone: str
    address: str
    community_id: int
    building_code: str
    # {season name or None: outstanding}
    by_season: dict = field(default_factory=dict)
    buckets: dict = field(default_factory=lambda: dict.fromkeys(AGE_BUCKETS, ZERO))
    # Age in seasons of the oldest unpaid season; None when only imported arrears are unpaid.
    oldest_age: int | None = None
    collector: str = ""

    @property
    def total(self):
        return sum(self.buckets.values(), ZERO)


def company_seasons(company_id):
    """Return the company's seasons, earliest start first."""
    return db.session.scalars(sa.select(Season).where(Season.company_id == company_id).order_by(Season.start_on)).all()


def _season_ages(company_id, as_of_season=None):
    """Return ({season_id: age in seasons}, the as-of season) for seasons up to `as_of_season`."""
    seasons = company_seasons(company_id)
    if not seasons:
        return {}, None
    as_of = as_of_season or default_season(company_id) or seasons[-1]
    position = next(index for index, season in enumerate(seasons) if season.id == as_of.id)
    ages = {season.id: position - index for index, season in enumerate(seasons) if index <= position}
    return ages, as_of


def _outstanding_by_season(company_id, season_ids):
    """Return {account_id: {season_id or None: outstanding}} by the rule of amount_owed().

    Per season: max(net receivable − payments, 0). Without a season: imported arrears and
    their write-offs minus the payments applied to them.
    """
    rows = db.session.execute(
        sa.select(LedgerEntry.account_id, LedgerEntry.season_id, LedgerEntry.kind, sa.func.sum(LedgerEntry.amount))
        .where(
            LedgerEntry.company_id == company_id,
            sa.or_(LedgerEntry.season_id.in_(season_ids), LedgerEntry.season_id.is_(None)),
            LedgerEntry.kind.in_(RECEIVABLE_KINDS + ("payment", "prior_arrears")),
        )
        .group_by(LedgerEntry.account_id, LedgerEntry.season_id, LedgerEntry.kind)
    )
    sums = {}
    for account_id, season_id, kind, amount in rows:
        per_season = sums.setdefault(account_id, {})
        per_season[season_id] = per_season.get(season_id, ZERO) + amount
    return {
        account_id: {season_id: balance for season_id, balance in per_season.items() if balance > 0}
        for account_id, per_season in sums.items()
    }


def arrears_by_account(company_id, as_of_season=None, account_ids=None):
    """Return [AccountArrears] of every account with outstanding receivable, by account number.

    Seasons after `as_of_season` (default: app.billing.seasons.default_season) are left out.
    """
    ages, as_of = _season_ages(company_id, as_of_season)
    names = dict(db.session.execute(sa.select(Season.id, Season.name).where(Season.id.in_(ages))).all())
    balances = _outstanding_by_season(company_id, list(ages))
    if account_ids is not None:
        wanted = set(account_ids)
        balances = {key: value for key, value in balances.items() if key in wanted}
    balances = {key: value for key, value in balances.items() if value}
    if not balances:
        return []
    rows = db.session.execute(
        sa.select(Account, Community, Building.code)
        .join(Unit, Account.unit_id == Unit.id)
        .join(Building, Unit.building_id == Building.id)
        .join(Community, Building.community_id == Community.id)
        .where(Account.id.in_(list(balances)))
        .order_by(Account.account_no)
    ).all()
    collectors = dict(
        db.session.execute(
            sa.select(CollectionTask.account_id, User.name)
            .join(User, CollectionTask.collector_id == User.id)
            .where(CollectionTask.company_id == company_id, CollectionTask.account_id.in_(list(balances)))
        ).all()
    )
    result = []
    for account, community, building_code in rows:
        item = AccountArrears(
            account_id=account.id, account_no=account.account_no, customer_name=account.customer_name,
            phone=account.phone,
            address=_(
                "%(community)s%(building)s号楼%(unit)s单元%(room)s",
                community=community.name, building=int(building_code), unit=int(account.unit.code), room=account.room,
            ),
            community_id=community.id, building_code=building_code, collector=collectors.get(account.id, ""),
        )
        for season_id, balance in balances[account.id].items():
            age = ages.get(season_id) if season_id is not None else None
            item.by_season[names.get(season_id)] = balance
            item.buckets[age_bucket(age)] += balance
            if age is not None and (item.oldest_age is None or age > item.oldest_age):
                item.oldest_age = age
        result.append(item)
    return result


def ageing_totals(items):
    """Sum AccountArrears into {bucket: (accounts, amount)} plus a `total` entry."""
    totals = {bucket: [0, ZERO] for bucket in AGE_BUCKETS}
    for item in items:
        for bucket, amount in item.buckets.items():
            if amount > 0:
                totals[bucket][0] += 1
                totals[bucket][1] += amount
    totals["total"] = [len(items), sum((item.total for item in items), ZERO)]
    return {key: tuple(value) for key, value in totals.items()}


@dataclass(frozen=True)
class WorkListFilter:
    """Filters of a collection work list; None means no filter."""

    community_id: int | None = None
    building_code: str | None = None
    min_amount: Decimal | None = None
    # Oldest unpaid season at least this many seasons old (0 = the current season).
    min_age: int | None = None
    collector_id: int | None = None
    unassigned_only: bool = False


def parse_work_list_filter(args):
    """Build a WorkListFilter from query arguments, or raise ArrearsError naming the bad one."""

    def integer(name, label):
        raw = (args.get(name) or "").strip()
        if not raw:
            return None
        if not raw.isdigit():
            raise ArrearsError(_("%(field)s「%(value)s」不是有效数字；请填写不小于 0 的整数。", field=label, value=raw))
        return int(raw)

    raw_amount = (args.get("min_amount") or "").strip()
    min_amount = None
    if raw_amount:
        try:
            min_amount = parse_amount(raw_amount)
        except ValueError:
            raise ArrearsError(_("最低欠费金额「%(value)s」无效；请填写如 500 或 1234.50 的金额。", value=raw_amount)) from None
    building = (args.get("building") or "").strip()
    if building and not (building.isdigit() and len(building) <= 3):
        raise ArrearsError(_("楼栋「%(value)s」无效；请填写 1 至 3 位楼号，如 15。", value=building))
    return WorkListFilter(
        community_id=integer("community", _("小区")),
        building_code=building.zfill(3) if building else None,
        min_amount=min_amount,
        min_age=integer("min_age", _("最少欠费季数")),
        collector_id=integer("collector", _("清欠人员")),
        unassigned_only=args.get("unassigned") == "1",
    )


def work_list(company_id, filters=WorkListFilter(), as_of_season=None):
    """Return the AccountArrears matching `filters`, largest total first."""
    items = arrears_by_account(company_id, as_of_season)
    assigned = dict(
        db.session.execute(
            sa.select(CollectionTask.account_id, CollectionTask.collector_id).where(CollectionTask.company_id == company_id)
        ).all()
    )
    selected = []
    for item in items:
        if filters.community_id is not None and item.community_id != filters.community_id:
            continue
        if filters.building_code is not None and item.building_code != filters.building_code:
            continue
        if filters.min_amount is not None and item.total < filters.min_amount:
            continue
        if filters.min_age is not None and (item.oldest_age is None or item.oldest_age < filters.min_age):
            continue
        if filters.collector_id is not None and assigned.get(item.account_id) != filters.collector_id:
            continue
        if filters.unassigned_only and item.account_id in assigned:
            continue
        selected.append(item)
    selected.sort(key=lambda item: (-item.total, item.account_no))
    return selected


def assign_collector(company_id, account_ids, collector, assigned_by, note=""):
    """Assign accounts in arrears to `collector`, replacing an earlier assignment. Returns the count.

    The caller commits. Accounts without arrears are rejected, so a stale list cannot
    create tasks that have nothing to collect.
    """
    if collector is None or collector.company_id != company_id or not collector.is_active:
        raise ArrearsError(_("清欠人员无效；请从本公司在职人员中选择。"))
    if not account_ids:
        raise ArrearsError(_("没有选择用户；请在清单中勾选要分派的用户。"))
    owed = {item.account_id: item.total for item in arrears_by_account(company_id, account_ids=account_ids)}
    missing = [account_id for account_id in account_ids if account_id not in owed]
    if missing:
        numbers = db.session.scalars(sa.select(Account.account_no).where(Account.id.in_(missing))).all()
        raise ArrearsError(_(
            "以下用户当前没有欠费，不能分派清欠：%(accounts)s；请刷新清单后重新选择。", accounts=join_items(numbers) or missing,
        ))
    existing = {
        task.account_id: task
        for task in db.session.scalars(
            sa.select(CollectionTask).where(CollectionTask.company_id == company_id, CollectionTask.account_id.in_(account_ids))
        )
    }
    for account_id in account_ids:
        task = existing.get(account_id)
        if task is None:
            task = CollectionTask(company_id=company_id, account_id=account_id)
            db.session.add(task)
        task.collector_id = collector.id
        task.assigned_by_id = assigned_by.id if assigned_by else None
        task.assigned_at = utcnow()
        task.amount_at_assignment = owed[account_id]
        task.note = note[:255]
    db.session.flush()
    logger.info("Company %s assigned %s accounts in arrears to user %s", company_id, len(account_ids), collector.id)
    return len(account_ids)


def export_work_list(items):
    """Write a work list as an .xlsx workbook and return its bytes."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = _("清欠清单")
    header = [
        _("用户编号"), _("户名"), _("电话"), _("地址"), *(translate_label(label) for label in AGE_BUCKETS.values()),
        _("欠费合计"), _("最早欠费距今季数"), _("清欠人员"),
    ]
    sheet.append(header)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for item in items:
        sheet.append([
            item.account_no, item.customer_name, item.phone, item.address,
            *(item.buckets[bucket] for bucket in AGE_BUCKETS), item.total,
            item.oldest_age if item.oldest_age is not None else "", item.collector,
        ])
    for row in sheet.iter_rows(min_row=2, min_col=5, max_col=5 + len(AGE_BUCKETS)):
        for cell in row:
            cell.number_format = "0.00"
    for column, width in zip("ABCD", (18, 12, 14, 28)):
        sheet.column_dimensions[column].width = width
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def write_off(account, season, amount, reason, user):
    """Write off part or all of an account's outstanding receivable of `season` (None: imported arrears).

    Posts one negative `write_off` line carrying the reason. The amount may not exceed
    what is outstanding for that season. Permission is checked by the caller, which commits.
    """
    reason = clean_text(reason)
    if visible_length(reason) < REASON_MIN_LENGTH:
        raise ArrearsError(_(
            "核销原因至少 %(min)s 个字；请写明无法收回的原因，如“用户去世无继承人”。", min=REASON_MIN_LENGTH,
        ))
    if len(reason) > REASON_MAX_LENGTH:
        raise ArrearsError(_("核销原因最长 %(max)s 个字，当前 %(length)s 个字；请删减。", max=REASON_MAX_LENGTH, length=len(reason)))
    try:
        amount = parse_amount(amount)
    except ValueError as error:
        raise ArrearsError(_("核销金额无效：%(reason)s", reason=error)) from None
    lock_row(Account, account.id)
    owed = amount_owed(account)
    if season is None:
        outstanding = owed.arrears_outstanding
        label = _("导入往年欠费")
    else:
        season_owed = next((s for s in owed.seasons if s.season.id == season.id), None)
        outstanding = season_owed.outstanding if season_owed else ZERO
        label = _("%(season)s 供暖季", season=season.name)
    if amount > outstanding:
        raise ArrearsError(_(
            "核销金额 %(amount)s 元超过用户 %(account)s %(label)s的欠费 %(outstanding)s 元；请填写不超过欠费的金额。",
            amount=amount, account=account.account_no, label=label, outstanding=outstanding,
        ))
    count = db.session.scalar(
        sa.select(sa.func.count(LedgerEntry.id)).where(
            LedgerEntry.company_id == account.company_id, LedgerEntry.account_id == account.id, LedgerEntry.kind == "write_off"
        )
    )
    entry = LedgerEntry(
        company_id=account.company_id, account_id=account.id, season_id=season.id if season else None,
        kind="write_off", amount=-amount, cause_type="write_off", cause_id=None,
        idempotency_key=f"write_off:{account.id}:{count + 1}", **memo_columns(M_("核销：%(reason)s", reason=reason)), created_by_id=user.id,
    )
    db.session.add(entry)
    db.session.flush()
    logger.info("User %s wrote off %s on account %s season %s", user.id, amount, account.id, season.id if season else None)
    return entry
