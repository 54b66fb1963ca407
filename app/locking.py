"""Row locks that hold on both databases."""

import sqlalchemy as sa

from app.extensions import db


def lock_row(model, row_id):
    """Load a row under a write lock held to the end of the transaction.

    PostgreSQL takes a row lock with SELECT ... FOR UPDATE. SQLite ignores FOR UPDATE, so
    a no-op UPDATE first takes its database write lock. Without it, two transactions could
    both read the old state before either writes.
    """
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(
            sa.update(model).where(model.id == row_id).values(id=model.id).execution_options(synchronize_session=False)
        )
    return db.session.scalar(
        sa.select(model).where(model.id == row_id).with_for_update().execution_options(populate_existing=True)
    )
