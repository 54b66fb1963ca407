"""Migrations: one head, no drift from the models, and a clean downgrade and upgrade."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade

from app.extensions import db


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


def test_downgrade_then_upgrade(app_ctx):
    downgrade(revision="base")
    assert "account" not in sa.inspect(db.engine).get_table_names()

    upgrade()

    assert "account" in sa.inspect(db.engine).get_table_names()
