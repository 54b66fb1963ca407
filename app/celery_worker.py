"""Entry point for `celery -A app.celery_worker worker`: the Celery app bound to Flask."""

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
