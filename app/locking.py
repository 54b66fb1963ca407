"""Row locks that hold on both databases."""

import sqlalchemy as sa

from app.extensions import db


def lock_row(model, row_id, options=()):
    """Load a row under a write lock held to the end of the transaction.

    PostgreSQL takes a row lock with SELECT ... FOR UPDATE. SQLite ignores FOR UPDATE, so
    a no-op UPDATE first takes its database write lock. Without it, two transactions could
    both read the old state before either writes.
    """
    return lock_matching_row(model, model.id == row_id, options=options)


def lock_matching_row(model, *criteria, options=()):
    """Load the one row of `model` matching `criteria` under a write lock, or None; see lock_row.

    `options` are loader options such as joinedload. The lock covers the row of `model`
    only, not the rows they join.
    """
    return RowLock(model, *criteria, options=options)()


class RowLock:
    """The statements of lock_matching_row, built once for a hot path; `criteria` may hold bind parameters.

    Calling it with the parameters' values loads the row under the lock, or returns None.
    """

    def __init__(self, model, *criteria, options=()):
        # SQLite ignores FOR UPDATE, so this no-op UPDATE takes its database write lock first.
        self.sqlite_update = (
            sa.update(model).where(*criteria).values(id=model.id).execution_options(synchronize_session=False)
        )
        self.select = (
            sa.select(model).where(*criteria).options(*options).with_for_update(of=model)
            .execution_options(populate_existing=True)
        )

    def __call__(self, **parameters):
        if db.session.get_bind().dialect.name == "sqlite":
            db.session.execute(self.sqlite_update, parameters)
        # unique() merges the rows that a joinedload of a collection returns for one locked row.
        return db.session.execute(self.select, parameters).unique().scalar_one_or_none()
