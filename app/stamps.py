"""Values a worker process keeps per company, valid while a stamp column of the company row is unchanged.

Every ORM write of the rows behind a kept value sets the stamp column of the company that
owns them to a new random value in the same transaction. A step reads the stamps with its
row lock (remember), and get() returns a value kept under the stamp read, so an edit takes
effect from the next step on in every worker process. A value is kept only under the stamp
that the statement reading its rows also returned, so the stamp and the rows come from one
snapshot. NOTE: writes by raw SQL leave the stamps as they are.
"""

import uuid

import sqlalchemy as sa
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session

from app.extensions import db
from app.org.models import Company

_COMPANY = Company.__table__


class CompanyStamp:
    """One stamp column of the company row, the models whose writes renew it, and the values kept under it.

    `affected_companies(session, row)` returns the ids of the companies whose stamp a write
    of `row` renews; by default that is the row's own company_id. A process keeps at most
    `max_entries` values, and dropping them all when full is enough for values that are
    cheap to read again.
    """

    def __init__(self, column_name, models, affected_companies=None, max_entries=4096):
        self.column = _COMPANY.c[column_name]
        self.models = tuple(models)
        self.affected_companies = affected_companies or (lambda session, row: {row.company_id})
        self.max_entries = max_entries
        self.info_key = f"heatflow.stamp.{column_name}"
        # key -> (stamp, value); entries are replaced whole, never changed.
        self._entries = {}
        orm_event.listen(Session, "before_flush", self._renew_on_flush)
        orm_event.listen(Session, "do_orm_execute", self._renew_on_bulk_write)
        orm_event.listen(Session, "after_transaction_end", self._forget_after_transaction)

    def of(self, company_id_column):
        """Return a scalar subquery of this stamp for the company in `company_id_column`."""
        return sa.select(self.column).where(_COMPANY.c.id == company_id_column).scalar_subquery()

    def remember(self, company_id, stamp):
        """Note the company's stamp as this transaction read it, so get() may return values kept under it."""
        if stamp:
            db.session.info.setdefault(self.info_key, {})[company_id] = stamp

    def get(self, company_id, key):
        """Return the value kept under `key` for the stamp this transaction read, or None.

        None also when the session contains unflushed changes of the stamped models, because
        the kept value does not show them.
        """
        stamp = db.session.info.get(self.info_key, {}).get(company_id)
        if stamp is None:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] != stamp or self._has_unflushed_writes(db.session):
            return None
        return entry[1]

    def keep(self, key, stamp, value):
        """Keep `value` under `stamp`, which the statement that read its rows returned."""
        if not stamp:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (stamp, value)

    def _has_unflushed_writes(self, session):
        return any(isinstance(row, self.models) for rows in (session.new, session.dirty, session.deleted) for row in rows)

    def _renew(self, session, company_ids=None):
        session.info.pop(self.info_key, None)
        statement = _COMPANY.update().values({self.column.name: uuid.uuid4().hex})
        if company_ids is not None:
            statement = statement.where(_COMPANY.c.id.in_(sorted(company_ids)))
        session.connection().execute(statement)

    def _renew_on_flush(self, session, flush_context, instances):
        # The UPDATE goes out in the flush's transaction, so the new stamp commits together
        # with the rows.
        company_ids = set()
        for rows in (session.new, session.dirty, session.deleted):
            for row in rows:
                if isinstance(row, self.models):
                    company_ids |= self.affected_companies(session, row)
        company_ids.discard(None)
        if company_ids:
            self._renew(session, company_ids)

    def _renew_on_bulk_write(self, execute_state):
        if execute_state.is_select:
            return
        if any(mapper.class_ in self.models for mapper in execute_state.all_mappers):
            # The statement may touch any company's rows, so every company gets a new stamp.
            self._renew(execute_state.session)

    def _forget_after_transaction(self, session, transaction):
        # The inner transaction of each flush does not count: a failed flush ends the outer one too.
        if transaction.parent is None or transaction.nested:
            session.info.pop(self.info_key, None)
