"""The relay on the real RabbitMQ (a vhost per test): publisher confirms, a broker cut in the
middle of a stream through a TCP proxy, the unrouted queue and replay."""

import threading
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from app.clock import local_time
from app.extensions import db
from app.messaging.broker import EVENTS_EXCHANGE, connect, declare_consumer_queue
from app.messaging.events import emit
from app.messaging.models import OutboxEvent
from app.messaging.relay import mark_for_replay, relay_batch
from tests.messaging.conftest import WAIT_S, drain

SUBSCRIBER = "test.finance"


def _subscribe(url, keys=("#",)):
    with connect(url) as connection:
        declare_consumer_queue(connection, SUBSCRIBER, EVENTS_EXCHANGE, keys)


def _emit_many(company_id, count):
    for number in range(count):
        emit(company_id, "payment.posted", f"test:{number}", {"number": number, "amount": f"{number}.00"})
    db.session.commit()
    return set(db.session.scalars(sa.select(OutboxEvent.event_id)))


def _pending():
    count = db.session.scalar(sa.select(sa.func.count(OutboxEvent.id)).where(OutboxEvent.published_at.is_(None)))
    db.session.rollback()
    return count


def _relay_until_done(url, on_failure=None):
    """Run relay batches until nothing is pending; returns the failed batches' results."""
    failures = []
    deadline = time.monotonic() + WAIT_S
    while _pending() and time.monotonic() < deadline:
        result = relay_batch(url, batch_size=50)
        if result.failed:
            failures.append(result)
            if on_failure:
                on_failure(result)
        if result.failed or result.waiting:
            time.sleep(0.2)
    return failures


def test_relay_publishes_every_event_once_with_its_id(demo, broker_url):
    _subscribe(broker_url)
    ids = _emit_many(demo["TJ"].id, 120)

    assert _relay_until_done(broker_url) == []

    messages = drain(broker_url, SUBSCRIBER)
    assert len(messages) == 120
    assert {m[0] for m in messages} == ids
    message_id, headers, body, key = messages[0]
    assert key == "payment.posted.TJ"
    assert headers["event_type"] == "payment.posted"
    assert body["schema"] == "heatflow.event"
    assert body["event_id"] == message_id
    assert body["company"] == "TJ"
    assert body["version"] == 1
    assert body["data"] == {"number": 0, "amount": "0.00"}
    assert body["occurred_at"].endswith("+08:00")
    # Published in id order.
    assert [m[2]["sequence"] for m in messages] == sorted(m[2]["sequence"] for m in messages)


def test_broker_cut_mid_stream_loses_no_event(demo, broker_url, vhost, tcp_proxy):
    _subscribe(broker_url)
    ids = _emit_many(demo["TJ"].id, 400)
    # Each batch of 50 events sends about 30 kB, so the proxy drops the relay's connection
    # in the third batch, after two batches were confirmed.
    proxy = tcp_proxy(cut_after_bytes=80_000)
    proxy_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    published_at_cut = []

    def _on_failure(result):
        if not published_at_cut:
            published_at_cut.append(400 - _pending())
            # The broker stays unreachable for 1.5 s: new connections are refused meanwhile.
            threading.Timer(1.5, proxy.restore).start()

    failures = _relay_until_done(proxy_url, _on_failure)

    assert proxy.cuts == 1
    assert 0 < published_at_cut[0] < 400
    assert failures, "the cut must have failed a publish"
    assert _pending() == 0
    failed_rows = db.session.scalars(sa.select(OutboxEvent).where(OutboxEvent.attempts > 0)).all()
    assert failed_rows and all(row.published_at is not None and row.last_error == "" for row in failed_rows)

    messages = drain(broker_url, SUBSCRIBER)
    received = Counter(m[0] for m in messages)
    # At least once: every event arrived; a consumer applying by message id applies each once.
    assert set(received) == ids
    applied = {message_id for message_id in received}
    assert len(applied) == 400
    # A copy on the wire comes only from a publish whose confirm the cut swallowed, so at
    # most one batch of 50 is sent twice.
    assert sum(received.values()) - 400 < 50


def test_event_without_subscriber_waits_in_the_unrouted_queue(demo, broker_url):
    ids = _emit_many(demo["QD"].id, 3)
    assert _relay_until_done(broker_url) == []
    messages = drain(broker_url, "heatflow.unrouted")
    assert {m[0] for m in messages} == ids
    assert {m[3] for m in messages} == {"payment.posted.QD"}


def test_replay_keeps_event_ids(app_ctx, demo, broker_url):
    _subscribe(broker_url)
    ids = _emit_many(demo["TJ"].id, 10)
    assert _relay_until_done(broker_url) == []
    assert len(drain(broker_url, SUBSCRIBER)) == 10
    rows = db.session.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id)).all()
    runner = app_ctx.test_cli_runner()

    result = runner.invoke(args=["heat", "outbox", "replay", "--event-id", rows[3].event_id])
    assert result.exit_code == 0, result.output
    assert "queued 1 events" in result.output
    assert _relay_until_done(broker_url) == []
    assert [m[0] for m in drain(broker_url, SUBSCRIBER)] == [rows[3].event_id]

    # Events 7, 8 and 9 occurred at or after event 7.
    since = local_time(rows[7].occurred_at).isoformat()
    result = runner.invoke(args=["heat", "outbox", "replay", "--since", since, "--company", "TJ"])
    assert result.exit_code == 0, result.output
    assert "queued 3 events" in result.output
    assert _relay_until_done(broker_url) == []
    assert [m[0] for m in drain(broker_url, SUBSCRIBER)] == [row.event_id for row in rows[7:]]
    db.session.expire_all()
    assert db.session.get(OutboxEvent, rows[8].id).replays == 1
    assert ids >= {row.event_id for row in rows}

    result = runner.invoke(args=["heat", "outbox", "replay", "--event-id", "no-such-event"])
    assert result.exit_code == 1
    assert "queued 0 of 1 events" in result.output


def test_relay_command_once_exits_1_without_broker(app_ctx, demo):
    app_ctx.config["OUTBOX_BROKER_URL"] = ""
    _emit_many(demo["TJ"].id, 1)
    result = app_ctx.test_cli_runner().invoke(args=["heat", "outbox", "relay", "--once"])
    assert result.exit_code == 1
    assert "No RabbitMQ broker is configured" in result.output
    assert _pending() == 1


def test_beat_task_relays_pending_events(app_ctx, demo, broker_url):
    from app.tasks.outbox import relay_outbox_task

    _subscribe(broker_url)
    ids = _emit_many(demo["TJ"].id, 5)
    assert app_ctx.extensions["celery"].conf.beat_schedule["outbox-relay"]["task"] == "outbox.relay"

    assert relay_outbox_task.apply().get() == 5
    assert {m[0] for m in drain(broker_url, SUBSCRIBER)} == ids


def test_replay_since_out_of_range_is_named(app_ctx, demo):
    runner = app_ctx.test_cli_runner()

    result = runner.invoke(args=["heat", "outbox", "replay", "--since", "0001-01-01T00:00"])

    assert result.exit_code == 1
    assert "--since '0001-01-01T00:00' is out of range" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_replay_since_with_event_id_rejected(app_ctx, demo):
    _emit_many(demo["TJ"].id, 2)
    db.session.execute(sa.update(OutboxEvent).values(published_at=sa.func.current_timestamp()))
    db.session.commit()
    event_id = db.session.scalars(sa.select(OutboxEvent.event_id).order_by(OutboxEvent.id)).first()
    runner = app_ctx.test_cli_runner()

    result = runner.invoke(args=["heat", "outbox", "replay", "--since", "2099-01-01T00:00", "--event-id", event_id])

    assert result.exit_code == 1
    assert "--since and --event-id cannot be combined" in result.output
    assert _pending() == 0
    with pytest.raises(ValueError, match="either since or event_ids"):
        mark_for_replay(since=datetime(2026, 1, 1, tzinfo=timezone.utc), event_ids=[event_id])
