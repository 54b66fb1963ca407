"""Field results from a phone: valve tasks and inspections, applied exactly once."""

import uuid
from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.fieldwork import services
from app.fieldwork.models import FieldPhoto, FieldSubmission, FieldVisit
from app.network.models import Account
from app.processes.models import HumanTask, ProcessEvent, ProcessInstance
from tests.fieldwork.conftest import photo
from tests.processes.conftest import open_task, submit_task

JSON = {"Accept": "application/json"}


def _close(client, task_id, submission_id, headers=None, **extra):
    data = {"submission_id": submission_id, "result": "sealed", "seal_no": "TJ-S-0042", "comment": "用户在场", **extra}
    data.setdefault("photos", [photo()])
    return client.post(f"/field/tasks/{task_id}", data=data, headers=headers or {}, content_type="multipart/form-data")


def _count(model, **filters):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).filter_by(**filters))


def test_field_list_shows_valve_task_with_address(valve_task, login):
    account, _instance, task = valve_task

    page = login("tj_field").get("/field/").get_data(as_text=True)

    assert f"/field/tasks/{task.id}" in page
    assert account.address in page
    assert "关栓" in page


def test_valve_close_applied_once_on_resend(valve_task, login):
    account, instance, task = valve_task
    field = login("tj_field")
    submission_id = str(uuid.uuid4())

    first = _close(field, task.id, submission_id, meter_reading="1234.5")
    again = _close(field, task.id, submission_id, meter_reading="1234.5")

    assert first.status_code == 302
    assert again.status_code == 302
    db.session.expire_all()
    assert db.session.get(Account, account.id).valve_state == "sealed"
    assert db.session.get(ProcessInstance, instance.id).status == "completed"
    assert _count(FieldSubmission, submission_id=submission_id) == 1
    assert _count(FieldPhoto, account_id=account.id) == 1
    stored = db.session.scalar(sa.select(FieldSubmission).filter_by(submission_id=submission_id))
    assert stored.meter_reading == Decimal("1234.500")
    completions = db.session.scalars(
        sa.select(ProcessEvent).filter_by(instance_id=instance.id, event_type="completed", task_name="关栓")
    ).all()
    assert len(completions) == 1
    assert "该结果此前已提交，本次未重复登记。" in field.get("/field/").get_data(as_text=True)


def test_json_resend_reports_duplicate(valve_task, login):
    _account, _instance, task = valve_task
    field = login("tj_field")
    submission_id = str(uuid.uuid4())

    first = _close(field, task.id, submission_id, headers=JSON)
    again = _close(field, task.id, submission_id, headers=JSON)

    assert first.get_json() == {"ok": True, "duplicate": False, "message": "「关栓」已完成。", "redirect": "/field/"}
    # The phone's script follows the redirect; the list page confirms the result there.
    assert "「关栓」已完成。" in field.get("/field/").get_data(as_text=True)
    assert again.get_json()["duplicate"] is True
    assert again.get_json()["ok"] is True


def test_second_submission_of_done_task_conflicts(valve_task, login):
    _account, _instance, task = valve_task
    field = login("tj_field")
    _close(field, task.id, str(uuid.uuid4()), headers=JSON)

    other = _close(field, task.id, str(uuid.uuid4()), headers=JSON)

    assert other.status_code == 409
    assert "不能重复提交" in other.get_json()["message"]
    assert _count(FieldSubmission) == 1


def test_non_image_photo_rejected_and_nothing_stored(valve_task, login):
    import io

    account, _instance, task = valve_task
    field = login("tj_field")

    response = _close(field, task.id, str(uuid.uuid4()), headers=JSON, photos=[(io.BytesIO(b"%PDF-1.7 not a photo"), "scan.pdf")])

    assert response.status_code == 400
    assert "照片「scan.pdf」不是 JPEG 或 PNG 图片" in response.get_json()["message"]
    db.session.expire_all()
    assert _count(FieldSubmission) == 0
    assert _count(FieldPhoto) == 0
    assert db.session.get(HumanTask, task.id).status == "open"
    assert db.session.get(Account, account.id).valve_state == "open"


def test_bad_meter_reading_and_submission_id_named(valve_task, login):
    _account, _instance, task = valve_task
    field = login("tj_field")

    reading = _close(field, task.id, str(uuid.uuid4()), headers=JSON, meter_reading="12,5")
    bad_id = _close(field, task.id, "not-a-uuid", headers=JSON)

    assert reading.status_code == 400
    assert "表读数「12,5」不是数字" in reading.get_json()["message"]
    assert bad_id.status_code == 400
    assert "提交编号无效" in bad_id.get_json()["message"]
    assert _count(FieldSubmission) == 0


def test_other_company_field_user_gets_404(valve_task, login):
    _account, _instance, task = valve_task

    response = _close(login("qd_field"), task.id, str(uuid.uuid4()))

    assert response.status_code == 404
    assert _count(FieldSubmission) == 0


def _assign(login, account):
    admin = login("tj_admin")
    field_user_id = db.session.scalar(sa.text("select id from \"user\" where username = 'tj_field'"))
    response = admin.post("/field/inspections", data={"account_id": [account.id], "field_user_id": field_user_id, "note": "抽查"})
    assert response.status_code == 303
    return db.session.scalar(sa.select(FieldVisit).filter_by(account_id=account.id))


def test_reopened_valve_back_charged_after_approval(demo, make_account, login):
    # TJ 87.35 m² suspended: 436.75 of 2183.75 billed. Found heating on 2026-01-20, day 67 of 121:
    # back-charge (2183.75 − 436.75) × 67 / 121 = 967.347… → 967.35. The remaining 54 days from
    # 2026-01-21 add 1747.00 × 54 / 121 = 779.652… → 779.65, so the season totals 2183.75.
    account = make_account("TJ", "87.35", status="suspended")
    visit = _assign(login, account)
    field = login("tj_field")

    response = field.post(f"/field/visits/{visit.id}", data={
        "submission_id": str(uuid.uuid4()), "visited_on": "2026-01-20", "finding": "reopened_valve",
        "comment": "阀门被打开，室内供热", "photos": [photo("open-valve.png")],
    }, content_type="multipart/form-data")

    assert response.status_code == 302
    db.session.expire_all()
    visit = db.session.get(FieldVisit, visit.id)
    assert (visit.status, visit.finding) == ("done", "reopened_valve")
    instance = db.session.get(ProcessInstance, visit.instance_id)
    assert instance.process_type == "back_charge"
    approver = login("tj_approver")
    task = open_task(instance.id, "company_approval")
    approver.post(f"/processes/tasks/{task.id}/claim")
    page = approver.get(f"/processes/tasks/{task.id}").get_data(as_text=True)
    assert "967.35" in page
    assert "2183.75" in page
    assert submit_task(approver, task.id, {"decision": "approve"}).status_code == 302

    db.session.expire_all()
    lines = db.session.scalars(
        sa.select(LedgerEntry.amount).filter_by(account_id=account.id, kind="rerate").order_by(LedgerEntry.id)
    ).all()
    assert lines == [Decimal("967.35"), Decimal("779.65")]
    assert db.session.get(Account, account.id).billing_status == "normal"
    assert db.session.get(ProcessInstance, instance.id).status == "completed"


def test_violation_needs_photo_and_clean_visit_starts_nothing(demo, make_account, login):
    account = make_account("TJ", "60.00", status="suspended")
    visit = _assign(login, account)
    field = login("tj_field")

    no_photo = field.post(f"/field/visits/{visit.id}", data={
        "submission_id": str(uuid.uuid4()), "visited_on": "2026-01-20", "finding": "booster_pump",
    }, headers=JSON)
    clean = field.post(f"/field/visits/{visit.id}", data={
        "submission_id": str(uuid.uuid4()), "visited_on": "2026-01-20", "finding": "none",
    }, headers=JSON)

    assert no_photo.status_code == 400
    assert "发现违规时必须上传现场照片" in no_photo.get_json()["message"]
    assert clean.get_json()["ok"] is True
    db.session.expire_all()
    assert db.session.get(FieldVisit, visit.id).instance_id is None
    assert _count(ProcessInstance, account_id=account.id) == 0


def test_visits_are_private_to_assignee_company(demo, make_account, login):
    account = make_account("TJ", "60.00", status="suspended")
    visit = _assign(login, account)

    assert login("qd_field").get(f"/field/visits/{visit.id}").status_code == 404
    assert login("qd_admin").get("/field/inspections").get_data(as_text=True).count(account.account_no) == 0
    assert login("tj_clerk").get("/field/").status_code == 403


def _report_reopened_valve(login, account):
    visit = _assign(login, account)
    response = login("tj_field").post(f"/field/visits/{visit.id}", data={
        "submission_id": str(uuid.uuid4()), "visited_on": "2026-01-20", "finding": "reopened_valve",
        "comment": "阀门被打开，室内供热", "photos": [photo("open-valve.png")],
    }, content_type="multipart/form-data")
    assert response.status_code == 302
    db.session.expire_all()
    return db.session.get(ProcessInstance, db.session.get(FieldVisit, visit.id).instance_id)


def _approve(login, instance):
    approver = login("tj_approver")
    task = open_task(instance.id, "company_approval")
    approver.post(f"/processes/tasks/{task.id}/claim")
    page = approver.get(f"/processes/tasks/{task.id}").get_data(as_text=True)
    assert submit_task(approver, task.id, {"decision": "approve"}).status_code == 302
    db.session.expire_all()
    return page


def _rerate_lines(account):
    return db.session.scalars(
        sa.select(LedgerEntry.amount).filter_by(account_id=account.id, kind="rerate").order_by(LedgerEntry.id)
    ).all()


def _set_netting(login, value):
    return login("tj_admin").post("/processes/settings", data={"section": "options", "back_charge_netting": value})


def test_full_netting_back_charge(demo, make_account, login):
    # TJ 87.35 m² suspended, found heating on 2026-01-20 (day 67 of 121). With the full method the
    # 436.75 already billed is not deducted: 2183.75 × 67 / 121 = 1209.183… → 1209.18. The
    # remaining 54 days add 1747.00 × 54 / 121 = 779.652… → 779.65 as with the difference method.
    assert _set_netting(login, "full").status_code == 303
    account = make_account("TJ", "87.35", status="suspended")
    instance = _report_reopened_valve(login, account)

    page = _approve(login, instance)

    assert "1209.18" in page
    assert _rerate_lines(account) == [Decimal("1209.18"), Decimal("779.65")]
    assert db.session.get(ProcessInstance, instance.id).status == "completed"


def test_netting_fixed_when_request_starts(demo, make_account, login):
    account = make_account("TJ", "87.35", status="suspended")
    instance = _report_reopened_valve(login, account)
    # The company switches to the full method while the request waits for approval.
    assert _set_netting(login, "full").status_code == 303

    _approve(login, instance)

    assert _rerate_lines(account) == [Decimal("967.35"), Decimal("779.65")]


def test_netting_option_rejects_unknown_value(demo, login):
    response = _set_netting(login, "half")

    assert response.status_code == 400
    assert "稽查追补计算方式「half」无效" in response.get_data(as_text=True)
    from app.processes.options import process_option

    assert process_option(demo["TJ"].id, "back_charge_netting") == "difference"
    assert login("tj_clerk").post("/processes/settings", data={"section": "options", "back_charge_netting": "full"}).status_code == 403


def test_diagram_without_netting_still_deploys():
    from app.processes.engine import _check_operator

    operator = {"name": "post_back_charge", "parameters": {
        "account_id": {"value": "account_id"}, "inspected_on": {"value": "inspected_on"},
    }}
    assert _check_operator("post_back_charge_task", "serviceTask", operator) == []
    without_account = {"name": "post_back_charge", "parameters": {"inspected_on": {"value": "inspected_on"}}}
    [finding] = _check_operator("post_back_charge_task", "serviceTask", without_account)
    assert "服务「post_back_charge」缺少参数：account_id" in finding.reason


def _race_first_arrival(monkeypatch, step, first_arrival):
    """Let `first_arrival` commit just before the resend's call of services.`step`, as two requests in flight can."""
    original = getattr(services, step)

    def step_after_first_arrival(*args, **kwargs):
        monkeypatch.setattr(services, step, original)
        first_arrival()
        return original(*args, **kwargs)

    monkeypatch.setattr(services, step, step_after_first_arrival)


def test_resend_racing_first_arrival_is_duplicate(valve_task, login, monkeypatch):
    account, instance, task = valve_task
    field = login("tj_field")
    submission_id = str(uuid.uuid4())
    _race_first_arrival(monkeypatch, "claim_task", lambda: _close(login("tj_field"), task.id, submission_id, headers=JSON))

    resend = _close(field, task.id, submission_id, headers=JSON)

    assert resend.status_code == 200
    assert resend.get_json()["duplicate"] is True
    assert _count(FieldSubmission, submission_id=submission_id) == 1
    assert _count(FieldPhoto, account_id=account.id) == 1


def test_visit_resend_racing_first_arrival_is_duplicate(demo, make_account, login, monkeypatch):
    account = make_account("TJ", "60.00", status="suspended")
    visit = _assign(login, account)
    field = login("tj_field")
    data = {"submission_id": str(uuid.uuid4()), "visited_on": "2026-01-20", "finding": "none"}
    _race_first_arrival(monkeypatch, "get_visit", lambda: login("tj_field").post(f"/field/visits/{visit.id}", data=data, headers=JSON))

    resend = field.post(f"/field/visits/{visit.id}", data=data, headers=JSON)

    assert resend.status_code == 200
    assert resend.get_json()["duplicate"] is True
    assert _count(FieldSubmission, submission_id=data["submission_id"]) == 1


def test_submission_id_of_other_target_conflicts(valve_task, demo, make_account, login):
    _account, _instance, task = valve_task
    visit = _assign(login, make_account("TJ", "60.00", status="suspended"))
    field = login("tj_field")
    submission_id = str(uuid.uuid4())
    _close(field, task.id, submission_id, headers=JSON)

    reused = field.post(f"/field/visits/{visit.id}", data={
        "submission_id": submission_id, "visited_on": "2026-01-20", "finding": "none",
    }, headers=JSON)

    assert reused.status_code == 409
    assert f"提交编号 {submission_id} 已用于另一项现场结果" in reused.get_json()["message"]
    db.session.expire_all()
    assert db.session.get(FieldVisit, visit.id).status == "open"


def test_invalid_seal_leaves_task_unclaimed(valve_task, login):
    _account, instance, task = valve_task

    response = _close(login("tj_field"), task.id, str(uuid.uuid4()), headers=JSON, seal_no="封签 42!")

    assert response.status_code == 400
    assert "封签号" in response.get_json()["message"]
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).claimed_by_id is None
    assert _count(ProcessEvent, instance_id=instance.id, event_type="claimed", task_name="关栓") == 0
    assert _count(FieldSubmission) == 0


def test_stored_values_are_task_fields_only(valve_task, login):
    _account, _instance, task = valve_task
    submission_id = str(uuid.uuid4())

    _close(login("tj_field"), task.id, submission_id, headers=JSON, meter_reading="12.5", csrf_token="token-from-form")

    stored = db.session.scalar(sa.select(FieldSubmission).filter_by(submission_id=submission_id))
    assert stored.values["seal_no"] == "TJ-S-0042"
    assert "csrf_token" not in stored.values
    assert "submission_id" not in stored.values
    assert "meter_reading" not in stored.values
