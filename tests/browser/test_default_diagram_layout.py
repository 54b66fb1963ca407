"""Layout of every default diagram in bpmn/ as the read-only instance viewer draws it, in English and Chinese.

English step names are longer than the Chinese ones and wrap onto more lines, so each diagram
is checked in both languages: no two rendered labels intersect, and the boundary events
attached to one task do not cover each other.
"""

import itertools

import pytest
import sqlalchemy as sa
from lxml import etree

from app.extensions import db
from app.org.models import User
from app.processes.deployment import BPMN_DIR
from app.processes.models import PROCESS_TYPES
from app.processes.services import start_process
from tests.processes.conftest import make_account  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
# Account status, starting user, start form values and the permission to start each process type with.
STARTS = {
    "suspension": ("normal", "tj_clerk", {"reason": "vacant"}, "process.start"),
    "waiver": ("normal", "tj_clerk", {"category": "hardship", "mode": "amount", "amount": "10.00", "evidence": "证明 1"}, "process.start"),
    "forced_shutoff": ("normal", "tj_clerk", {"comment": "欠费"}, "process.start"),
    "area_adjustment": ("normal", "tj_clerk", {"new_area": "80.00", "evidence_kind": "certificate", "certificate_no": "C-1"}, "process.start"),
    "reheating": ("suspended", "tj_clerk", {"requested_on": "2026-01-20"}, "process.start"),
    "connection": ("not_connected", "tj_clerk", {"applied_area": "80.00", "contract_no": "RW-1"}, "process.start"),
    "back_charge": ("suspended", "tj_field", {"inspected_on": "2026-01-20", "finding": "reopened_valve"}, "fieldwork.do"),
}
# Screen rectangles of every label text the viewer drew (external labels of events, gateways and
# flows, the names inside tasks, lanes and the pool), and of the given shapes.
RENDERED_BOXES = """(shapeIds) => {
  const rect = (element) => {
    const box = element.getBoundingClientRect();
    return [box.left, box.top, box.right, box.bottom];
  };
  const labels = [];
  document.querySelectorAll('#instance-diagram .djs-element').forEach((element) => {
    const text = element.querySelector(':scope > .djs-visual text.djs-label');
    if (text && text.textContent.trim()) {
      labels.push({ id: element.dataset.elementId, text: text.textContent, box: rect(text) });
    }
  });
  const shapes = {};
  shapeIds.forEach((id) => {
    const visual = document.querySelector(`#instance-diagram .djs-element[data-element-id="${id}"] > .djs-visual`);
    if (visual) {
      shapes[id] = rect(visual);
    }
  });
  return { labels, shapes };
}"""


def _boundary_events(process_type):
    """Return {task id: [boundary event ids]} of a default diagram."""
    root = etree.parse(str(BPMN_DIR / f"{process_type}.bpmn")).getroot()
    attached = {}
    for event in root.iter(f"{{{BPMN_NS}}}boundaryEvent"):
        attached.setdefault(event.get("attachedToRef"), []).append(event.get("id"))
    return attached


def _intersect(first, second):
    return first[0] < second[2] and second[0] < first[2] and first[1] < second[3] and second[1] < first[3]


def _label_overlaps(labels):
    return [
        (first["id"], second["id"], first["text"], second["text"])
        for first, second in itertools.combinations(labels, 2)
        if _intersect(first["box"], second["box"])
    ]


@pytest.mark.parametrize("process_type", sorted(PROCESS_TYPES))
def test_default_diagram_labels_apart(page, browser_login, make_account, process_type):  # noqa: F811
    status, username, values, permission = STARTS[process_type]
    starter = db.session.scalar(sa.select(User).filter_by(username=username))
    instance = start_process(process_type, make_account("TJ", "87.35", status=status).id, starter, values, permission=permission)
    attached = _boundary_events(process_type)
    boundary_ids = [event for events in attached.values() for event in events]

    for locale in ("en", "zh_CN"):
        db.session.execute(sa.update(User).where(User.username == "tj_approver").values(locale=locale))
        db.session.commit()
        browser_login(page, "tj_approver")
        page.goto(f"/processes/instances/{instance.id}")
        page.wait_for_selector('#instance-diagram[data-loaded="true"]')
        rendered = page.evaluate(RENDERED_BOXES, boundary_ids)

        external = [label for label in rendered["labels"] if label["id"].endswith("_label")]
        assert len(external) >= 10, (locale, external)
        assert _label_overlaps(rendered["labels"]) == [], locale
        assert sorted(rendered["shapes"]) == sorted(boundary_ids), locale
        for task, events in attached.items():
            touching = [
                (first, second) for first, second in itertools.combinations(events, 2)
                if _intersect(rendered["shapes"][first], rendered["shapes"][second])
            ]
            assert touching == [], (locale, task)
        page.context.clear_cookies()
