"""The process_spec table: each serialized workflow spec stored once per company and referenced by instance states."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db
from app.processes.engine import spec_document
from app.processes.models import ProcessSpec


def store_spec(company_id, workflow):
    """Store the workflow's spec document for the company unless the state it was loaded from already references it.

    Runs in the caller's transaction, so the spec row commits together with the state
    that references it. A concurrent first insert of the same spec is ignored.
    """
    digest, text = spec_document(workflow)
    if getattr(workflow, "loaded_spec_digest", None) == digest:
        return digest
    dialect = db.session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    db.session.execute(
        insert(ProcessSpec)
        .values(company_id=company_id, digest=digest, document=text)
        .on_conflict_do_nothing(index_elements=["company_id", "digest"])
    )
    return digest


def stored_document(digest):
    """Return the stored JSON document of a spec digest visible in the current scope, or None."""
    return db.session.scalar(sa.select(ProcessSpec.document).where(ProcessSpec.digest == digest).limit(1))
