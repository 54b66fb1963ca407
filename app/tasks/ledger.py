"""Background ledger import, so a large upload does not hold a web request."""

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app.celery_app import AppContextTask
from app.extensions import celery, db
from app.i18n import N_
from app.ledger.models import LedgerImport, utcnow
from app.ledger.services import apply_result, import_ledger
from app.org.models import Company
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)


def _claim(import_id, redelivered):
    """Mark a queued import running and return True, or return False when this delivery must not run it.

    The sweep below may queue a job whose first task is still waiting in the broker, so two
    deliveries can name one job: the first to move it from queued to running runs it. A
    job already running runs again only on a redelivery, which the broker makes when the
    worker that held the task died before acknowledging it, or on this task's own retry
    after it lost its database connection (the caller passes True then). A transport that
    does not report redeliveries (None) runs it too, because a redelivery cannot be told
    apart there.

    NOTE: a worker that only lost its broker connection keeps running while the broker
    redelivers, so two imports of one job can overlap; the later commit then fails on the
    unique account number and marks the job failed although the data is stored.
    """
    claimed = db.session.execute(
        sa.update(LedgerImport).where(LedgerImport.id == import_id, LedgerImport.status == "queued").values(status="running")
    ).rowcount
    status = db.session.scalar(sa.select(LedgerImport.status).filter_by(id=import_id))
    db.session.commit()
    if claimed:
        return True
    if status == "running" and redelivered is not False:
        logger.warning("Ledger import %s was left running by a lost worker; running it again", import_id)
        return True
    logger.info("Ledger import %s is %s; nothing to do", import_id, status or "missing")
    return False


class LedgerImportTask(AppContextTask):
    """Ledger import task that marks its job failed when it gives up on its database connection."""

    def on_database_retries_exhausted(self, error, args, kwargs):
        import_id = kwargs["import_id"] if "import_id" in kwargs else args[0]
        _mark_failed(import_id, N_("导入失败：数据库连接多次中断，数据未保存。请稍后重新上传。"))


@celery.task(name="ledger.import_ledger", bind=True, base=LedgerImportTask)
def import_ledger_task(self, import_id, company_id):
    """Run one queued LedgerImport and record its outcome and progress.

    The import is one transaction, so a database connection lost in the middle leaves
    nothing behind, and AppContextTask retries the whole task. The job stays running in
    between, and is marked failed once the retries are used up.

    NOTE: a connection lost after the server committed the import but before the reply
    reached the worker makes the retry import the same ledger again. Nothing is stored
    twice, but the job then reports its accounts as unchanged.
    """
    _import_job(self, import_id, company_id)


def _mark_failed(import_id, summary):
    """Record a failed job, if the database can be reached; otherwise the job stays running.

    `summary` is a Chinese msgid marked with N_; the pages translate it with the `translate` filter.
    """
    try:
        job = db.session.get(LedgerImport, import_id)
        job.status = "failed"
        job.summary = summary
        job.finished_at = utcnow()
        db.session.commit()
    except sa.exc.OperationalError:
        db.session.rollback()
        logger.exception("Ledger import %s could not be marked failed", import_id)


def _import_job(task, import_id, company_id):
    with scoped(company_scope(company_id, label=f"task:ledger.import_ledger:{import_id}")):
        redelivered = (task.request.delivery_info or {}).get("redelivered")
        if not _claim(import_id, True if task.request.retries else redelivered):
            return
        job = db.session.get(LedgerImport, import_id)
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
        except sa.exc.OperationalError:
            raise
        except Exception:
            db.session.rollback()
            logger.exception("Ledger import %s of company %s failed", import_id, company_id)
            _mark_failed(import_id, N_("导入失败：服务器内部错误，数据未保存。请联系管理员。"))
            return
        job = db.session.get(LedgerImport, import_id)
        apply_result(job, result)
        job.finished_at = utcnow()
        db.session.commit()


@celery.task(name="ledger.queue_waiting_imports")
def queue_waiting_imports_task():
    """Queue a task for every import still queued after LEDGER_IMPORT_SWEEP_S; returns the count.

    An upload commits its job before it sends the task, so a broker that could not be
    reached leaves a queued job without a task. Celery beat runs this sweep.
    """
    older = utcnow() - timedelta(seconds=current_app.config["LEDGER_IMPORT_SWEEP_S"])
    waiting = db.session.execute(
        sa.select(LedgerImport.id, LedgerImport.company_id).where(LedgerImport.status == "queued", LedgerImport.created_at < older)
    ).all()
    for import_id, company_id in waiting:
        import_ledger_task.delay(import_id, company_id)
    if waiting:
        logger.info("Queued %s ledger imports again", len(waiting))
    return len(waiting)
