"""Time the outbox relay: publishing stored events to RabbitMQ with publisher confirms.

Creates a PostgreSQL database named heatflow_bench_<random> and a RabbitMQ virtual host of
the same name (with rabbitmqctl), writes --events payment.posted events for company TJ,
declares one subscriber queue bound to every event, and times relay_pending until every
event is published. It then checks that the queue holds each event id exactly once.
The database and the virtual host are removed at the end, also after a failure.

    .venv/bin/python benchmarks/outbox_relay.py --events 20000
"""

import subprocess
import sys
import time
import uuid

import sqlalchemy as sa
from kombu import Queue

from common import argument_parser, check_range, demo_app, parse_local, scratch_database  # noqa: E402

from app.extensions import db  # noqa: E402
from app.messaging.broker import EVENTS_EXCHANGE, connect, declare_consumer_queue  # noqa: E402
from app.messaging.models import OutboxEvent  # noqa: E402
from app.messaging.relay import relay_pending  # noqa: E402
from app.org.models import Company  # noqa: E402

QUEUE = "bench.subscriber"
# Events inserted per statement while preparing.
INSERT_CHUNK = 5_000
# The relay gets this long before the benchmark gives up.
RELAY_LIMIT_S = 600


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="events to publish (default 20,000)")
    arguments = parse_local(parser)
    check_range(parser, "--events", arguments.events, 1, 1_000_000)
    return arguments


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def write_events(count):
    company_id = db.session.scalar(sa.select(Company.id).filter_by(code="TJ"))
    for first in range(0, count, INSERT_CHUNK):
        rows = [
            {
                "company_id": company_id, "event_id": str(uuid.uuid4()), "event_type": "payment.posted",
                "schema_version": 1, "key": f"payment.posted:bench:{number}",
                "payload": f'{{"amount":"{number % 5000}.00","payment_id":{number}}}', "attempts": 0,
                "last_error": "", "replays": 0,
            }
            for number in range(first, min(first + INSERT_CHUNK, count))
        ]
        db.session.execute(sa.insert(OutboxEvent), rows)
    db.session.commit()
    return set(db.session.scalars(sa.select(OutboxEvent.event_id)))


def count_queue(url, expected_ids):
    """Take the subscriber queue's messages and return (messages, distinct ids, ids missing)."""
    seen = []
    with connect(url) as connection:
        queue = Queue(QUEUE, no_declare=True)(connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            seen.append(message.properties.get("message_id"))
    return len(seen), len(set(seen)), len(expected_ids - set(seen))


def benchmark(url, events):
    with connect(url) as connection:
        declare_consumer_queue(connection, QUEUE, EVENTS_EXCHANGE, ["#"])
    ids = write_events(events)
    started = time.perf_counter()
    result = relay_pending(url, max_seconds=RELAY_LIMIT_S)
    seconds = time.perf_counter() - started
    print(f"relay published {result.published} of {events} events in {seconds:.1f} s "
          f"({result.published / seconds:.0f} events/s){'; failed: ' + result.error if result.failed else ''}")
    messages, distinct, missing = count_queue(url, ids)
    print(f"queue holds {messages} messages, {distinct} distinct ids, {missing} ids missing")
    if result.published != events or messages != events or missing:
        sys.exit(1)


def main():
    arguments = parse_arguments()
    with scratch_database(arguments.admin_url, statement_timeout=False) as url:
        # The RabbitMQ virtual host takes the database's name.
        name = sa.engine.make_url(url).database
        rabbitmqctl("add_vhost", name)
        print(f"vhost {name}", flush=True)
        try:
            rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
            broker = f"amqp://guest:guest@127.0.0.1:5672/{name}"
            with demo_app(url, {"OUTBOX_BROKER_URL": broker}):
                benchmark(broker, arguments.events)
        finally:
            rabbitmqctl("delete_vhost", name)
            print(f"deleted vhost {name}")


if __name__ == "__main__":
    main()
