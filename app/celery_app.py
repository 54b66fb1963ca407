"""Celery bound to the Flask app: each task runs inside an app context, under the system
scope unless the task sets a company scope itself."""

import logging

import sqlalchemy as sa
from celery import Task
from celery.schedules import crontab
from flask import has_app_context

from app.extensions import celery, db

logger = logging.getLogger(__name__)

# Seconds between runs of the sweeps that pick up e-invoices and refunds left waiting.
SWEEP_INTERVAL_SECONDS = 300


# A lost database connection (terminated backend, server restart) is retried this many
# times, waiting 1, 2, 4 … seconds up to the cap: about 2 minutes in all.
DATABASE_RETRIES = 8
DATABASE_RETRY_MAX_DELAY_S = 30


def database_retry_delay(retries):
    """Return the seconds to wait before retry number `retries` + 1 of a task that lost its database connection."""
    return min(2**retries, DATABASE_RETRY_MAX_DELAY_S)


class AppContextTask(Task):
    """Run the task inside the current app context, or inside the app Celery was last bound to.

    A task that fails on a lost database connection (SQLAlchemy's OperationalError) is
    rolled back and sent again after `database_retry_delay`, up to DATABASE_RETRIES
    times; after that `on_database_retries_exhausted` decides the outcome. The tasks commit
    in units that a second run skips by idempotency key or status, so a retry does not post
    twice.
    """

    def __call__(self, *args, **kwargs):
        if has_app_context():
            return self._run_retrying(*args, **kwargs)
        with self.app.flask_app.app_context():
            return self._run_retrying(*args, **kwargs)

    def _run_retrying(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except sa.exc.OperationalError as error:
            db.session.rollback()
            if self.request.called_directly:
                raise
            if self.request.retries >= DATABASE_RETRIES:
                logger.error("Task %s %s lost its database connection %s times; giving up: %s",
                             self.name, self.request.id, self.request.retries + 1, error.orig)
                return self.on_database_retries_exhausted(error, args, kwargs)
            delay = database_retry_delay(self.request.retries)
            logger.warning("Task %s %s lost its database connection (%s); retrying in %s s",
                           self.name, self.request.id, error.orig, delay)
            raise self.retry(countdown=delay, max_retries=DATABASE_RETRIES) from None

    def on_database_retries_exhausted(self, error, args, kwargs):
        """Handle the last lost connection of a task; the default raises `error`, so the task fails.

        A task that has to leave a record of the failure overrides this. Its return value
        becomes the task's result.
        """
        raise error


def init_celery(flask_app):
    """Configure the shared Celery object from the app config and bind it to `flask_app`."""
    celery.conf.update(
        broker_url=flask_app.config["CELERY_BROKER_URL"],
        task_always_eager=flask_app.config.get("CELERY_TASK_ALWAYS_EAGER", False),
        task_default_queue=flask_app.config.get("CELERY_TASK_DEFAULT_QUEUE", "celery"),
        task_eager_propagates=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        timezone="Asia/Shanghai",
        # Due process timers are looked for this often, which bounds how late one fires.
        beat_schedule={
            "fire-due-process-timers": {
                "task": "processes.fire_due_timers",
                "schedule": flask_app.config["PROCESS_TIMER_SCAN_SECONDS"],
            },
            # Uploaded ledgers whose task never reached the broker.
            "queue-waiting-ledger-imports": {
                "task": "ledger.queue_waiting_imports",
                "schedule": flask_app.config["LEDGER_IMPORT_SWEEP_S"],
            },
            # E-invoices whose issue task never reached the broker.
            "issue-pending-e-invoices": {
                "task": "invoicing.issue_pending_e_invoices",
                "schedule": flask_app.config["EINVOICE_SWEEP_S"],
            },
            # Succeeded refunds whose red-invoice task never reached the broker.
            "reverse-refunds": {
                "task": "invoicing.reverse_refunds",
                "schedule": flask_app.config["EINVOICE_SWEEP_S"],
            },
            "outbox-relay": {"task": "outbox.relay", "schedule": flask_app.config["OUTBOX_RELAY_INTERVAL_S"]},
            # Yesterday's finance vouchers, after midnight local time.
            "daily-vouchers": {"task": "outbox.issue_daily_vouchers", "schedule": crontab(hour=0, minute=30)},
            # Yesterday's statements of every channel merchant. WeChat Pay's partner documentation
            # (bill download, product introduction) says bills are ready after 10:00 the next day;
            # a statement not ready yet is asked for again by the task.
            "daily-reconciliation": {"task": "payments.reconcile_all", "schedule": crontab(hour=10, minute=30)},
            # Late fees as of the day that just ended, then the ledger check over what was posted.
            "nightly-late-fees": {"task": "billing.post_late_fees_all", "schedule": crontab(hour=1, minute=0)},
            "nightly-invariant-check": {"task": "billing.check_invariants_all", "schedule": crontab(hour=2, minute=0)},
            # Channel notifications stored but not applied, because their apply task was lost.
            "sweep-notifications": {
                "task": "payments.sweep_notifications", "schedule": flask_app.config["NOTIFICATION_SWEEP_S"],
            },
            # Refunds whose confirmation never came.
            "stuck-refunds": {
                "task": "payments.query_stuck_refunds", "schedule": SWEEP_INTERVAL_SECONDS,
                "kwargs": {"older_than_seconds": flask_app.config["REFUND_QUERY_AFTER_SECONDS"]},
            },
        },
    )
    celery.flask_app = flask_app
    flask_app.extensions["celery"] = celery
    return celery
