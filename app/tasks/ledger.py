"""Background ledger import, so a large upload does not hold a web request."""

import logging

import sqlalchemy as sa

from app.extensions import celery, db
from app.ledger.models import LedgerImport, utcnow
from app.ledger.services import apply_result, import_ledger
from app.org.models import Company
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)


@celery.task(name="ledger.import_ledger")
def import_ledger_task(import_id, company_id):
    """Run one queued LedgerImport and record its outcome and progress."""
    with scoped(company_scope(company_id, label=f"task:ledger.import_ledger:{import_id}")):
        job = db.session.get(LedgerImport, import_id)
        if job is None or job.status not in ("queued", "running"):
            logger.info("Ledger import %s is not pending; nothing to do", import_id)
            return
        job.status = "running"
        db.session.commit()
        company = db.session.scalar(sa.select(Company).filter_by(id=company_id))
        content, filename, user_id = job.content, job.filename, job.created_by_id

        def progress(phase, done, total):
            # Progress is written on a separate connection so the page sees it before the commit.
            # SQLite allows one writer at a time: while the import holds it, only validation
            # progress can be shown there.
            if phase == "storing" and db.engine.dialect.name == "sqlite":
                return
            with db.engine.begin() as connection:
                connection.execute(
                    sa.update(LedgerImport.__table__)
                    .where(LedgerImport.__table__.c.id == import_id)
                    .values(processed_rows=done, data_rows=total, phase=phase)
                )

        try:
            result = import_ledger(company, content, filename, user_id=user_id, progress=progress)
        except Exception:
            db.session.rollback()
            logger.exception("Ledger import %s of company %s failed", import_id, company_id)
            job = db.session.get(LedgerImport, import_id)
            job.status = "failed"
            job.summary = "导入失败：服务器内部错误，数据未保存。请联系管理员。"
            job.finished_at = utcnow()
            db.session.commit()
            return
        job = db.session.get(LedgerImport, import_id)
        apply_result(job, result)
        job.finished_at = utcnow()
        db.session.commit()
