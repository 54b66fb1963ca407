"""The nightly jobs on Celery beat: late-fee posting for every company and the invariant check that reports to HQ.

A TJ account of 87.35 m² owes 87.35 × 25.00 = 2183.75 for 2025-2026. TJ charges 2‰ a day
from 2026-01-01: 4.37 as of 2026-01-01 (4.3675) and 2183.75 × 0.002 × 31 = 135.39 as of
2026-01-31. QD, SJZ and BJ charge no late fee.
"""

import ast
import logging
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery.schedules import crontab

import app.tasks.billing as billing_tasks
from app.billing.late_fees import late_fee_total
from app.billing.invariants import find_invariant_breaks
from app.billing.models import InvariantFinding, LedgerEntry
from app.billing.services import run_billing
from app.extensions import celery, db
from app.hq.models import CompanyAccountCount
from app.hq.totals import rebuild_season_totals
from app.network.models import Account
from app.tariffs.services import get_season
from app.tasks.billing import check_invariants_all_task, post_late_fees_all_task

SEASON = "2025-2026"
CELERY_APP_SOURCE = Path(__file__).resolve().parents[2] / "app" / "celery_app.py"


@pytest.fixture
def tj_unpaid(add_account):
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    return account, get_season(account.company_id, SEASON)


def _beat_schedule_keys():
    """The keys of the beat_schedule dict literal in app/celery_app.py, in source order."""
    tree = ast.parse(CELERY_APP_SOURCE.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "beat_schedule":
            return [key.value for key in node.value.keys]
    raise AssertionError("app/celery_app.py sets no beat_schedule")


def test_beat_schedule_has_nightly_jobs(app):
    schedule = celery.conf.beat_schedule
    assert schedule["nightly-late-fees"]["task"] == "billing.post_late_fees_all"
    assert schedule["nightly-late-fees"]["schedule"] == crontab(hour=1, minute=0)
    assert schedule["nightly-invariant-check"]["task"] == "billing.check_invariants_all"
    assert schedule["nightly-invariant-check"]["schedule"] == crontab(hour=2, minute=0)
    assert celery.conf.timezone == "Asia/Shanghai"
    assert "billing.post_late_fees_all" in celery.tasks
    assert "billing.check_invariants_all" in celery.tasks
    keys = _beat_schedule_keys()
    assert len(keys) == len(set(keys)), keys


def test_nightly_late_fees_post_each_company_once(tj_unpaid):
    account, season = tj_unpaid
    first = post_late_fees_all_task("2026-01-31")
    again = post_late_fees_all_task("2026-01-31")
    assert set(first) == {"TJ"}
    assert first["TJ"] >= 1
    assert again == first
    db.session.expire_all()
    assert late_fee_total(account.id, season.id) == Decimal("135.39")
    lines = db.session.scalars(sa.select(LedgerEntry).filter_by(account_id=account.id, kind="late_fee")).all()
    assert len(lines) == 1  # the re-run posted nothing


def test_nightly_late_fees_default_to_yesterday(tj_unpaid, monkeypatch):
    account, season = tj_unpaid
    monkeypatch.setattr(billing_tasks, "_yesterday", lambda: date(2026, 1, 1))
    assert set(post_late_fees_all_task()) == {"TJ"}
    db.session.expire_all()
    assert late_fee_total(account.id, season.id) == Decimal("4.37")
    # On the start date itself nothing accrues, so the job skips the company.
    monkeypatch.setattr(billing_tasks, "_yesterday", lambda: date(2025, 12, 31))
    assert post_late_fees_all_task() == {}


def _plant_orphan_payment_line(owner_engine, account, season):
    """Insert a payment line without a payment as the database owner, past the ORM and row-level security.

    The HQ season totals are rebuilt after it, so the payment allocation is the only break.
    """
    with owner_engine.begin() as connection:
        result = connection.execute(
            LedgerEntry.__table__.insert().values(
                company_id=account.company_id, account_id=account.id, season_id=season.id, kind="payment",
                amount=Decimal("-50.00"), cause_type="payment", idempotency_key="planted-orphan-payment", memo="",
            )
        )
        rebuild_season_totals(connection)
        return result.inserted_primary_key[0]


def _open_findings():
    db.session.expire_all()
    return db.session.scalars(sa.select(InvariantFinding).where(InvariantFinding.resolved_at.is_(None))).all()


def test_nightly_check_reports_planted_break(tj_unpaid, owner_engine, login, caplog):
    account, season = tj_unpaid
    assert check_invariants_all_task() == {}
    assert _open_findings() == []

    line_id = _plant_orphan_payment_line(owner_engine, account, season)
    with caplog.at_level(logging.ERROR, logger="app.tasks.billing"):
        assert check_invariants_all_task() == {"TJ": 1}
    [finding] = _open_findings()
    assert finding.company_id == account.company_id
    assert finding.season_id == season.id
    assert finding.account_id == account.id
    assert finding.check_name == "payment_allocation"
    assert finding.detail == "payments 0.00 but payment lines 50.00"
    assert finding.times_found == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "app.tasks.billing"]
    assert errors == [f"Ledger invariant broken in company TJ season {season.id} account {account.id}: payment_allocation payments 0.00 but payment lines 50.00"]

    page = login("hq_auditor").get("/hq/invariants")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "共 1 项未解决问题" in text
    assert account.account_no in text
    assert "收款与台账收款行不符" in text
    assert "payment lines 50.00" in text
    assert login("tj_clerk").get("/hq/invariants").status_code == 403

    # Found again the next night: the same finding, counted, and no second ERROR line.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="app.tasks.billing"):
        check_invariants_all_task()
    [again] = _open_findings()
    assert again.id == finding.id
    assert again.times_found == 2
    assert not [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "app.tasks.billing"]

    # Once the line is gone, the next check resolves the finding.
    with owner_engine.begin() as connection:
        connection.execute(LedgerEntry.__table__.delete().where(LedgerEntry.__table__.c.id == line_id))
        rebuild_season_totals(connection)
    assert check_invariants_all_task() == {}
    assert _open_findings() == []
    resolved = db.session.get(InvariantFinding, finding.id)
    assert resolved.resolved_at is not None
    assert "没有未解决的问题" in login("hq_auditor").get("/hq/invariants").get_data(as_text=True)


def _lose_connection():
    """Drop the session's database connection the way a server restart does."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
    raise sa.exc.OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))


def test_nightly_check_retried_after_lost_connection(tj_unpaid, owner_engine, monkeypatch):
    account, season = tj_unpaid
    _plant_orphan_payment_line(owner_engine, account, season)
    checked = []

    def check_losing_first_connection(company_id, season_id):
        checked.append(company_id)
        if len(checked) == 1:
            _lose_connection()
        return find_invariant_breaks(company_id, season_id)

    monkeypatch.setattr(billing_tasks, "find_invariant_breaks", check_losing_first_connection)
    # throw=False lets eager apply() run the retry instead of raising it to the caller.
    result = check_invariants_all_task.apply(throw=False)

    assert result.get() == {"TJ": 1}
    assert checked.count(account.company_id) == 2
    [finding] = _open_findings()
    assert finding.account_id == account.id
    assert finding.times_found == 1


def test_nightly_check_reports_wrong_account_count(tj_unpaid, owner_engine, login, app):
    account, _season = tj_unpaid
    count = CompanyAccountCount.__table__
    accounts = db.session.scalar(sa.select(sa.func.count(Account.id)).filter_by(company_id=account.company_id))
    assert accounts >= 1
    assert check_invariants_all_task() == {}
    with owner_engine.begin() as connection:
        connection.execute(count.update().where(count.c.company_id == account.company_id).values(accounts=accounts + 5))

    assert check_invariants_all_task() == {"TJ": 1}

    [finding] = _open_findings()
    assert finding.company_id == account.company_id
    assert finding.season_id is None
    assert finding.account_id is None
    assert finding.check_name == "hq_account_count"
    assert finding.detail == f"HQ account count {accounts + 5} but {accounts} accounts"
    auditor = login("hq_auditor")
    text = auditor.get("/hq/invariants").get_data(as_text=True)
    assert "集团汇总户数与账户数不符" in text
    assert "全部供暖季" in text
    assert auditor.post("/language", data={"locale": "en"}).status_code == 302
    english = auditor.get("/hq/invariants").get_data(as_text=True)
    assert "HQ account count differs from the accounts" in english
    assert "All seasons" in english

    # A missing count row is a break too: the HQ page would show no accounts.
    with owner_engine.begin() as connection:
        connection.execute(count.delete().where(count.c.company_id == account.company_id))
    assert check_invariants_all_task() == {"TJ": 1}
    [missing] = _open_findings()
    assert missing.detail == f"HQ account count none but {accounts} accounts"

    result = app.test_cli_runner().invoke(args=["heat", "hq-rebuild-totals"])
    assert result.exit_code == 0, result.output

    assert check_invariants_all_task() == {}
    assert _open_findings() == []
    assert db.session.get(InvariantFinding, missing.id).resolved_at is not None
    stored = db.session.scalar(sa.select(CompanyAccountCount.accounts).filter_by(company_id=account.company_id))
    assert stored == accounts
