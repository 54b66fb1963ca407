"""Celery bound to the Flask app: each task runs inside an app context, under the system
scope unless the task sets a company scope itself."""

from celery import Task

from app.extensions import celery


def init_celery(app):
    """Configure the shared Celery object from the app config."""
    celery.conf.update(
        broker_url=app.config["CELERY_BROKER_URL"],
        task_always_eager=app.config.get("CELERY_TASK_ALWAYS_EAGER", False),
        task_eager_propagates=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        timezone="Asia/Shanghai",
    )

    class AppContextTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return super().__call__(*args, **kwargs)

    celery.Task = AppContextTask
    app.extensions["celery"] = celery

    import app.tasks.ledger  # noqa: F401  registers the tasks

    return celery
