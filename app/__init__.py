"""Heatflow: group-wide heating billing on a BPMN engine. `create_app` builds the Flask app."""

import logging

from flask import Flask

from config import INSTANCE_DIR, load_config


def create_app(overrides=None, config_name=None):
    """Build the app from a config class, then apply `overrides` (used by tests)."""
    app = Flask(__name__, instance_path=str(INSTANCE_DIR), instance_relative_config=False)
    app.config.from_object(load_config(config_name))
    if overrides:
        app.config.update(overrides)
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    from app.extensions import csrf, db, login_manager, migrate

    db.init_app(app)
    from app.rls import install_scope_settings

    with app.app_context():
        install_scope_settings(db.engine)
    migrate.init_app(app, db, directory=str(INSTANCE_DIR.parent / "migrations"), render_as_batch=True, compare_type=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    from app.i18n import init_i18n

    init_i18n(app)

    from app import models  # noqa: F401  registers every table with the metadata
    from app.celery_app import init_celery
    from app.cli import register_cli
    from app.web import register_web

    init_celery(app)
    register_cli(app)
    register_web(app)
    return app
