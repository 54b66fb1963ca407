"""Deploying process models per company with their decision tables, and the demo installer."""

import functools
import logging
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.processes.decisions import decisions_for, ensure_decisions, sha256_text
from app.processes.dmn import referenced_decisions
from app.processes.engine import parse_model, validate_model
from app.processes.models import PROCESS_TYPES, ProcessModel

logger = logging.getLogger(__name__)

BPMN_DIR = Path(__file__).resolve().parents[2] / "bpmn"


def latest_model(company_id, process_type):
    """Return the newest published model of a company and process type, or None."""
    return db.session.scalar(
        sa.select(ProcessModel)
        .where(
            ProcessModel.company_id == company_id,
            ProcessModel.process_type == process_type,
            ProcessModel.status == "published",
        )
        .order_by(ProcessModel.version.desc())
        .limit(1)
    )


def deploy_model(company_id, process_type, bpmn_xml, user_id=None, template_version=None):
    """Validate a diagram and store it as the company's next version; re-deploying the newest file returns it unchanged.

    The diagram is checked together with the company's current decision tables that its
    business rule tasks call. Raises ModelValidationError listing each finding (element
    id and reason), and ValueError for an unknown process type. Earlier versions are
    retired for new starts, while instances already running keep the version they
    started on. `template_version` is the group template version the diagram descends from.
    """
    if process_type not in PROCESS_TYPES:
        raise ValueError(f"Unknown process type {process_type!r}; use one of {', '.join(PROCESS_TYPES)}.")
    digest = sha256_text(bpmn_xml)
    decisions = decisions_for(company_id, referenced_decisions(bpmn_xml))
    validated_spec(digest, process_type, bpmn_xml, _decision_key(decisions))
    current = latest_model(company_id, process_type)
    if current is not None and current.sha256 == digest:
        return current
    newest_version = db.session.scalar(
        sa.select(sa.func.max(ProcessModel.version)).where(
            ProcessModel.company_id == company_id, ProcessModel.process_type == process_type
        )
    )
    if current is not None:
        current.status = "retired"
    model = ProcessModel(
        company_id=company_id,
        process_type=process_type,
        version=(newest_version or 0) + 1,
        bpmn_xml=bpmn_xml,
        sha256=digest,
        template_version=template_version,
        status="published",
        created_by_id=user_id,
    )
    db.session.add(model)
    db.session.flush()
    logger.info("Deployed %s version %s for company %s (sha256 %s)", process_type, model.version, company_id, digest[:12])
    return model


def _decision_key(decisions):
    """Hashable (decision id, sha256, DMN text) triples of decision versions, for the spec caches."""
    return tuple(sorted((decision.decision_id, decision.sha256, decision.dmn_xml) for decision in decisions))


@functools.lru_cache(maxsize=32)
def validated_spec(digest, process_type, bpmn_xml, decision_key=()):
    """Validate a diagram with its decision tables once per content (the checks depend only on the texts); returns (spec, subprocess specs).

    A diagram that fails raises ModelValidationError on every call, because lru_cache
    keeps only returned values.
    """
    return validate_model(bpmn_xml, process_type, {decision_id: xml for decision_id, _sha, xml in decision_key})


@functools.lru_cache(maxsize=32)
def parsed_spec(digest, process_type, bpmn_xml, decision_key=()):
    """Parse a deployed diagram with its decision tables once per content; returns (spec, subprocess specs)."""
    return parse_model(bpmn_xml, process_type, {decision_id: xml for decision_id, _sha, xml in decision_key})


def spec_for(model, decisions=None):
    """The parsed workflow spec of a stored model version with decision table versions (default: the company's current ones)."""
    if decisions is None:
        decisions = decisions_for(model.company_id, referenced_decisions(model.bpmn_xml))
    return parsed_spec(model.sha256, model.process_type, model.bpmn_xml, _decision_key(decisions))


def install_demo_processes(companies):
    """Install the escalation tables and deploy bpmn/<type>.bpmn of every process type to each subsidiary.

    Each company's tables are copies of the group templates with its escalation settings
    (the defaults for a new company). Idempotent: a company that already has a published
    model or table of a type keeps it, and existing settings keep the values its
    administrator set.
    """
    diagrams = {process_type: (BPMN_DIR / f"{process_type}.bpmn").read_text(encoding="utf-8") for process_type in PROCESS_TYPES}
    for company in companies:
        if company.is_headquarters:
            continue
        ensure_decisions(company.id)
        for process_type, bpmn_xml in diagrams.items():
            if latest_model(company.id, process_type) is None:
                deploy_model(company.id, process_type, bpmn_xml, template_version=0)
