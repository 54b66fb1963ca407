"""The HQ process audit explorer: process instances of all companies found by their facts.

Each hit links to the instance page, which shows the verified history and the diagram
replay of the instance's own model version. With no filter the explorer lists the most
recent instances. Results are paged newest first by keyset on (created_at, id).
"""

from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa
from flask_babel import gettext as _

from app.clock import LOCAL_TIME
from app.extensions import db
from app.hq.dashboard import AS_OF_RANGE
from app.i18n import translate_label
from app.network.models import Account
from app.org.models import Company, User
from app.processes.models import INSTANCE_STATUSES, PROCESS_TYPES, ProcessEvent, ProcessInstance

PAGE_SIZE = 50


class AuditQueryError(ValueError):
    """A search field is invalid; the message names it and the fix."""


def _day(value, label):
    if not value:
        return None
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise AuditQueryError(_("%(field)s「%(value)s」无效，请按 2026-01-31 的格式填写。", field=label, value=value[:20])) from None
    # The search steps a day forward and converts to UTC, which leaves Python's date range near year 1 and 9999.
    first, last = AS_OF_RANGE
    if not first <= day <= last:
        raise AuditQueryError(_(
            "%(field)s「%(value)s」超出范围；请填写 %(first)s 至 %(last)s 之间的日期。",
            field=label, value=value.strip()[:20], first=first.isoformat(), last=last.isoformat(),
        ))
    return day


def parse_filters(args):
    """Validated search filters from the query string; empty fields are left out."""
    filters = {
        "process_type": (args.get("process_type") or "").strip(),
        "company": (args.get("company") or "").strip(),
        "account_no": (args.get("account_no") or "").strip()[:32],
        "user": (args.get("user") or "").strip()[:64],
        "outcome": (args.get("outcome") or "").strip(),
        "date_from": _day(args.get("date_from"), _("开始日期")),
        "date_to": _day(args.get("date_to"), _("结束日期")),
    }
    if filters["process_type"] and filters["process_type"] not in PROCESS_TYPES:
        raise AuditQueryError(_("流程类型「%(value)s」不存在，请从列表中选择。", value=filters["process_type"][:32]))
    if filters["outcome"] and filters["outcome"] not in INSTANCE_STATUSES:
        raise AuditQueryError(_("办理结果「%(value)s」不存在，请从列表中选择。", value=filters["outcome"][:32]))
    if filters["date_from"] and filters["date_to"] and filters["date_from"] > filters["date_to"]:
        raise AuditQueryError(_("开始日期晚于结束日期，请调换两个日期。"))
    filters["after"] = (args.get("after") or "").strip()
    if filters["after"]:
        _parse_cursor(filters["after"])
    return filters


def _parse_cursor(after):
    """Split an "<created_at ISO>|<instance id>" page cursor, or raise AuditQueryError."""
    value, separator, instance_id = after.rpartition("|")
    try:
        moment = datetime.fromisoformat(value)
        number = int(instance_id)
    except ValueError:
        moment = number = None
    if not separator or moment is None:
        raise AuditQueryError(_("分页参数无效，请从第一页重新浏览。"))
    return moment, number


def _local_start(day):
    """Return the UTC instant a local day starts. SQLite compares stored UTC text, so bind UTC."""
    return datetime.combine(day, time.min, LOCAL_TIME).astimezone(timezone.utc)


def search_instances(filters, page_size=None):
    """Return (rows, next cursor or "") of the instances matching every given filter, newest first.

    Empty filters match every instance, which is the explorer's default list. A page contains
    `page_size` rows, PAGE_SIZE when it is not given.
    """
    page_size = page_size or PAGE_SIZE
    statement = (
        sa.select(ProcessInstance, Company.code, Company.name, Account.account_no, User.name)
        .join(Company, Company.id == ProcessInstance.company_id)
        .join(Account, Account.id == ProcessInstance.account_id)
        .join(User, User.id == ProcessInstance.started_by_id)
        .order_by(ProcessInstance.created_at.desc(), ProcessInstance.id.desc())
        .limit(page_size + 1)
    )
    if filters.get("after"):
        moment, last_id = _parse_cursor(filters["after"])
        statement = statement.where(sa.or_(
            ProcessInstance.created_at < moment,
            sa.and_(ProcessInstance.created_at == moment, ProcessInstance.id < last_id),
        ))
    if filters["process_type"]:
        statement = statement.where(ProcessInstance.process_type == filters["process_type"])
    if filters["company"]:
        statement = statement.where(Company.code == filters["company"])
    if filters["account_no"]:
        statement = statement.where(sa.or_(Account.account_no == filters["account_no"], Account.legacy_no == filters["account_no"]))
    if filters["outcome"]:
        statement = statement.where(ProcessInstance.status == filters["outcome"])
    if filters["date_from"]:
        statement = statement.where(ProcessInstance.created_at >= _local_start(filters["date_from"]))
    if filters["date_to"]:
        statement = statement.where(ProcessInstance.created_at < _local_start(filters["date_to"] + timedelta(days=1)))
    if filters["user"]:
        people = sa.select(User.id).where(sa.or_(User.username == filters["user"], User.name == filters["user"]))
        took_part = sa.select(ProcessEvent.instance_id).where(ProcessEvent.user_id.in_(people))
        statement = statement.where(sa.or_(ProcessInstance.started_by_id.in_(people), ProcessInstance.id.in_(took_part)))
    hits = db.session.execute(statement).all()
    rows = [
        {
            "instance": instance, "company_code": code, "company_name": company_name, "account_no": account_no,
            "started_by": starter, "process": translate_label(PROCESS_TYPES.get(instance.process_type, instance.process_type)),
        }
        for instance, code, company_name, account_no, starter in hits[:page_size]
    ]
    cursor = ""
    if len(hits) > page_size:
        last = rows[-1]["instance"]
        cursor = f"{last.created_at.isoformat()}|{last.id}"
    return rows, cursor
