"""Task texts around a request in English: completion and choice messages, field facts, waiver method, history entries.

Each case files a real request through the web routes and reads what an English user sees.
"""

import uuid

from tests.processes.conftest import flashed, instance_of, open_task, start_process_request, start_request, submit_task

WAIVER = {"category": "hardship", "mode": "amount", "amount": "200.00", "percent": "", "evidence": "困难证明 2025-018", "comment": ""}


def _english(client):
    response = client.post("/language", data={"locale": "en"})
    assert response.status_code in (302, 303)
    return client


def _approved_suspension(login, make_account):
    """A TJ 报停 request the company approved, so its 关栓 task waits for the field user."""
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    response = submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return instance


def test_completion_message_names_step_english(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    approver = _english(login("tj_approver"))

    response = submit_task(approver, open_task(instance.id, "company_approval").id, {"decision": "approve"})

    page = flashed(approver, response)
    assert "Task &#34;Company approval&#34; completed." in page
    assert "&#34;分公司审批&#34;" not in page


def test_claim_conflict_names_step_english(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    task = open_task(instance_of(account.id, "suspension").id, "company_approval")
    approver = _english(login("tj_approver"))

    # Submitting without claiming is rejected with the step's name in the message.
    response = approver.post(f"/processes/tasks/{task.id}", data={"decision": "approve"})

    page = response.get_data(as_text=True)
    assert response.status_code == 409
    assert "Task &#34;Company approval&#34; is not claimed yet" in page
    assert "&#34;分公司审批&#34;" not in page


def test_field_task_facts_english(demo, make_account, login):
    instance = _approved_suspension(login, make_account)
    field_task = open_task(instance.id, "valve_close")
    field = _english(login("tj_field"))

    page = field.get(f"/field/tasks/{field_task.id}").get_data(as_text=True)

    facts = page.split('<dl class="field-facts">', 2)[2].split("</dl>", 1)[0]
    assert "<dt>Suspension reason</dt>" in facts
    assert "<dt>Company decision</dt>" in facts
    assert "报停原因" not in facts
    assert "分公司意见" not in facts


def test_field_result_message_names_step_english(demo, make_account, login):
    instance = _approved_suspension(login, make_account)
    field_task = open_task(instance.id, "valve_close")
    field = _english(login("tj_field"))
    data = {"result": "sealed", "seal_no": "TJ-2025-0007", "photo_note": "", "comment": "", "submission_id": str(uuid.uuid4())}

    response = field.post(f"/field/tasks/{field_task.id}", data=data, content_type="multipart/form-data")

    page = flashed(field, response)
    assert "“Close the valve” is done." in page
    assert "「关栓」" not in page


def test_waiver_method_and_history_english(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_process_request(login("tj_clerk"), "waiver", account.id, WAIVER).status_code == 302
    task = open_task(instance_of(account.id, "waiver").id, "company_approval")
    approver = _english(login("tj_approver"))
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303

    page = approver.get(f"/processes/tasks/{task.id}").get_data(as_text=True)

    assert '<tr><th>Waiver method</th><td colspan="3">Fixed amount</td></tr>' in page
    assert "按金额" not in page
    # The request entry of the history: the waiver category, then the amount, as two sentences.
    assert "Reason: Hardship relief. Adjustment: 200.00 yuan" in page


def test_instance_page_links_customer_file_english(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")

    page = _english(login("tj_approver")).get(f"/processes/instances/{instance.id}").get_data(as_text=True)

    assert f'<a href="/accounts/{account.id}">View customer file</a>' in page
    # The request entry ends its reason with a full stop.
    assert "Reason: Vacant." in page


def test_missing_and_invalid_choice_english(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    task = open_task(instance_of(account.id, "suspension").id, "company_approval")
    approver = _english(login("tj_approver"))
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303
    clerk = _english(login("tj_clerk"))

    missing = approver.post(f"/processes/tasks/{task.id}", data={"decision": ""})
    invalid = start_process_request(clerk, "waiver", account.id, {**WAIVER, "category": "bribe"})

    assert missing.status_code == 400
    assert "Decision is required: choose one." in missing.get_data(as_text=True)
    assert invalid.status_code == 400
    assert "Waiver category must be Low-income waiver or Hardship relief or" in invalid.get_data(as_text=True)


def test_valve_history_entries_english(demo, make_account, login):
    instance = _approved_suspension(login, make_account)
    field_task = open_task(instance.id, "valve_close")
    field = _english(login("tj_field"))
    assert submit_task(field, field_task.id, {"result": "sealed", "seal_no": "TJ-2025-0009"}).status_code == 302

    page = field.get(f"/processes/instances/{instance.id}").get_data(as_text=True)

    # Each fact in the description column starts a sentence of its own.
    assert '<td data-label="Description"> Seal: TJ-2025-0009</td>' in page
    assert '<td data-label="Description"> Seal: TJ-2025-0009 (Sealed)</td>' in page
    assert "seal TJ-2025-0009" not in page
