"""Stored versions of each company's escalation decision tables: creating, reading and saving them.

A company gets version 1 of each table when its processes are installed: the group
template in bpmn/ with the settings rules built from its EscalationRule rows. Every save
(from the DMN endpoints or the settings page) validates the table, stores the next
version, retires the previous one and writes a `decision_changed` audit entry in the same
transaction. New instances use the current version, and running ones keep theirs.
"""

import hashlib
import logging

import sqlalchemy as sa

from app.extensions import db
from app.org.audit import record_event as record_audit_event
from app.processes.dmn import (
    DECISION_IDS, DecisionError, Problem, apply_settings, check_table, decision_id_for, read_settings, settings_copy,
)
from app.processes.escalation import ensure_rule
from app.processes.models import PROCESS_TYPES, DecisionVersion

logger = logging.getLogger(__name__)


def sha256_text(text):
    """sha256 hex of a text encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def current_decision(company_id, decision_id):
    """Return the company's published version of a decision table, or None."""
    return db.session.scalar(
        sa.select(DecisionVersion)
        .where(
            DecisionVersion.company_id == company_id,
            DecisionVersion.decision_id == decision_id,
            DecisionVersion.status == "published",
        )
        .order_by(DecisionVersion.version.desc())
        .limit(1)
    )


def ensure_decision(company_id, process_type):
    """Return the company's current table of a process type, creating version 1 from the template and its settings."""
    decision_id = decision_id_for(process_type)
    current = current_decision(company_id, decision_id)
    if current is not None:
        return current
    xml = settings_copy(process_type, ensure_rule(company_id, process_type))
    return _store(company_id, decision_id, xml, user=None)


def ensure_decisions(company_id):
    """Create each missing table of a company; idempotent."""
    return [ensure_decision(company_id, process_type) for process_type in PROCESS_TYPES]


def decisions_for(company_id, decision_ids):
    """Return the company's current version of each decision id in `decision_ids` that names an escalation table."""
    return [ensure_decision(company_id, DECISION_IDS[decision_id]) for decision_id in decision_ids if decision_id in DECISION_IDS]


def save_decision(company_id, decision_id, xml, user):
    """Validate a table and store it as the company's next version; returns the version row (not committed).

    Saving the text of the current version again returns that version unchanged. Raises
    DecisionError listing every problem (element id and Chinese message); nothing is
    stored then. The settings page's values follow the settings rules of the new table.
    """
    process_type = DECISION_IDS.get(decision_id)
    if process_type is None:
        raise DecisionError([Problem(decision_id, f"没有名为「{decision_id[:64]}」的决策表；可选：{'、'.join(DECISION_IDS)}。")])
    if not (xml or "").strip():
        raise DecisionError([Problem(decision_id, "没有收到决策表内容：请在表单字段 xml 中提交 DMN 文件的全文。")])
    problems = check_table(process_type, xml)
    if problems:
        raise DecisionError(problems)
    current = ensure_decision(company_id, process_type)
    if current.sha256 == sha256_text(xml):
        return current
    version = _store(company_id, decision_id, xml, user)
    _sync_settings(company_id, process_type, xml)
    return version


def save_settings(company_id, rule, user):
    """Rebuild the settings rules of the company's table from a changed EscalationRule and store the result as a new version."""
    current = ensure_decision(company_id, rule.process_type)
    xml = apply_settings(current.dmn_xml, rule.process_type, rule)
    problems = check_table(rule.process_type, xml)
    if problems:
        raise DecisionError(problems)
    if sha256_text(xml) == current.sha256:
        return current
    return _store(company_id, current.decision_id, xml, user)


def _store(company_id, decision_id, xml, user):
    newest = db.session.scalar(
        sa.select(sa.func.max(DecisionVersion.version)).where(
            DecisionVersion.company_id == company_id, DecisionVersion.decision_id == decision_id
        )
    )
    previous = current_decision(company_id, decision_id)
    if previous is not None:
        previous.status = "retired"
    version = DecisionVersion(
        company_id=company_id, decision_id=decision_id, process_type=DECISION_IDS[decision_id],
        version=(newest or 0) + 1, dmn_xml=xml, sha256=sha256_text(xml), status="published",
        created_by_id=user.id if user is not None else None,
    )
    db.session.add(version)
    db.session.flush()
    if user is not None:
        record_audit_event(
            "decision_changed", company_id=company_id, actor=user,
            decision=decision_id, version=version.version,
            previous_version=previous.version if previous is not None else None, sha256=version.sha256,
        )
    logger.info("Stored decision %s version %s for company %s (sha256 %s)", decision_id, version.version, company_id, version.sha256[:12])
    return version


def _sync_settings(company_id, process_type, xml):
    """Copy what the table's settings rules express back to the EscalationRule row the settings page shows."""
    rule = ensure_rule(company_id, process_type)
    for column, value in read_settings(xml, process_type).items():
        setattr(rule, column, value)
    db.session.flush()
