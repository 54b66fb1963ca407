"""Deploying process models per company, escalation defaults and the demo installer."""

import functools
import hashlib
import logging
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.processes.engine import parse_model, validate_model
from app.processes.escalation import ensure_rule
from app.processes.models import PROCESS_TYPES, ProcessModel

logger = logging.getLogger(__name__)

BPMN_DIR = Path(__file__).resolve().parents[2] / "bpmn"


def sha256_text(text):
    """sha256 hex of a text encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def deploy_model(company_id, process_type, bpmn_xml, user_id=None):
    """Validate a diagram and store it as the company's next version; re-deploying the newest file returns it unchanged.

    Raises ModelValidationError listing each finding (element id and reason), and
    ValueError for an unknown process type. Earlier versions are retired for new starts,
    while instances already running keep the version they started on.
    """
    if process_type not in PROCESS_TYPES:
        raise ValueError(f"Unknown process type {process_type!r}; use one of {', '.join(PROCESS_TYPES)}.")
    digest = sha256_text(bpmn_xml)
    validated_spec(digest, process_type, bpmn_xml)
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
        status="published",
        created_by_id=user_id,
    )
    db.session.add(model)
    db.session.flush()
    logger.info("Deployed %s version %s for company %s (sha256 %s)", process_type, model.version, company_id, digest[:12])
    return model


@functools.lru_cache(maxsize=32)
def validated_spec(digest, process_type, bpmn_xml):
    """Validate a diagram once per content hash (the checks depend only on the text); returns (spec, subprocess specs).

    A diagram that fails raises ModelValidationError on every call, because lru_cache
    keeps only returned values.
    """
    return validate_model(bpmn_xml, process_type)


@functools.lru_cache(maxsize=32)
def parsed_spec(digest, process_type, bpmn_xml):
    """Parse a deployed diagram once per content hash; returns (spec, subprocess specs)."""
    return parse_model(bpmn_xml, process_type)


def spec_for(model):
    """The parsed workflow spec of a stored model version."""
    return parsed_spec(model.sha256, model.process_type, model.bpmn_xml)


def install_demo_processes(companies):
    """Deploy bpmn/<type>.bpmn and the default escalation rule of every process type to each subsidiary.

    Idempotent: a company that already has a published model of a type keeps it, and an
    existing rule keeps the values its administrator set.
    """
    diagrams = {process_type: (BPMN_DIR / f"{process_type}.bpmn").read_text(encoding="utf-8") for process_type in PROCESS_TYPES}
    for company in companies:
        if company.is_headquarters:
            continue
        for process_type, bpmn_xml in diagrams.items():
            ensure_rule(company.id, process_type)
            if latest_model(company.id, process_type) is None:
                deploy_model(company.id, process_type, bpmn_xml)
