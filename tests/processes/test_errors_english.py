"""Errors of the process area read in English for English users: calendar import, designer, DMN tables, service tasks.

Each case sends real bad input through the web routes. The service-task error is also
stored in the instance history, and each reader sees it in their own language.
"""

import io

import sqlalchemy as sa

from app.extensions import db
from app.processes.deployment import BPMN_DIR
from app.processes.models import ProcessEvent
from tests.processes.conftest import instance_of, open_task, start_process_request, submit_task
from tests.processes.test_decisions import _tj_suspension_xml

SUSPENSION = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")
DESIGN = "/processes/design/suspension"


def _english(client):
    response = client.post("/language", data={"locale": "en"})
    assert response.status_code in (302, 303)
    return client


def _has_chinese(text):
    return any("\u4e00" <= char <= "\u9fff" for char in text)


def _calendar_upload(client, name, content):
    return client.post(
        "/processes/calendar", data={"action": "import", "file": (io.BytesIO(content), name)},
        content_type="multipart/form-data",
    )


def test_calendar_file_error_english(demo, login):
    admin = _english(login("tj_admin"))

    wrong_type = _calendar_upload(admin, "2031.txt", b"x")
    empty = _calendar_upload(admin, "2031.csv", b"")
    no_header = _calendar_upload(admin, "2031.csv", "甲,乙\n1,2\n".encode())

    assert wrong_type.status_code == 400
    assert "The file &#34;2031.txt&#34; is not .csv or .xlsx" in wrong_type.get_data(as_text=True)
    assert "The file is empty" in empty.get_data(as_text=True)
    assert "No header row was found in the first 10 rows" in no_header.get_data(as_text=True)
    assert "Date, Type, Name" in no_header.get_data(as_text=True)


def test_calendar_row_errors_english(demo, login):
    admin = _english(login("tj_admin"))
    rows = "日期,类型,名称\n2031-02-30,假日,测试节\n2031-10-01,放两天,测试节\n2031-10-06,调休工作日,测试节调休上班\n"

    response = _calendar_upload(admin, "2031.csv", rows.encode())
    page = response.get_data(as_text=True)

    assert response.status_code == 400
    assert "is not a valid date; write it as YYYY-MM-DD" in page
    assert "The kind is invalid; enter holiday or workday" in page
    assert "is a Monday, already a working day" in page
    assert "不是有效日期" not in page


def test_designer_errors_english(demo, login):
    admin = _english(login("tj_admin"))
    unknown_lane = SUSPENSION.replace('<bpmn:lane id="lane_field_staff" name="field_staff">', '<bpmn:lane id="lane_field_staff" name="valve_team">')

    empty = admin.post(f"{DESIGN}/validate", data={})
    garbage = admin.post(f"{DESIGN}/validate", data={"xml": "<bpmn:definitions"})
    lane = admin.post(f"{DESIGN}/validate", data={"xml": unknown_lane})
    deploy = admin.post(f"{DESIGN}/deploy", data={"xml": unknown_lane})

    assert empty.status_code == 400
    assert empty.get_json()["message"] == "No diagram was received (the xml field is empty); save again in the designer."
    assert garbage.get_json()["errors"][0]["message"].startswith("The file cannot be read: ")
    assert not _has_chinese(garbage.get_json()["errors"][0]["message"])
    lane_messages = {error["element_id"]: error["message"] for error in lane.get_json()["errors"]}
    assert lane_messages["lane_field_staff"].startswith('Lane "valve_team" is not a process role')
    assert deploy.status_code == 400
    assert deploy.get_json()["message"].startswith("The diagram has ")
    assert "problems and was not deployed" in deploy.get_json()["message"]


def test_designer_unwired_element_english(demo, login):
    admin = _english(login("tj_admin"))
    # A task in the clerk lane that no sequence flow reaches or leaves.
    lonely = SUSPENSION.replace(
        "<bpmn:flowNodeRef>start_request</bpmn:flowNodeRef>",
        "<bpmn:flowNodeRef>start_request</bpmn:flowNodeRef>\n        <bpmn:flowNodeRef>lonely</bpmn:flowNodeRef>",
    ).replace("</bpmn:startEvent>", '</bpmn:startEvent>\n    <bpmn:task id="lonely" name="孤立任务" />', 1)

    response = admin.post(f"{DESIGN}/validate", data={"xml": lonely})

    messages = {error["element_id"]: error["message"] for error in response.get_json()["errors"]}
    assert messages["lonely"].startswith("No sequence flow leads into this element")
    assert "and none leads out" in messages["lonely"]


def test_decision_table_errors_english(demo, login):
    admin = _english(login("tj_admin"))
    table = "/processes/decisions/suspension_escalation"

    broken = admin.post(table, data={"xml": "<definitions"})
    doctype = admin.post(table, data={"xml": '<!DOCTYPE d [<!ENTITY x "y">]><definitions/>'})
    unknown = admin.post(table, data={"xml": _tj_suspension_xml(100).replace("text(building_area)", "text(floor_area)")})
    keyword = admin.post(table, data={"xml": _tj_suspension_xml(100).replace("&gt; 100", "&gt; __import__('os')")})

    assert broken.status_code == 400
    assert broken.get_json()["errors"][0]["message"].startswith("The file is not well-formed XML (line 1)")
    assert doctype.get_json()["errors"][0]["message"].startswith("A decision table may not contain a DOCTYPE")
    unknown_message = unknown.get_json()["errors"][0]["message"]
    assert 'uses unknown variables "floor_area"' in unknown_message
    assert unknown_message.startswith('The output of rule 2, column')
    # The column label is data from the table, so it stays as the table names it.
    keyword_message = keyword.get_json()["errors"][0]["message"]
    assert keyword_message.startswith('The condition of rule 2, column "建筑面积（㎡）",')
    assert "failed the expression check" in keyword_message


def test_service_error_english_and_stored(demo, make_account, login):
    account = make_account("TJ", "87.35", status="suspended")
    response = start_process_request(login("tj_clerk"), "reheating", account.id, {"requested_on": "2026-01-20", "comment": ""})
    assert response.status_code == 302
    instance = instance_of(account.id, "reheating")
    approver = login("tj_approver")
    submit_task(approver, open_task(instance.id, "company_approval").id, {"decision": "approve"})
    field = _english(login("tj_field"))

    rejected = submit_task(field, open_task(instance.id, "valve_open").id, {"opened_on": "2026-03-16"})

    assert rejected.status_code == 409
    page = rejected.get_data(as_text=True)
    assert "The date 2026-03-16 is outside the heating season 2025-2026" in page
    assert "不在供暖季" not in page
    db.session.expire_all()
    event = db.session.scalar(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "error")
    )
    # Stored in Chinese with its msgid, so each reader gets their own language.
    assert event.comment.startswith("步骤 reheat_account_task 未能完成：日期 2026-03-16 不在供暖季 2025-2026")
    assert event.data["message"]["params"]["element"] == "reheat_account_task"
    chinese_history = approver.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    english_history = _english(approver).get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    assert "步骤 reheat_account_task 未能完成：日期 2026-03-16 不在供暖季 2025-2026" in chinese_history
    assert "Step reheat_account_task could not be completed: The date 2026-03-16 is outside the heating season" in english_history
    assert "不在供暖季" not in english_history
