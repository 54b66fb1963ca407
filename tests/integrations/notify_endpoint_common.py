"""Shared steps of the notify endpoint tests of every channel: stored rows, concurrent deliveries and database failures."""

import contextlib
import threading

import sqlalchemy as sa

from app.extensions import db
from app.payments.inbox import notification_engine
from app.payments.models import Payment, PaymentNotification

# Idle connections opened in the notification engine's pool before the server ends them.
IDLE_POOLED_CONNECTIONS = 3


def stored_payments(transaction_id):
    """Return the payments stored for a channel transaction id, read fresh from the database."""
    db.session.expire_all()
    return db.session.scalars(sa.select(Payment).filter_by(channel_transaction_id=transaction_id)).all()


def logged_notifications(outcome=None, channel=None):
    """Return the stored notification rows in id order, optionally of one outcome and channel."""
    db.session.expire_all()
    query = sa.select(PaymentNotification).order_by(PaymentNotification.id)
    if outcome:
        query = query.filter_by(outcome=outcome)
    if channel:
        query = query.filter_by(channel=channel)
    return db.session.scalars(query).all()


def end_app_connections(app, owner_engine):
    """End every server connection of the app role, as a PostgreSQL restart does; return how many ended.

    The notification engine's pool is filled with idle connections first, as after concurrent
    notifications, so the next request finds only dead connections there.
    """
    with app.app_context():
        engine = notification_engine()
    idle = [engine.raw_connection() for _ in range(IDLE_POOLED_CONNECTIONS)]
    for connection in idle:
        connection.close()
    db.session.remove()
    with owner_engine.connect() as owner:
        return owner.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND usename <> current_user"
        )).scalar()


@contextlib.contextmanager
def notification_database_down(app):
    """Point the notification engine at port 1, where nothing listens, for the block; restore it after."""
    with app.app_context():
        engine = notification_engine()
    down = sa.create_engine(engine.url.set(port=1), connect_args={"connect_timeout": 2})
    app.extensions["heatflow_notification_engine"] = down
    try:
        yield
    finally:
        app.extensions["heatflow_notification_engine"] = engine
        down.dispose()


def deliver_at_once(app, deliver, deliveries=8):
    """Serve `app` on a local port and call deliver(url) from `deliveries` threads released together.

    Returns the results of `deliver` in the order the threads finished.
    """
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    barrier = threading.Barrier(deliveries, timeout=30)
    results = []

    def send_one(url):
        barrier.wait()
        results.append(deliver(url))

    url = f"http://127.0.0.1:{server.server_port}"
    try:
        senders = [threading.Thread(target=send_one, args=(url,)) for _ in range(deliveries)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=60)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    return results
