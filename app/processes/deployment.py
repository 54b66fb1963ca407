"""Deploying process models per company, escalation defaults and the demo installer."""

import functools
import hashlib
import logging
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.processes.engine import parse_model, validate_model
from app.processes.models import PROCESS_TYPES, EscalationRule, ProcessModel

logger = logging.getLogger(__name__)

BPMN_DIR = Path(__file__).resolve().parents[2] / "bpmn"
# Demo escalation: non-residential accounts and areas above 200 m² go to the group.
DEMO_AREA_THRESHOLD = Decimal("200")


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
    validate_model(bpmn_xml, process_type)
    digest = sha256_text(bpmn_xml)
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
def parsed_spec(digest, process_type, bpmn_xml):
    """Parse a deployed diagram once per content hash; returns (spec, subprocess specs)."""
    return parse_model(bpmn_xml, process_type)


def spec_for(model):
    """The parsed workflow spec of a stored model version."""
    return parsed_spec(model.sha256, model.process_type, model.bpmn_xml)


def ensure_escalation_rule(company_id, process_type, escalate_non_residential=True, area_threshold=DEMO_AREA_THRESHOLD):
    """Create a company's escalation rule with these values unless it already has one."""
    rule = db.session.scalar(sa.select(EscalationRule).filter_by(company_id=company_id, process_type=process_type))
    if rule is None:
        rule = EscalationRule(
            company_id=company_id,
            process_type=process_type,
            escalate_non_residential=escalate_non_residential,
            area_threshold=area_threshold,
        )
        db.session.add(rule)
        db.session.flush()
    return rule


def install_demo_processes(companies):
    """Deploy bpmn/suspension.bpmn and the default escalation rule to each subsidiary (idempotent)."""
    bpmn_xml = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")
    for company in companies:
        if company.is_headquarters:
            continue
        ensure_escalation_rule(company.id, "suspension")
        if latest_model(company.id, "suspension") is None:
            deploy_model(company.id, "suspension", bpmn_xml)
