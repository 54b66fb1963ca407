"""Required fields of forms built from definitions: the HTML required attribute and the asterisk after the label."""

import re
from html.parser import HTMLParser

from tests.processes.conftest import instance_of, open_task, start_request


class _FormFields(HTMLParser):
    """Collect, per input name, whether the input carries `required` and whether its label ends with the mark."""

    def __init__(self):
        super().__init__()
        self.required = {}
        self.marked = set()
        self._label_text = ""
        self._legend_marked = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in ("label", "legend"):
            self._label_text = ""
        if tag == "abbr" and attributes.get("class") == "required-mark":
            self._label_text += "*"
        name = attributes.get("name")
        if tag in ("input", "select", "textarea") and name and attributes.get("type") != "hidden":
            self.required[name] = self.required.get(name, False) or "required" in attributes
            if self._label_text.endswith("*") or self._legend_marked:
                self.marked.add(name)

    def handle_endtag(self, tag):
        # The inputs of a fieldset (radio buttons) take the mark of its legend.
        if tag == "legend":
            self._legend_marked = self._label_text.endswith("*")
        if tag == "fieldset":
            self._legend_marked = False

    def handle_data(self, data):
        if data.strip():
            self._label_text = data.strip()


def _fields(html):
    parser = _FormFields()
    parser.feed(html)
    return parser


def test_field_result_form_marks_required(valve_task, login):
    _account, _instance, task = valve_task
    page = login("tj_field").get(f"/field/tasks/{task.id}").get_data(as_text=True)
    fields = _fields(page)

    assert fields.required["result"] is True
    assert fields.required["seal_no"] is True
    assert fields.required["photo_note"] is False
    assert fields.required["comment"] is False
    assert {"result", "seal_no"} <= fields.marked
    assert "photo_note" not in fields.marked
    assert "comment" not in fields.marked
    assert re.search(r'<abbr class="required-mark" title="必填">\*</abbr>\s*封签号', page) is None
    assert '封签号<abbr class="required-mark" title="必填">*</abbr>' in page
    assert "为必填项" in page


def test_approval_form_marks_decision_in_english(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    task = open_task(instance_of(account.id, "suspension").id, "company_approval")
    approver = login("tj_approver")
    assert approver.post("/language", data={"locale": "en"}).status_code in (302, 303)
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303

    page = approver.get(f"/processes/tasks/{task.id}").get_data(as_text=True)
    fields = _fields(page)

    assert fields.required["decision"] is True
    assert fields.required["comment"] is False
    assert "decision" in fields.marked
    assert 'title="Required">*</abbr>' in page
    assert "marks a required field" in page
