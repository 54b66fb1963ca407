"""Inbound consumers: meter readings from the metering system and approval decisions from the OA system.

Each message is applied exactly once by its AMQP message id: the handler's changes and a
ProcessedMessage row commit in one transaction, and a message whose id is already stored
is acknowledged without doing anything. A message that fails (bad JSON, unknown company,
a database error) is published again to its queue with an attempt count and acknowledged;
after MAX_ATTEMPTS it is rejected, which dead-letters it to `<queue>.dlq`. A reading or
decision that is well-formed but cannot be applied is not a failure: it is stored on a
review list (or with outcome `rejected`) and acknowledged.
"""

import json
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from amqp.exceptions import AMQPError
from flask_babel import gettext as _
from kombu import Consumer
from kombu.exceptions import KombuError
from sqlalchemy.exc import IntegrityError

from app.billing.metered import GJ_PLACES, parse_heat_gj
from app.clock import LOCAL_TIME, format_local, local_time
from app.extensions import db
from app.ids import parse_row_id
from app.locking import lock_row
from app.messaging.broker import CONFIRM_TIMEOUT_S, INBOUND_EXCHANGE, connect, declare_consumer_queue
from app.messaging.models import MeterReading, MeterReadingReview, ProcessedMessage
from app.network.models import Account
from app.org.models import Company, User
from app.org.services import AccessError, scope_for
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)

# A reading must be below this many GJ, as on the field form, so that it fits the stored
# column (three decimals) and never overflows Decimal's 28 digits when it is rounded.
MAX_READING_GJ = Decimal("1e11")
# Years a reading time may lie in; outside them the conversion to UTC can leave Python's date range.
READ_AT_YEARS = (1900, 2999)
ATTEMPTS_HEADER = "x-heatflow-attempts"
ERROR_HEADER = "x-heatflow-last-error"
MAX_ATTEMPTS = 5


class InboundError(ValueError):
    """A message that cannot be handled at all; it is retried and then dead-lettered."""


class InboundRejected(ValueError):
    """A well-formed message that cannot be applied; it is stored as rejected."""


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    queue: str
    binding_keys: tuple
    handler: object


def _company(data):
    if not isinstance(data, dict):
        raise InboundError("message body is not a JSON object")
    code = data.get("company")
    company = db.session.scalar(sa.select(Company).filter_by(code=code)) if isinstance(code, str) else None
    if company is None:
        raise InboundError(f"unknown company {code!r}")
    return company


def apply_message(spec, message_id, data):
    """Apply one decoded message once; returns 'applied', 'rejected' or 'duplicate'."""
    company = _company(data)
    with scoped(company_scope(company.id, label=f"consumer:{spec.name}")):
        if _processed(company.id, spec.name, message_id):
            db.session.rollback()
            return "duplicate"
        marked = {}

        def mark(outcome, reason=""):
            marked["outcome"] = outcome
            db.session.add(ProcessedMessage(
                company_id=company.id, consumer=spec.name, message_id=message_id, outcome=outcome, reason=reason[:255],
            ))

        try:
            spec.handler(company, message_id, data, mark)
            if "outcome" not in marked:
                raise RuntimeError(f"consumer {spec.name} did not mark message {message_id}")
            db.session.commit()
        except IntegrityError:
            # Another consumer stored the same message id first.
            db.session.rollback()
            if _processed(company.id, spec.name, message_id):
                return "duplicate"
            raise
        return marked["outcome"]


def _processed(company_id, consumer, message_id):
    return db.session.scalar(
        sa.select(ProcessedMessage.id).filter_by(company_id=company_id, consumer=consumer, message_id=message_id)
    ) is not None


# -- meter readings


def parse_reading(value):
    """Convert a cumulative reading in GJ to Decimal, or raise ValueError (MeteringError) with the reason."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(_("读数缺失"))
    if not isinstance(value, (float, bool)):
        try:
            magnitude = abs(Decimal(str(value).strip()))
        except InvalidOperation:
            magnitude = None
        # parse_heat_gj names what is wrong with text that is no finite number.
        if magnitude is not None and magnitude.is_finite() and magnitude >= MAX_READING_GJ:
            raise ValueError(_("读数「%(value)s」超过上限 %(max)s GJ", value=str(value)[:40], max=f"{MAX_READING_GJ:f}"))
    return parse_heat_gj(value, label=_("读数")).quantize(GJ_PLACES)


def parse_read_at(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(_("抄表时间缺失"))
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(_("抄表时间「%(value)s」不是 ISO 8601 时间，如 2026-01-05T08:00:00+08:00", value=value)) from None
    first, last = READ_AT_YEARS
    if not first <= moment.year <= last:
        raise ValueError(_("抄表时间「%(value)s」超出范围，应在 %(first)s 年至 %(last)s 年之间", value=value.strip()[:40], first=first, last=last))
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=LOCAL_TIME)
    # Stored in UTC like every timestamp: SQLite keeps the wall time and drops the offset.
    return moment.astimezone(timezone.utc)


def apply_meter_reading(company, message_id, data, mark):
    """Store a cumulative reading of a metered account, or put it on the review list with the reason."""
    account_no = str(data.get("account_no") or "")
    try:
        account, read_at, reading = check_meter_reading(company, account_no, data.get("read_at"), data.get("reading_gj"))
    except ValueError as error:
        reason = f"{str(error).rstrip('。')}；请核对计量系统中的读数后重新发送。"
        db.session.add(MeterReadingReview(
            company_id=company.id, message_id=message_id, account_no=account_no[:32],
            read_at=str(data.get("read_at") or "")[:40], reading=str(data.get("reading_gj") or "")[:40], reason=reason[:255],
        ))
        mark("rejected", reason)
        return
    stored = MeterReading(
        company_id=company.id, account_id=account.id, meter_no=str(data.get("meter_no") or "")[:32],
        read_at=read_at, reading_gj=reading, message_id=message_id,
    )
    db.session.add(stored)
    db.session.flush()
    supersede_reviews(stored, account.account_no, _("计量系统重发的读数（消息 %(message)s）已入账", message=message_id))
    mark("applied")


def check_meter_reading(company, account_no, read_at, reading):
    """Return (account, read_at in UTC, reading in GJ) of a reading that can be stored, or raise ValueError.

    Takes the account's row lock, so consumers and staff entering corrections check one
    account's readings one at a time; the caller stores the reading in the same transaction.
    """
    account = db.session.scalar(sa.select(Account).filter_by(company_id=company.id, account_no=account_no))
    if account is None:
        raise ValueError(_("用户编号「%(account)s」在 %(company)s 不存在", account=account_no, company=company.code))
    if account.billing_method != "metered":
        raise ValueError(_("用户 %(account)s 按面积计费，不收计量读数", account=account_no))
    read_at = parse_read_at(read_at)
    reading = parse_reading(reading)
    lock_row(Account, account.id)
    _check_order(account, read_at, reading)
    return account, read_at, reading


def supersede_reviews(stored, account_no, resolution):
    """Close the open reviews of the same account and reading time that `stored` now answers."""
    reviews = db.session.scalars(
        sa.select(MeterReadingReview).where(
            MeterReadingReview.company_id == stored.company_id, MeterReadingReview.account_no == account_no,
            MeterReadingReview.status == "open",
        )
    ).all()
    for review in reviews:
        try:
            review_moment = parse_read_at(review.read_at)
        except ValueError:
            continue
        if _same_moment(review_moment, stored.read_at):
            review.status = "superseded"
            review.resolution = resolution[:255]
            review.resolved_at = datetime.now(timezone.utc)
            review.meter_reading_id = stored.id


def _check_order(account, read_at, reading):
    """Raise ValueError when the reading is below an earlier one or above a later one of the account."""
    base = sa.select(MeterReading).where(MeterReading.company_id == account.company_id, MeterReading.account_id == account.id)
    before = db.session.scalar(base.where(MeterReading.read_at <= read_at).order_by(MeterReading.read_at.desc()).limit(1))
    after = db.session.scalar(base.where(MeterReading.read_at > read_at).order_by(MeterReading.read_at).limit(1))
    if before is not None and _same_moment(before.read_at, read_at):
        raise ValueError(_(
            "%(time)s 已有读数 %(stored)s，本条读数 %(reading)s 重复", time=format_local(read_at), stored=before.reading_gj, reading=reading,
        ))
    if before is not None and reading < before.reading_gj:
        raise ValueError(_(
            "读数 %(reading)s 小于 %(time)s 的读数 %(stored)s（读数倒退）",
            reading=reading, time=format_local(before.read_at), stored=before.reading_gj,
        ))
    if after is not None and reading > after.reading_gj:
        raise ValueError(_(
            "读数 %(reading)s 大于其后 %(time)s 的读数 %(stored)s（读数倒退）",
            reading=reading, time=format_local(after.read_at), stored=after.reading_gj,
        ))


def _same_moment(stored, moment):
    return local_time(stored) == local_time(moment)


# -- OA approval decisions


# JSON type names of decoded values, for rejection reasons.
JSON_TYPES = ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (list, "array"), (dict, "object"))


def _json_type(value):
    return next((name for kind, name in JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def _wrong_text_field(data, names):
    """Return the rejection reason for the first of `names` whose value is neither a string nor null, else ''."""
    for name in names:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            return f"字段 {name} 应为字符串或 null，收到 {_json_type(value)}；OA 系统须按字符串发送"
    return ""


def apply_oa_approval(company, message_id, data, mark):
    """Complete a waiting approval task with the OA decision, as the approver the message names."""
    from app.processes.access import ProcessError
    from app.processes.models import HumanTask
    from app.processes.services import claim_task, complete_task, release_task

    wrong_type = _wrong_text_field(data, ("approver_no", "decision", "comment"))
    if wrong_type:
        mark("rejected", wrong_type)
        return
    approver_no = data.get("approver_no") or ""
    task_id = data.get("task_id")
    user = db.session.scalar(sa.select(User).filter_by(user_no=approver_no))
    if user is None or not user.active:
        mark("rejected", f"审批人工号「{approver_no}」不存在或已停用")
        return
    if not isinstance(task_id, int) or isinstance(task_id, bool) or parse_row_id(task_id) is None:
        mark("rejected", f"task_id {str(task_id)[:40]!r} 不是任务编号")
        return
    values = {"decision": data.get("decision"), "comment": data.get("comment") or ""}
    claimed_here = False
    try:
        with scoped(scope_for(user)):
            task = db.session.scalar(sa.select(HumanTask).where(HumanTask.id == task_id, HumanTask.company_id == company.id))
            if task is None:
                raise InboundRejected(f"任务 {task_id} 不属于 {company.code}")
            unclaimed = task.status == "open" and task.claimed_by_id is None
            claim_task(task_id, user)
            claimed_here = unclaimed
            # The mark commits with the completion, inside complete_task.
            mark("applied")
            complete_task(task_id, user, values)
    except (ProcessError, AccessError, InboundRejected) as error:
        db.session.rollback()
        if claimed_here:
            # Give the task back to the inbox so that a person can decide it.
            try:
                with scoped(scope_for(user)):
                    release_task(task_id, user)
            except (ProcessError, AccessError) as release_error:
                db.session.rollback()
                logger.warning("Task %s could not be released after OA decision %s: %s", task_id, message_id, release_error)
        logger.warning("OA decision %s on task %s rejected: %s", message_id, task_id, error)
        mark("rejected", str(error))


CONSUMERS = {
    "meter_readings": ConsumerSpec("meter_readings", "heatflow.meter_readings", ("meter.reading.#",), apply_meter_reading),
    "oa_approvals": ConsumerSpec("oa_approvals", "heatflow.oa_approvals", ("oa.approval.#",), apply_oa_approval),
}


def handle(spec, message, producer, max_attempts=MAX_ATTEMPTS):
    """Apply one AMQP message; ack it, retry it through its queue, or dead-letter it."""
    properties = message.properties or {}
    headers = dict(message.headers or {})
    message_id = properties.get("message_id")
    try:
        if not message_id:
            raise InboundError("message has no message_id")
        try:
            data = json.loads(message.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise InboundError(f"body is not JSON: {error}") from None
        outcome = apply_message(spec, message_id, data)
        message.ack()
        logger.info("Consumer %s: message %s %s", spec.name, message_id, outcome)
        return outcome
    except Exception as error:  # noqa: BLE001  any failure is retried, then dead-lettered
        db.session.rollback()
        attempts = int(headers.get(ATTEMPTS_HEADER) or 0) + 1
        if attempts >= max_attempts:
            logger.error("Consumer %s: message %s dead-lettered after %s attempts: %s", spec.name, message_id, attempts, error)
            message.reject(requeue=False)
            return "dead_lettered"
        headers[ATTEMPTS_HEADER] = attempts
        headers[ERROR_HEADER] = f"{type(error).__name__}: {error}"[:200]
        producer.publish(
            message.body, exchange="", routing_key=spec.queue, headers=headers, message_id=message_id,
            content_type=message.content_type or "application/json", content_encoding=message.content_encoding or "utf-8",
            delivery_mode=2, retry=False, confirm_timeout=CONFIRM_TIMEOUT_S,
        )
        message.ack()
        logger.warning("Consumer %s: message %s failed (attempt %s): %s", spec.name, message_id, attempts, error)
        return "retried"


def run_consumer(name, url=None, idle_exit_s=None, max_seconds=None, prefetch=10):
    """Consume one inbound queue until interrupted, idle for `idle_exit_s`, or `max_seconds` pass.

    Returns the count of messages handled. A lost connection is re-opened after a pause.
    """
    spec = CONSUMERS[name]
    started = last_message = time.monotonic()
    handled = 0
    pause = 1

    def on_message(message):
        nonlocal handled, last_message
        handle(spec, message, producer)
        handled += 1
        last_message = time.monotonic()

    while True:
        try:
            with connect(url) as connection:
                queue = declare_consumer_queue(connection, spec.queue, INBOUND_EXCHANGE, spec.binding_keys)
                producer = connection.Producer(connection.channel())
                with Consumer(connection.channel(), queues=[queue], on_message=on_message, prefetch_count=prefetch):
                    pause = 1
                    while True:
                        now = time.monotonic()
                        if max_seconds is not None and now - started >= max_seconds:
                            return handled
                        if idle_exit_s is not None and now - last_message >= idle_exit_s:
                            return handled
                        try:
                            connection.drain_events(timeout=1)
                        except socket.timeout:
                            continue
        except (OSError, KombuError, AMQPError) as error:
            logger.warning("Consumer %s lost the broker (%s); reconnecting in %s s", name, error, pause)
            time.sleep(pause)
            pause = min(pause * 2, 30)
