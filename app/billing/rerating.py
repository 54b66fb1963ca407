"""Retroactive re-rating: the difference lines a past change of area, user type, status or
tariff causes in every billed season, kept for approval and then posted as `rerate` lines.

A change names new areas or a new user type from a date, a status for one season, or a
tariff version added to a season. create_change() computes what each affected
account and season should have been billed and stores the differences as proposals;
new areas and user types are not yet recorded on the account. post_change() records them
(app/network/terms.py) and posts the lines once: each line's idempotency key names the
change, season and account, so posting again adds nothing, and a second change for the
same fact finds no difference left. A rejected change leaves the account and its ledger
as they were. A new tariff version of a billed season waits as `pending` (app/tariffs/editing.py)
until its change is posted, and is withdrawn when the change is rejected, so a rejected
tariff change leaves billing as it was too.
"""

import logging
from datetime import date

import sqlalchemy as sa
from flask_babel import gettext as _

from app.billing.models import RERATE_CHANGE_KINDS, LedgerEntry, RerateChange, RerateProposal, memo_columns, utcnow
from app.billing.precision import company_money_rule
from app.billing.proration import season_charge_lines, season_charge_total, season_tariffs
from app.billing.services import account_charge_inputs
from app.extensions import db
from app.i18n import M_, join_items, translate_label
from app.money import ZERO
from app.network.models import BILLING_STATUSES, Account
from app.network.terms import TermsError, clean_terms_changes, history_with_change, record_terms_change, terms_history
from app.tariffs.models import Season, Tariff

logger = logging.getLogger(__name__)

# Lines that together are what a season's charge was billed at.
BILLED_CHARGE_KINDS = ("charge", "rerate")


class RerateError(ValueError):
    """A retroactive change that cannot be computed or posted; the message is shown to staff."""


def billed_charges(company_id, season_id, account_ids=None):
    """Return {account_id: sum of charge and rerate lines} of a season."""
    query = (
        sa.select(LedgerEntry.account_id, sa.func.sum(LedgerEntry.amount))
        .where(
            LedgerEntry.company_id == company_id,
            LedgerEntry.season_id == season_id,
            LedgerEntry.kind.in_(BILLED_CHARGE_KINDS),
        )
        .group_by(LedgerEntry.account_id)
    )
    if account_ids is not None:
        query = query.where(LedgerEntry.account_id.in_(account_ids))
    return dict(db.session.execute(query).all())


def status_in_season(account, season, latest_season_id):
    """Return the billing status an account had in `season`.

    Only the current status is stored on the account. For an earlier season the latest
    posted status change of that season applies. Without one, the status is read from the
    ratio of the season's latest priced charge or rerate line: 1 is heated (正常), any other
    ratio is 报停. NOTE: 强停 also bills at ratio 1, so a 强停 season is re-rated as 正常, which
    bills the same amount.
    """
    if season.id == latest_season_id:
        return account.billing_status
    posted_status = db.session.scalar(
        sa.select(RerateChange.billing_status)
        .where(
            RerateChange.company_id == account.company_id,
            RerateChange.account_id == account.id,
            RerateChange.season_id == season.id,
            RerateChange.kind == "status",
            RerateChange.status == "posted",
        )
        .order_by(RerateChange.id.desc())
        .limit(1)
    )
    if posted_status is not None:
        return posted_status
    ratio = db.session.scalar(
        sa.select(LedgerEntry.ratio)
        .where(
            LedgerEntry.company_id == account.company_id,
            LedgerEntry.account_id == account.id,
            LedgerEntry.season_id == season.id,
            LedgerEntry.kind.in_(BILLED_CHARGE_KINDS),
            LedgerEntry.ratio.is_not(None),
        )
        .order_by(LedgerEntry.id.desc())
        .limit(1)
    )
    if ratio is None:
        return account.billing_status
    return "normal" if ratio == 1 else "suspended"


def _affected_seasons(change):
    """The season a status or tariff change names, else every season ending on or after its first day."""
    if change.season_id is not None:
        return [db.session.get(Season, change.season_id)]
    return db.session.scalars(
        sa.select(Season)
        .where(Season.company_id == change.company_id, Season.end_on >= change.effective_from)
        .order_by(Season.start_on)
    ).all()


def compute_differences(change):
    """Return [(account, season, billed, expected, detail)] where a season's charge is off.

    Only seasons with charge lines are considered, and only accounts billed in them.
    """
    latest_season_id = db.session.scalar(
        sa.select(Season.id).where(Season.company_id == change.company_id).order_by(Season.start_on.desc()).limit(1)
    )
    account_ids = [change.account_id] if change.account_id else None
    differences = []
    with company_money_rule(change.company_id):
        for season in _affected_seasons(change):
            billed = billed_charges(change.company_id, season.id, account_ids)
            if not billed:
                continue
            tariffs = season_tariffs(season, pending_id=change.tariff_id)
            accounts = db.session.scalars(sa.select(Account).where(Account.id.in_(list(billed))).order_by(Account.id)).all()
            history = terms_history([account.id for account in accounts])
            if change.kind == "account_terms" and proposed_terms(change):
                history[change.account_id] = _history_after(change, history.get(change.account_id))
            for account in accounts:
                if change.kind == "status":
                    status = change.billing_status
                else:
                    status = status_in_season(account, season, latest_season_id)
                has_lift, kind = account_charge_inputs(account)
                lines = season_charge_lines(
                    account, season, tariffs, has_lift, kind, billing_status=status, history=history.get(account.id, [])
                )
                expected = season_charge_total(lines)
                if expected != billed[account.id]:
                    detail = "；".join(_describe_line(line) for line in lines or ()) or "该状态不收费"
                    differences.append((account, season, billed[account.id], expected, detail[:500]))
    return differences


def proposed_terms(change):
    """Return the {field: value} an area or user-type change sets (empty for other kinds)."""
    values = {
        "building_area": change.new_building_area, "usable_area": change.new_usable_area, "user_type": change.new_user_type,
    }
    return {name: value for name, value in values.items() if value is not None}


def _history_after(change, history):
    """The account's terms history with the change's terms applied, as posting will record them."""
    account = db.session.get(Account, change.account_id)
    return history_with_change(account, history, change.effective_from, proposed_terms(change))


def _describe_line(line):
    return f"{line.start_on:%Y-%m-%d}至{line.end_on:%Y-%m-%d} {line.charge_area.normalize():f}㎡×{line.unit_price.normalize():f}×{line.ratio.normalize():f}={line.amount}"


def create_change(company_id, kind, effective_from, user, account=None, season=None, billing_status=None, description="",
                  terms=None, tariff=None):
    """Store a retroactive change with its difference lines as proposals awaiting approval.

    An `account_terms` change takes `terms`, e.g. {"building_area": Decimal("100")}; they
    are recorded on the account when the change is posted. A `tariff` change may name a
    pending tariff version, which takes effect only when the change is posted. Returns
    the RerateChange. The caller commits.
    """
    if kind == "status":
        if account is None or season is None:
            raise RerateError(_("供暖状态变更须指定用户和供暖季。"))
        if billing_status not in BILLING_STATUSES:
            raise RerateError(_(
                "供暖状态「%(status)s」无效；请选择 %(choices)s。",
                status=billing_status, choices=join_items(translate_label(label) for label in BILLING_STATUSES.values()),
            ))
        effective_from = season.start_on
    elif kind == "account_terms":
        if account is None:
            raise RerateError(_("面积或用户类型变更须指定用户。"))
        if not isinstance(effective_from, date):
            raise RerateError(_("生效日期 %(value)s 无效；请填写如 2026-01-10 的日期。", value=repr(effective_from)))
        try:
            terms = clean_terms_changes(terms or {})
        except TermsError as error:
            raise RerateError(str(error)) from None
        if not terms:
            raise RerateError(_("没有要修改的项目；请填写新的建筑面积、使用面积或用户类型。"))
        if "usable_area" in terms and terms["usable_area"] is None:
            raise RerateError(_("追溯调整不能清空使用面积；请填写新的使用面积。"))
    elif kind == "tariff":
        if tariff is not None:
            _check_pending_tariff(company_id, tariff)
            effective_from = tariff.effective_from
    else:
        raise RerateError(_(
            "变更类型「%(kind)s」无效；请选择 %(choices)s。",
            kind=kind, choices=join_items(translate_label(label) for label in RERATE_CHANGE_KINDS.values()),
        ))
    change = RerateChange(
        company_id=company_id, kind=kind, account_id=account.id if account else None, effective_from=effective_from,
        season_id=season.id if season else None, billing_status=billing_status, description=description[:255],
        created_by_id=user.id if user else None, tariff_id=tariff.id if tariff is not None else None,
    )
    if kind == "account_terms":
        change.new_building_area = terms.get("building_area")
        change.new_usable_area = terms.get("usable_area")
        change.new_user_type = terms.get("user_type")
    db.session.add(change)
    db.session.flush()
    _store_proposals(change, compute_differences(change))
    logger.info("Rerate change %s of company %s (%s) has %s difference lines", change.id, company_id, kind, len(change.proposals))
    return change


def _check_pending_tariff(company_id, tariff):
    if tariff.company_id != company_id or tariff.status != "pending":
        raise RerateError(f"收费标准版本 {tariff.id}（自 {tariff.effective_from} 起）不是待审批的新版本，不能据此追溯调整。")
    waiting = db.session.scalar(
        sa.select(RerateChange.id).where(
            RerateChange.company_id == company_id, RerateChange.tariff_id == tariff.id, RerateChange.status == "pending"
        )
    )
    if waiting is not None:
        raise RerateError(f"自 {tariff.effective_from} 起的收费标准已有待审批的调整单 {waiting}；请先审批或驳回该调整单。")


def pending_tariff(season, effective_from=None):
    """Return the season's pending tariff version (from `effective_from` when given), or None.

    Raises RerateError when several versions are pending and none is named.
    """
    query = sa.select(Tariff).where(
        Tariff.company_id == season.company_id, Tariff.season_id == season.id, Tariff.status == "pending"
    )
    if effective_from is not None:
        query = query.where(Tariff.effective_from == effective_from)
    versions = db.session.scalars(query.order_by(Tariff.effective_from)).all()
    if len(versions) > 1:
        dates = "、".join(str(version.effective_from) for version in versions)
        raise RerateError(f"供暖季 {season.name} 有多个待审批的收费标准版本（{dates}）；请填写要调整的生效日期。")
    return versions[0] if versions else None


def _store_proposals(change, differences):
    for proposal in list(change.proposals):
        db.session.delete(proposal)
    db.session.flush()
    for account, season, billed, expected, detail in differences:
        change.proposals.append(
            RerateProposal(
                company_id=change.company_id, account_id=account.id, season_id=season.id, billed=billed,
                expected=expected, difference=expected - billed, detail=detail,
            )
        )
    db.session.flush()


def proposal_total(change):
    """Sum the differences of a change's proposals."""
    return sum((proposal.difference for proposal in change.proposals), ZERO)


def rerate_key(change_id, season_id, account_id):
    return f"rerate:{change_id}:{season_id}:{account_id}"


def post_change(change, user):
    """Post the approved difference lines of `change` as `rerate` lines; return how many were posted.

    The differences are computed again first. When they no longer match the proposals
    (another line was posted meanwhile), the proposals are replaced and RerateError asks
    the approver to review them again; the caller commits in both cases. A posted change
    posts nothing again.
    """
    if change.status == "rejected":
        raise RerateError(_("调整单 %(id)s 已驳回，不能过账；请重新提交变更。", id=change.id))
    if change.status == "posted":
        return 0
    fresh = compute_differences(change)
    stored = {(p.account_id, p.season_id): p.difference for p in change.proposals}
    if {(account.id, season.id): expected - billed for account, season, billed, expected, _ in fresh} != stored:
        _store_proposals(change, fresh)
        raise RerateError(_("调整单 %(id)s 的差额已变化（期间有新的入账）；已按最新数据重算，请重新核对后再审批。", id=change.id))
    keys = [rerate_key(change.id, p.season_id, p.account_id) for p in change.proposals]
    posted_keys = set(
        db.session.scalars(
            sa.select(LedgerEntry.idempotency_key).where(
                LedgerEntry.company_id == change.company_id, LedgerEntry.idempotency_key.in_(keys)
            )
        )
    ) if keys else set()
    posted = 0
    for proposal in change.proposals:
        key = rerate_key(change.id, proposal.season_id, proposal.account_id)
        if key in posted_keys:
            continue
        entry = LedgerEntry(
            company_id=change.company_id, account_id=proposal.account_id, season_id=proposal.season_id, kind="rerate",
            amount=proposal.difference, cause_type="rerate_change", cause_id=change.id, idempotency_key=key,
            **memo_columns(M_("追溯调整单 %(change)s：%(description)s", change=change.id, description=change.description)),
            created_by_id=user.id,
        )
        db.session.add(entry)
        db.session.flush()
        proposal.ledger_entry_id = entry.id
        posted += 1
    if change.tariff_id is not None:
        db.session.get(Tariff, change.tariff_id).status = "active"
    if change.kind == "status":
        _apply_status(change)
    elif change.kind == "account_terms":
        account = db.session.get(Account, change.account_id)
        record_terms_change(account, change.effective_from, user_id=user.id, memo=change.description, **proposed_terms(change))
    change.status = "posted"
    change.decided_by_id = user.id
    change.decided_at = utcnow()
    db.session.flush()
    logger.info("User %s posted rerate change %s: %s lines", user.id, change.id, posted)
    return posted


def _apply_status(change):
    """Set the account's status when the change concerns its latest season."""
    latest_season_id = db.session.scalar(
        sa.select(Season.id).where(Season.company_id == change.company_id).order_by(Season.start_on.desc()).limit(1)
    )
    if change.season_id == latest_season_id:
        account = db.session.get(Account, change.account_id)
        account.billing_status = change.billing_status


def reject_change(change, user):
    """Reject a pending change; nothing is posted or recorded on the account. The caller commits.

    The pending tariff version a tariff change bills is withdrawn, so billing goes on with
    the versions in force before it.
    """
    if change.status != "pending":
        raise RerateError(_("调整单 %(id)s 当前为「%(status)s」，只有待审批的调整单可以驳回。", id=change.id, status=change.status))
    if change.tariff_id is not None:
        tariff = db.session.get(Tariff, change.tariff_id)
        if tariff.status == "pending":
            tariff.status = "withdrawn"
    change.status = "rejected"
    change.decided_by_id = user.id
    change.decided_at = utcnow()
