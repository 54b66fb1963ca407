"""Effective-dated account terms: building area, usable area and user type over time."""

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import join_items, translate_label
from app.network.models import USER_TYPES, AccountTerms

logger = logging.getLogger(__name__)

# Effective date of the snapshot that records an account's terms before its first change.
BEGINNING = date(1900, 1, 1)
TERM_FIELDS = ("building_area", "usable_area", "user_type")
ONE_DAY = timedelta(days=1)


class TermsError(ValueError):
    """A change of account terms that cannot be recorded as given."""


@dataclass(frozen=True)
class Terms:
    """The billing terms in force on some days; it stands in for the Account in tariff lookups."""

    building_area: Decimal
    usable_area: Decimal | None
    user_type: str


def current_terms(account):
    """Return the terms stored on the Account row."""
    return Terms(account.building_area, account.usable_area, account.user_type)


def terms_history(account_ids):
    """Return {account_id: [(effective_from, Terms)]}, earliest first, for accounts with a history."""
    history = {}
    if not account_ids:
        return history
    rows = db.session.scalars(
        sa.select(AccountTerms).where(AccountTerms.account_id.in_(account_ids)).order_by(AccountTerms.effective_from)
    )
    for row in rows:
        history.setdefault(row.account_id, []).append(
            (row.effective_from, Terms(row.building_area, row.usable_area, row.user_type))
        )
    return history


def company_terms_history(company_id):
    """Return terms_history() for every account of a company that has one."""
    ids = db.session.scalars(sa.select(AccountTerms.account_id).where(AccountTerms.company_id == company_id).distinct()).all()
    return terms_history(ids)


def terms_periods(account, start_on, end_on, history=None):
    """Split `start_on`..`end_on` into [(Terms, first day, last day)], one per snapshot in force."""
    if history is None:
        history = terms_history([account.id]).get(account.id)
    if not history:
        return [(current_terms(account), start_on, end_on)]
    periods = []
    for index, (effective_from, terms) in enumerate(history):
        next_from = history[index + 1][0] if index + 1 < len(history) else None
        first = max(effective_from, start_on)
        last = min(next_from - ONE_DAY, end_on) if next_from else end_on
        if first <= last:
            periods.append((terms, first, last))
    if not periods or periods[0][1] > start_on:
        # Days before the first snapshot keep the earliest recorded terms.
        first_terms = history[0][1]
        first_last = periods[0][1] - ONE_DAY if periods else end_on
        periods.insert(0, (first_terms, start_on, first_last))
    return periods


def clean_terms_changes(changes):
    """Validate changes of account terms ({field: value}); return them with areas as Decimal.

    Raises TermsError naming the field and value at fault.
    """
    cleaned = {}
    for name, value in changes.items():
        if name not in TERM_FIELDS:
            raise TermsError(_("不能按生效日期修改「%(field)s」；可修改的是建筑面积、使用面积和用户类型。", field=name))
        if name == "user_type":
            if value not in USER_TYPES:
                raise TermsError(_(
                    "用户类型「%(value)s」无效；请选择 %(choices)s。", value=value,
                    choices=join_items(translate_label(label) for label in USER_TYPES.values()),
                ))
        elif value is not None:
            if isinstance(value, float):
                raise TermsError(_("面积 %(value)s 是浮点数；请以字符串或 Decimal 传入，如 \"87.35\"。", value=repr(value)))
            value = Decimal(value)
            if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.0001")):
                raise TermsError(_("面积「%(value)s」无效；请填写大于 0、最多 4 位小数的平方米数。", value=value))
        elif name == "building_area":
            raise TermsError(_("建筑面积不能为空；请填写大于 0 的平方米数。"))
        cleaned[name] = value
    return cleaned


def record_terms_change(account, effective_from, user_id=None, memo="", **changes):
    """Record that some of an account's terms change from `effective_from` on.

    The first change also stores the terms held before it, from BEGINNING. Later snapshots
    keep their own values. The Account row is updated to the latest snapshot. Returns the
    AccountTerms row written. The caller commits.
    """
    if not isinstance(effective_from, date):
        raise TermsError(_("生效日期 %(value)s 无效；请填写如 2026-01-10 的日期。", value=repr(effective_from)))
    changes = clean_terms_changes(changes)
    if not changes:
        raise TermsError(_("没有要修改的项目；请填写新的建筑面积、使用面积或用户类型。"))
    rows = db.session.scalars(
        sa.select(AccountTerms).where(AccountTerms.account_id == account.id).order_by(AccountTerms.effective_from)
    ).all()
    if not rows:
        base = AccountTerms(
            company_id=account.company_id, account_id=account.id, effective_from=BEGINNING,
            building_area=account.building_area, usable_area=account.usable_area, user_type=account.user_type,
            memo="首次变更前的档案", created_by_id=user_id,
        )
        db.session.add(base)
        rows = [base]
    in_force = [row for row in rows if row.effective_from <= effective_from]
    source = in_force[-1] if in_force else rows[0]
    target = next((row for row in rows if row.effective_from == effective_from), None)
    if target is None:
        target = AccountTerms(
            company_id=account.company_id, account_id=account.id, effective_from=effective_from,
            building_area=source.building_area, usable_area=source.usable_area, user_type=source.user_type,
            created_by_id=user_id,
        )
        db.session.add(target)
        rows.append(target)
    for name, value in changes.items():
        setattr(target, name, value)
    target.memo = memo[:255]
    latest = max(rows, key=lambda row: row.effective_from)
    for name in TERM_FIELDS:
        setattr(account, name, getattr(latest, name))
    db.session.flush()
    logger.info("Account %s terms change from %s: %s", account.id, effective_from, sorted(changes))
    return target


def history_with_change(account, history, effective_from, changes):
    """Return `history` ([(effective_from, Terms)], earliest first) as record_terms_change would leave it.

    Nothing is written: this is the history a pending change would give, used to compute
    its difference lines before it is approved. `changes` are clean_terms_changes() output.
    """
    history = list(history or [(BEGINNING, current_terms(account))])
    in_force = [terms for day, terms in history if day <= effective_from]
    source = in_force[-1] if in_force else history[0][1]
    values = {name: getattr(source, name) for name in TERM_FIELDS}
    values.update(changes)
    history = [(day, terms) for day, terms in history if day != effective_from]
    history.append((effective_from, Terms(**values)))
    return sorted(history, key=lambda item: item[0])


def accounts_with_changes_after(company_id, day):
    """Return True when any account of the company has a snapshot effective after `day`."""
    return bool(
        db.session.scalar(
            sa.select(AccountTerms.id)
            .where(AccountTerms.company_id == company_id, AccountTerms.effective_from > day)
            .limit(1)
        )
    )


