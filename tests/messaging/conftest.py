"""Fixtures of the integration tests: a RabbitMQ virtual host per test, a TCP proxy that can
cut the relay off the broker, and metered QD accounts."""

import json
import socket
import subprocess
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from kombu import Connection, Exchange, Producer, Queue

from app.extensions import db
from app.messaging.broker import INBOUND_EXCHANGE
from app.network.models import Account
from tests.billing.conftest import add_account  # noqa: F401  fixtures reused here
from tests.processes.conftest import make_account  # noqa: F401

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
# Bounds of every wait in these tests.
WAIT_S = 90


def _rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost():
    """A fresh RabbitMQ virtual host for guest; yields its name and deletes it afterwards."""
    name = "heatflow_test_" + uuid.uuid4().hex[:8]
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture
def broker_url(app_ctx, vhost):
    """The vhost's AMQP URL, set as the app's outbox broker for the test."""
    url = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
    previous = app_ctx.config.get("OUTBOX_BROKER_URL")
    app_ctx.config["OUTBOX_BROKER_URL"] = url
    yield url
    app_ctx.config["OUTBOX_BROKER_URL"] = previous


class TcpProxy:
    """Forwards 127.0.0.1:<port> to RabbitMQ; `cut()` drops every connection and refuses new ones until `restore()`.

    `cut_after_bytes` cuts automatically once that many bytes went from clients to the
    broker, so a test can cut in the middle of a stream at a known point.
    """

    def __init__(self, cut_after_bytes=None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_after_bytes = cut_after_bytes
        self.sent = 0
        self.cuts = 0
        self.is_cut = False
        self.sockets = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, target, counts):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
                if counts:
                    with self.lock:
                        self.sent += len(data)
                        trip = self.cut_after_bytes is not None and self.sent >= self.cut_after_bytes
                    if trip:
                        self.cut_after_bytes = None
                        self.cut()
                        break
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def cut(self):
        self.is_cut = True
        self.cuts += 1
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self):
        self.is_cut = False

    def close(self):
        self.closed = True
        self.cut()
        self.listener.close()


@pytest.fixture
def tcp_proxy():
    proxies = []

    def _make(**kwargs):
        proxy = TcpProxy(**kwargs)
        proxies.append(proxy)
        return proxy

    yield _make
    for proxy in proxies:
        proxy.close()


def publish_inbound(url, messages):
    """Publish [(routing key, body, message id or None)] as another system would: to the inbound exchange, with confirms."""
    exchange = Exchange(INBOUND_EXCHANGE.name, type="topic", durable=True)
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        producer = Producer(connection.default_channel)
        for routing_key, body, message_id in messages:
            payload = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
            properties = {"message_id": message_id} if message_id else {}
            producer.publish(
                payload, exchange=exchange, routing_key=routing_key, content_type="application/json",
                content_encoding="utf-8", delivery_mode=2, **properties,
            )


def drain(url, queue_name, limit=100_000, timeout=1.0):
    """Take every message waiting in a queue, undecoded, until none came for `timeout` seconds.

    Returns [(message_id, headers, body dict or raw bytes, routing key)].
    """
    taken = []
    with Connection(url) as connection:
        queue = Queue(queue_name, no_declare=True)(connection.default_channel)
        quiet_since = time.monotonic()
        while len(taken) < limit and time.monotonic() - quiet_since < timeout:
            message = queue.get(no_ack=True)
            if message is None:
                time.sleep(0.05)
                continue
            quiet_since = time.monotonic()
            try:
                body = json.loads(message.body)
            except ValueError:
                body = message.body
            taken.append((message.properties.get("message_id"), dict(message.headers or {}), body,
                          message.delivery_info.get("routing_key")))
    return taken


@pytest.fixture
def metered_qd(add_account):  # noqa: F811
    """Five metered QD residents of 92.17 m², billed for 2025-2026 (2101.48 yuan each), on a
    tariff that settles refunds and surcharges."""
    from app.billing.proration import season_tariffs
    from app.billing.services import run_billing
    from app.tariffs.services import get_season

    tariff = season_tariffs(get_season(demo_company_id("QD"), "2025-2026"))[0]
    tariff.metered_settlement = "refund_and_surcharge"
    db.session.commit()
    accounts = [add_account("QD", "92.17", billing_method="metered") for _ in range(5)]
    run_billing("QD", "2025-2026")
    return [db.session.scalar(sa.select(Account).filter_by(id=a.id)) for a in accounts]


def demo_company_id(code):
    from app.org.models import Company

    return db.session.scalar(sa.select(Company.id).filter_by(code=code))
