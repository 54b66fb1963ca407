"""Dated history of each account's valve state, so that shut-off valves can be counted as of a date.

Every change of `Account.valve_state` writes one `ValveChange` row: the new state, when
it took effect, what caused it (a field task, a process instance or a ledger import) and
who recorded it. Each row also stores `ended_at`, the effective time of the account's
next change (NULL while it is the current state), so the state at an instant T is the row
with effective_at <= T < ended_at, and a count as of T reads one row per changed account.
An account with no row in effect at T counts as open, the state every new account gets.

`flask heat valve-history-rebuild` writes the history of data created before it was kept.
"""

import logging
from datetime import datetime, timezone

import sqlalchemy as sa

from app.extensions import db
from app.network.models import Building, Unit
from app.tenancy import CompanyOwned

logger = logging.getLogger(__name__)

SHUT_OFF_STATES = ("closed", "sealed")
VALVE_CAUSES = {"field_task": "现场作业", "process_instance": "流程", "import": "台账导入"}
# Task forms whose result is a valve change made on site.
VALVE_TASK_FORMS = ("valve_close", "valve_open")
# Process events after which the account's valve state is known (see app.processes.operators).
VALVE_EVENT_TYPES = ("valve_closed", "valve_opened", "status_changed")


def utcnow():
    return datetime.now(timezone.utc)


class ValveChange(CompanyOwned, db.Model):
    """One change of an account's valve state, in effect from `effective_at` until `ended_at`."""

    __tablename__ = "valve_change"
    __table_args__ = (
        sa.UniqueConstraint("company_id", "account_id", "effective_at"),
        # Covering on PostgreSQL, so a count as of a date can be an index-only scan.
        sa.Index("ix_valve_change_company_state", "company_id", "state", "effective_at",
                 postgresql_include=["ended_at", "account_id", "community_id"]),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    # The account's community when the change was recorded, so the drill-down counts per
    # community without joining the network tables. An account moved later keeps it.
    community_id = sa.Column(sa.Integer, sa.ForeignKey("community.id"), nullable=False)
    state = sa.Column(sa.String(16), nullable=False)
    effective_at = sa.Column(sa.DateTime(timezone=True), nullable=False)
    # Effective time of the account's next change; NULL for the current state.
    ended_at = sa.Column(sa.DateTime(timezone=True))
    # "field_task" (HumanTask id), "process_instance" (ProcessInstance id) or "import" (no id).
    cause_type = sa.Column(sa.String(16), nullable=False)
    cause_id = sa.Column(sa.Integer)
    recorded_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    recorded_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    # Source of the state when no id names it, such as the ledger file and row.
    note = sa.Column(sa.String(255), nullable=False, default="")

    @property
    def cause_label(self):
        return VALVE_CAUSES.get(self.cause_type, self.cause_type)


def _neighbours(company_id, account_id, effective_at):
    """Return the account's changes in effect just before and just after `effective_at`, read in one statement."""
    of_account = sa.and_(ValveChange.company_id == company_id, ValveChange.account_id == account_id)
    earlier_id = (
        sa.select(ValveChange.id).where(of_account, ValveChange.effective_at <= effective_at)
        .order_by(ValveChange.effective_at.desc()).limit(1).scalar_subquery()
    )
    later_id = (
        sa.select(ValveChange.id).where(of_account, ValveChange.effective_at > effective_at)
        .order_by(ValveChange.effective_at).limit(1).scalar_subquery()
    )
    rows = db.session.execute(
        sa.select(ValveChange, (ValveChange.id == earlier_id).label("is_earlier"))
        .where(ValveChange.id.in_([earlier_id, later_id]))
    ).all()
    earlier = next((change for change, is_earlier in rows if is_earlier), None)
    later = next((change for change, is_earlier in rows if not is_earlier), None)
    return earlier, later


def record_valve_change(account, state, effective_at, cause_type, cause_id=None, recorded_by_id=None, note="",
                        skip_unchanged=False):
    """Add one change to the account's history and link it to its neighbours; returns the row or None.

    A change may arrive out of order because the rebuild adds past changes. So the row
    before it ends where this one starts, and this one ends where the next starts. With
    `skip_unchanged`, nothing is written when the state in effect at `effective_at` is
    already `state`. A second change of one account at the same instant is not written.
    """
    if cause_type not in VALVE_CAUSES:
        raise ValueError(f"cause_type={cause_type!r} is invalid; use one of {', '.join(VALVE_CAUSES)}.")
    earlier, later = _neighbours(account.company_id, account.id, effective_at)
    if earlier is not None and same_instant(earlier.effective_at, effective_at):
        logger.warning("Account %s already has a valve change at %s; %s %s not recorded",
                       account.id, effective_at, cause_type, cause_id)
        return None
    in_effect = earlier.state if earlier is not None else "open"
    if skip_unchanged and in_effect == state:
        return None
    change = ValveChange(
        company_id=account.company_id, account_id=account.id, community_id=_community_id(account), state=state, effective_at=effective_at,
        ended_at=later.effective_at if later is not None else None, cause_type=cause_type, cause_id=cause_id,
        recorded_by_id=recorded_by_id, note=note[:255],
    )
    if earlier is not None:
        earlier.ended_at = effective_at
    db.session.add(change)
    return change


def _community_id(account):
    # A caller that locked the account with its unit and building (app.processes.registry)
    # has the community at hand. `__dict__` is checked so that no lazy load is started.
    unit = account.__dict__.get("unit")
    if unit is not None and unit.id == account.unit_id and "building" in unit.__dict__:
        return unit.building.community_id
    return db.session.scalar(
        sa.select(Building.community_id).join(Unit, Unit.building_id == Building.id).where(Unit.id == account.unit_id)
    )


def same_instant(stored, given):
    # SQLite returns naive UTC datetimes for timezone-aware columns.
    if stored.tzinfo is None and given.tzinfo is not None:
        given = given.astimezone(timezone.utc).replace(tzinfo=None)
    return stored == given


def _shut_at(end):
    """Condition on ValveChange: a shut-off state in effect at the instant `end` (exclusive)."""
    return sa.and_(
        ValveChange.state.in_(SHUT_OFF_STATES), ValveChange.effective_at < end,
        sa.or_(ValveChange.ended_at.is_(None), ValveChange.ended_at >= end),
    )


def shut_off_counts(end):
    """Map company id -> accounts whose valve was closed or sealed just before the instant `end`."""
    return dict(db.session.execute(
        sa.select(ValveChange.company_id, sa.func.count()).where(_shut_at(end)).group_by(ValveChange.company_id)
    ).all())


def shut_off_by_community(company_id, end):
    """Map community id -> shut-off valves of one company just before the instant `end`."""
    return dict(db.session.execute(
        sa.select(ValveChange.community_id, sa.func.count())
        .where(ValveChange.company_id == company_id, _shut_at(end))
        .group_by(ValveChange.community_id)
    ).all())


def valve_states_at(company_id, account_ids, end):
    """Map account id -> valve state in effect just before `end`, for the accounts that had a change by then."""
    states = {}
    ids = list(account_ids)
    for start in range(0, len(ids), 5000):
        rows = db.session.execute(
            sa.select(ValveChange.account_id, ValveChange.state).where(
                ValveChange.company_id == company_id, ValveChange.account_id.in_(ids[start:start + 5000]),
                ValveChange.effective_at < end, sa.or_(ValveChange.ended_at.is_(None), ValveChange.ended_at >= end),
            )
        )
        states.update(dict(rows.all()))
    return states
