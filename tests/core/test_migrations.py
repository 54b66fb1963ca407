"""Migrations: one head, no drift from the models, and a clean downgrade and upgrade."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade

from app import create_app
from app.celery_app import init_celery
from app.extensions import db
from tests.conftest import grant_test_app_role


def _script_directory(app):
    config = app.extensions["migrate"].migrate.get_config()
    return ScriptDirectory.from_config(config)


def test_single_head(app_ctx):
    assert len(_script_directory(app_ctx).get_heads()) == 1


def test_models_match_migrations(app_ctx):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)

    assert differences == []


def test_downgrade_then_upgrade(app_ctx, backend, database_owner_url):
    # Dropping tables needs the owner; on PostgreSQL the app's own role may not.
    db.session.remove()
    owner_app = create_app({"SQLALCHEMY_DATABASE_URI": database_owner_url}, config_name="testing")
    with owner_app.app_context():
        downgrade(revision="base")
        assert "account" not in sa.inspect(db.engine).get_table_names()

        upgrade()

        assert "account" in sa.inspect(db.engine).get_table_names()
        db.engine.dispose()
    init_celery(app_ctx)  # create_app bound Celery to the owner app
    if backend == "postgres":
        grant_test_app_role(database_owner_url)
