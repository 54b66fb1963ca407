"""RabbitMQ topology of the integrations and connections with publisher confirms (kombu).

Outbound events go to the topic exchange `heatflow.events` with routing key
`<event_type>.<company code>`. A message no queue is bound for goes to the alternate
exchange `heatflow.unrouted` and waits in the queue of that name instead of being dropped.
Inbound messages from other systems arrive on the topic exchange `heatflow.inbound`.
Every consumer queue dead-letters to `heatflow.dlx`, which routes by queue name to
`<queue>.dlq`.
"""

from flask import current_app
from kombu import Connection, Exchange, Queue, binding

EVENTS_EXCHANGE = Exchange("heatflow.events", type="topic", durable=True,
                           arguments={"alternate-exchange": "heatflow.unrouted"})
UNROUTED_EXCHANGE = Exchange("heatflow.unrouted", type="fanout", durable=True)
UNROUTED_QUEUE = Queue("heatflow.unrouted", UNROUTED_EXCHANGE, durable=True)
INBOUND_EXCHANGE = Exchange("heatflow.inbound", type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("heatflow.dlx", type="direct", durable=True)

# Seconds to wait for a connection, and for the broker's confirm of one published message.
CONNECT_TIMEOUT_S = 5
CONFIRM_TIMEOUT_S = 10


class BrokerNotConfigured(RuntimeError):
    """No AMQP broker is configured for the integrations."""


def broker_url():
    """Return the AMQP URL of the integrations, or raise BrokerNotConfigured."""
    url = current_app.config.get("OUTBOX_BROKER_URL") or ""
    if not url.startswith(("amqp://", "amqps://", "pyamqp://")):
        raise BrokerNotConfigured(
            "No RabbitMQ broker is configured for the message outbox; set HEATFLOW_OUTBOX_BROKER_URL "
            "or an amqp:// CELERY_BROKER_URL."
        )
    return url


def connect(url=None, confirm_each=True):
    """Open a kombu connection to the integrations' broker.

    With `confirm_each` every publish waits for the broker's confirm (py-amqp
    confirm_publish). The relay passes False and collects the confirms of a batch itself.
    """
    options = {"confirm_publish": True} if confirm_each else {}
    return Connection(url or broker_url(), connect_timeout=CONNECT_TIMEOUT_S, transport_options=options)


def consumer_queue(name, exchange, binding_keys):
    """Build a durable consumer queue that dead-letters rejected messages to `<name>.dlq`."""
    arguments = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name, "x-dead-letter-routing-key": name}
    bindings = [binding(exchange, routing_key=key) for key in binding_keys]
    return Queue(name, bindings=bindings, durable=True, queue_arguments=arguments)


def dead_letter_queue(name):
    return Queue(f"{name}.dlq", DEAD_LETTER_EXCHANGE, routing_key=name, durable=True)


def declare_consumer_queue(connection, name, exchange, binding_keys):
    """Declare a consumer queue, its dead-letter queue and the exchanges they need; return the queue."""
    channel = connection.default_channel
    declare_exchanges(channel)
    dead_letter_queue(name)(channel).declare()
    queue = consumer_queue(name, exchange, binding_keys)(channel)
    queue.declare()
    return queue


def declare_exchanges(channel):
    """Declare the exchanges and the unrouted queue; declaring again is harmless."""
    for exchange in (UNROUTED_EXCHANGE, EVENTS_EXCHANGE, INBOUND_EXCHANGE, DEAD_LETTER_EXCHANGE):
        exchange(channel).declare()
    UNROUTED_QUEUE(channel).declare()
