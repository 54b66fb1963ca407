"""Security audit entries for logins, grants and roles, and the /admin/audit page."""

import pytest
import sqlalchemy as sa

from app.demo import DEMO_PASSWORD
from app.extensions import db
from app.org.admin import RoleError, save_role
from app.org.audit import AuthEvent, record_event
from app.org.models import Role, User


def _events(name):
    return db.session.scalars(sa.select(AuthEvent).filter_by(event=name).order_by(AuthEvent.id)).all()


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def test_login_success_and_logout_audited(demo, login):
    client = login("tj_clerk")
    client.post("/logout")

    clerk = _user("tj_clerk")
    success = _events("login_success")
    logout = _events("logout")
    assert [(e.company_id, e.user_id, e.actor_id) for e in success] == [(demo["TJ"].id, clerk.id, clerk.id)]
    assert [(e.company_id, e.user_id) for e in logout] == [(demo["TJ"].id, clerk.id)]
    assert success[0].ip == "127.0.0.1"


def test_read_only_hq_user_logout_audited(demo, login):
    login("hq_auditor").post("/logout")

    assert [e.user.username for e in _events("logout")] == ["hq_auditor"]


def test_login_failure_audited_with_company(demo, client):
    client.post("/login", data={"username": "qd_cashier", "password": "wrong"})

    failures = _events("login_failure")
    assert [(e.company_id, e.user_id, e.detail["username"]) for e in failures] == [
        (demo["QD"].id, _user("qd_cashier").id, "qd_cashier")
    ]


def test_unknown_username_failure_has_no_company(demo, client):
    client.post("/login", data={"username": "no_such_user", "password": "wrong"})

    failures = _events("login_failure")
    assert [(e.company_id, e.user_id, e.detail["username"]) for e in failures] == [(None, None, "no_such_user")]


def test_lockout_audited_once(demo, client):
    for _ in range(7):
        client.post("/login", data={"username": "tj_clerk", "password": "wrong"})

    lockouts = _events("lockout")
    assert len(_events("login_failure")) == 5
    assert [(e.company_id, e.detail["kind"]) for e in lockouts] == [(demo["TJ"].id, "username")]


def test_function_change_audited(demo, login):
    tj = demo["TJ"]
    functions_kept = ["accounts", "ledger", "billing", "processes", "fieldwork", "admin"]

    login("hq_admin").post("/admin/companies", data={"company_id": tj.id, "functions": functions_kept})

    changes = _events("functions_changed")
    assert [(e.company_id, e.actor.username, e.detail["removed"], e.detail["added"]) for e in changes] == [
        (tj.id, "hq_admin", ["payments"], [])
    ]


def test_unchanged_functions_not_audited(demo, login):
    tj = demo["TJ"]
    functions_kept = ["accounts", "ledger", "billing", "processes", "fieldwork", "admin"]
    client = login("hq_admin")
    client.post("/admin/companies", data={"company_id": tj.id, "functions": functions_kept})

    client.post("/admin/companies", data={"company_id": tj.id, "functions": functions_kept})

    assert len(_events("functions_changed")) == 1


def test_role_create_change_and_assignment_audited(demo, login):
    client = login("tj_admin")
    client.post("/admin/roles", data={"code": "senior_cashier", "name": "收费主管", "permissions": ["account.read"]})
    role = db.session.scalar(sa.select(Role).filter_by(company_id=demo["TJ"].id, code="senior_cashier"))
    client.post("/admin/roles", data={"role_id": role.id, "code": "senior_cashier", "name": "收费主管",
                                      "permissions": ["account.read", "payment.collect"]})
    field = _user("tj_field")
    client.post(f"/admin/users/{field.id}/roles", data={"role_ids": [str(role.id)]})

    created = _events("role_created")
    changed = _events("role_changed")
    assigned = _events("user_roles_changed")
    assert [(e.company_id, e.detail["code"]) for e in created] == [(demo["TJ"].id, "senior_cashier")]
    assert [e.detail["after"]["permissions"] for e in changed] == [["account.read", "payment.collect"]]
    assert [e.detail["before"]["permissions"] for e in changed] == [["account.read"]]
    assert [(e.user_id, e.actor.username, e.detail["added"], e.detail["removed"]) for e in assigned] == [
        (field.id, "tj_admin", ["senior_cashier"], ["field_staff"])
    ]


def test_rejected_role_change_leaves_no_entry(demo):
    admin = _user("tj_admin")

    with pytest.raises(RoleError):
        save_role(admin, "bad code!", "坏角色", [])
    db.session.rollback()

    assert _events("role_created") == []


def test_invisible_role_name_rejected(demo):
    with pytest.raises(RoleError, match="请填写角色名称"):
        save_role(_user("tj_admin"), "blank_name", "\u200b\u3000", [])
    db.session.rollback()

    assert _events("role_created") == []


def test_audit_entry_rolls_back_with_change(demo):
    admin = _user("tj_admin")
    record_event("role_created", actor=admin, code="never_saved")

    db.session.rollback()

    assert _events("role_created") == []


def _seed_events(app):
    """One failed login per company and one of an unknown username."""
    for username in ("tj_clerk", "qd_clerk", "nobody_at_all"):
        app.test_client().post("/login", data={"username": username, "password": "wrong"})


def test_hq_admin_sees_every_company(demo, app_ctx, login):
    _seed_events(app_ctx)

    body = login("hq_admin").get("/admin/audit").get_data(as_text=True)

    assert "tj_clerk" in body
    assert "qd_clerk" in body
    assert "nobody_at_all" in body


def test_company_admin_sees_own_company_only(demo, app_ctx, login):
    _seed_events(app_ctx)

    response = login("tj_admin").get("/admin/audit")

    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "tj_clerk" in body
    assert "qd_clerk" not in body
    assert "nobody_at_all" not in body
    assert demo["QD"].name not in body


def test_audit_filter_by_event(demo, app_ctx, login):
    _seed_events(app_ctx)

    body = login("hq_admin").get("/admin/audit?event=logout").get_data(as_text=True)

    assert "tj_clerk" not in body


@pytest.mark.parametrize("username", ["tj_clerk", "tj_cashier", "hq_auditor"])
def test_audit_page_forbidden_to_staff(demo, login, username):
    assert login(username).get("/admin/audit").status_code == 403


def test_audit_page_bad_page_number(demo, login):
    client = login("hq_admin")

    assert client.get("/admin/audit?page=-5").status_code == 200
    assert client.get("/admin/audit?page=abc").status_code == 200
    assert client.get("/admin/audit?page=99999999999999999999").status_code == 200


def test_right_password_after_failures_logs_in(demo, client):
    client.post("/login", data={"username": "tj_clerk", "password": "wrong"})

    response = client.post("/login", data={"username": "tj_clerk", "password": DEMO_PASSWORD})

    assert response.status_code == 302
