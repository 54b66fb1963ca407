"""The read-only diagram of a process instance in the reader's language, as Chromium renders it.

Saves instance-diagram-english.png and instance-diagram-chinese.png under the screenshot folder.
"""

import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.models import User
from app.processes.deployment import sha256_text
from app.processes.models import ProcessInstance
from app.processes.services import start_suspension
from tests.processes.conftest import make_account  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

# Every label that the viewer drew, by element id. bpmn-js draws the label of an event, a
# gateway or a flow as its own element "<id>_label", and breaks long labels into one
# <tspan> per line.
RENDERED_LABELS = """() => {
  const labels = {};
  document.querySelectorAll('#instance-diagram .djs-element').forEach((element) => {
    const lines = Array.from(element.querySelectorAll(':scope > .djs-visual text tspan')).map((tspan) => tspan.textContent.trim());
    const text = lines.filter((line) => line).join(' ');
    if (text) {
      labels[element.dataset.elementId.replace(/_label$/, '')] = text;
    }
  });
  return labels;
}"""
CJK = re.compile(r"[\u4e00-\u9fff]")
ENGLISH_LABELS = {
    "suspension_participant": "Suspension",
    "lane_clerk": "Clerk",
    "lane_company_approver": "Company approver",
    "lane_field_staff": "Field worker",
    "lane_group_approver": "Group approver",
    "start_request": "Clerk accepts the suspension request",
    "evaluate_escalation_task": "Decide whether group approval is needed",
    "company_approval": "Company approval",
    "company_decision_gateway": "Company decision",
    "cancel_company_approval_deadline": "Not decided by the deadline",
    "end_cancelled_company_approval_deadline": "Not decided before the heating season: cancelled automatically",
    "remind_company_approval": "Company approval overdue reminder",
    "end_done": "Suspension completed",
    "flow_company_approved": "Approved",
    "flow_company_rejected": "Rejected",
    "flow_company_escalate": "Approved, group approval needed",
    "flow_company_sent_back": "Sent back for documents",
    "flow_escalate_company_approval_timeout": "Overdue",
}
CHINESE_LABELS = {
    "suspension_participant": "报停",
    "lane_company_approver": "分公司审批人",
    "lane_group_approver": "集团审批人",
    "start_request": "营业员受理报停",
    "company_approval": "分公司审批",
    "company_decision_gateway": "分公司意见",
    "end_done": "报停完成",
    "flow_company_approved": "同意",
    "flow_company_rejected": "驳回",
    "flow_company_escalate": "同意，需集团审批",
}


@pytest.fixture
def suspension_instance(make_account):  # noqa: F811
    """Return a TJ 报停 instance that waits for company approval on the default diagram."""
    clerk = db.session.scalar(sa.select(User).filter_by(username="tj_clerk"))
    instance = start_suspension(make_account("TJ", "80.00").id, clerk, "vacant")
    db.session.commit()
    return instance


def _open_diagram(page, browser_login, instance, locale):
    db.session.execute(sa.update(User).where(User.username == "tj_approver").values(locale=locale))
    db.session.commit()
    browser_login(page, "tj_approver")
    page.goto(f"/processes/instances/{instance.id}")
    page.wait_for_selector('#instance-diagram[data-loaded="true"]')
    return page.evaluate(RENDERED_LABELS)


def test_instance_diagram_labels_english(page, browser_login, screenshot, suspension_instance):
    labels = _open_diagram(page, browser_login, suspension_instance, "en")

    for element_id, expected in ENGLISH_LABELS.items():
        assert labels.get(element_id) == expected, element_id
    # TJ's roles keep their seeded names, so their lanes are translated like the rest.
    chinese = {element_id: text for element_id, text in labels.items() if CJK.search(text)}
    assert chinese == {}
    assert page.locator("main h1").inner_text().startswith("Suspension")
    screenshot(page, "instance-diagram-english")

    # The stored diagram keeps its Chinese names.
    instance = db.session.get(ProcessInstance, suspension_instance.id)
    assert sha256_text(instance.model.bpmn_xml) == instance.model.sha256
    assert 'name="分公司审批"' in instance.model.bpmn_xml
    assert 'name="company_approver"' in instance.model.bpmn_xml


def test_instance_diagram_labels_chinese(page, browser_login, screenshot, suspension_instance):
    labels = _open_diagram(page, browser_login, suspension_instance, "zh_CN")

    for element_id, expected in CHINESE_LABELS.items():
        assert labels.get(element_id) == expected, element_id
    assert not any(re.search(r"[A-Za-z]", text) for text in labels.values())
    screenshot(page, "instance-diagram-chinese")
