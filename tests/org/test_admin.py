"""Function grants by the group and roles defined by each company."""

import sqlalchemy as sa

from app.extensions import db
from app.org.models import CompanyFunction, Role, User, UserRole
from app.org.services import has_permission


def test_group_admin_revokes_a_function(demo, login):
    client = login("hq_admin")
    tj = demo["TJ"]
    kept = ["accounts", "ledger", "billing", "processes", "fieldwork", "admin"]

    response = client.post("/admin/companies", data={"company_id": tj.id, "functions": kept})

    granted = set(db.session.scalars(sa.select(CompanyFunction.function).filter_by(company_id=tj.id)))
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    assert response.status_code == 302
    assert granted == set(kept)
    assert not has_permission(cashier, "payment.collect")
    assert login("tj_cashier").get("/billing/receivables").status_code == 200


def test_company_admin_cannot_manage_functions(demo, login):
    response = login("tj_admin").post("/admin/companies", data={"company_id": demo["QD"].id, "functions": []})

    assert response.status_code == 403
    assert db.session.scalar(sa.select(sa.func.count(CompanyFunction.id)).filter_by(company_id=demo["QD"].id)) > 0


def test_company_admin_defines_and_assigns_role(demo, login):
    client = login("tj_admin")

    client.post("/admin/roles", data={"code": "senior_cashier", "name": "收费主管", "permissions": ["payment.collect", "account.read"]})
    role = db.session.scalar(sa.select(Role).filter_by(company_id=demo["TJ"].id, code="senior_cashier"))
    field = db.session.scalar(sa.select(User).filter_by(username="tj_field"))
    client.post(f"/admin/users/{field.id}/roles", data={"role_ids": [str(role.id)]})

    assert role.permissions == ["account.read", "payment.collect"]
    assert db.session.scalars(sa.select(UserRole.role_id).filter_by(user_id=field.id)).all() == [role.id]
    assert has_permission(field, "payment.collect")


def test_company_admin_cannot_grant_group_permissions(demo, login):
    response = login("tj_admin").post(
        "/admin/roles", data={"code": "sneaky", "name": "越权", "permissions": ["process.group_approve", "company.manage"]}
    )

    assert response.status_code == 302
    assert db.session.scalar(sa.select(Role).filter_by(code="sneaky")) is None


def test_company_admin_cannot_touch_other_company_user(demo, login):
    qd_clerk = db.session.scalar(sa.select(User).filter_by(username="qd_clerk"))
    roles_before = db.session.scalars(sa.select(UserRole.role_id).filter_by(user_id=qd_clerk.id)).all()

    response = login("tj_admin").post(f"/admin/users/{qd_clerk.id}/roles", data={"role_ids": []})

    assert response.status_code == 404
    assert db.session.scalars(sa.select(UserRole.role_id).filter_by(user_id=qd_clerk.id)).all() == roles_before


def _roles_of(username):
    user = db.session.scalar(sa.select(User).filter_by(username=username))
    return sorted(db.session.scalars(sa.select(UserRole.role_id).filter_by(user_id=user.id)))


def test_company_admin_cannot_grant_ungranted_function(demo, login):
    tj = demo["TJ"]
    db.session.execute(sa.delete(CompanyFunction).filter_by(company_id=tj.id, function="fieldwork"))
    db.session.commit()

    response = login("tj_admin").post("/admin/roles", data={"code": "inspector", "name": "稽查员", "permissions": ["fieldwork.do"]})

    assert response.status_code == 302
    assert db.session.scalar(sa.select(Role).filter_by(company_id=tj.id, code="inspector")) is None


def test_company_admin_cannot_assign_role_beyond_grants(demo, login):
    # The cashier role keeps its payment permissions after the group revokes the payments
    # function, so handing it out would grant what the company no longer has.
    tj = demo["TJ"]
    db.session.execute(sa.delete(CompanyFunction).filter_by(company_id=tj.id, function="payments"))
    db.session.commit()
    cashier_role = db.session.scalar(sa.select(Role).filter_by(company_id=tj.id, code="cashier"))
    field = db.session.scalar(sa.select(User).filter_by(username="tj_field"))
    before = _roles_of("tj_field")

    response = login("tj_admin").post(f"/admin/users/{field.id}/roles", data={"role_ids": [str(cashier_role.id), *map(str, before)]})

    assert response.status_code == 302
    assert _roles_of("tj_field") == before


def test_company_admin_cannot_raise_own_role(demo, login):
    tj = demo["TJ"]
    admin_role = db.session.scalar(sa.select(Role).filter_by(company_id=tj.id, code="company_admin"))
    permissions_before = list(admin_role.permissions)

    response = login("tj_admin").post("/admin/roles", data={
        "role_id": admin_role.id, "code": "company_admin", "name": admin_role.name,
        "permissions": [*permissions_before, "company.manage", "hq.view"],
    })

    db.session.expire_all()
    assert response.status_code == 302
    assert db.session.get(Role, admin_role.id).permissions == permissions_before


def test_group_admin_cannot_grant_beyond_own_permissions(demo, login):
    hq_admin = db.session.scalar(sa.select(User).filter_by(username="hq_admin"))
    client = login("hq_admin")

    created = client.post("/admin/roles", data={"code": "super_approver", "name": "越权审批", "permissions": ["process.group_approve"]})
    approver_role = db.session.scalar(sa.select(Role).filter_by(company_id=hq_admin.company_id, code="group_approver"))
    auditor = db.session.scalar(sa.select(User).filter_by(username="hq_auditor"))
    before = _roles_of("hq_auditor")
    assigned = client.post(f"/admin/users/{auditor.id}/roles", data={"role_ids": [str(approver_role.id), *map(str, before)]})

    assert created.status_code == 302
    assert db.session.scalar(sa.select(Role).filter_by(code="super_approver")) is None
    assert assigned.status_code == 302
    assert _roles_of("hq_auditor") == before
    assert not has_permission(auditor, "process.group_approve")


def test_group_admin_cannot_touch_company_roles(demo, login):
    qd_clerk = db.session.scalar(sa.select(User).filter_by(username="qd_clerk"))
    before = _roles_of("qd_clerk")

    response = login("hq_admin").post(f"/admin/users/{qd_clerk.id}/roles", data={"role_ids": []})

    assert response.status_code == 404
    assert _roles_of("qd_clerk") == before


def test_roles_page_english_names(demo, login):
    db.session.execute(sa.update(Role).where(Role.company_id == demo["TJ"].id, Role.code == "finance").values(name="财务结算组"))
    db.session.commit()
    client = login("tj_admin")
    assert client.post("/language", data={"locale": "en"}).status_code in (302, 303)

    html = client.get("/admin/roles").get_data(as_text=True)

    # Roles still named as seeded show the English default name; a renamed role shows as written.
    assert "<h2>Clerk</h2>" in html
    assert "<h2>Company approver</h2>" in html
    assert "<h2>Cashier</h2>" in html
    assert "<h2>财务结算组</h2>" in html
    assert "> Field worker</label>" in html
    # The name field keeps the stored name for editing.
    assert 'name="name" value="营业员"' in html


def test_roles_page_chinese_names(demo, login):
    html = login("tj_admin").get("/admin/roles").get_data(as_text=True)

    assert "<h2>营业员</h2>" in html
    assert "<h2>收费员</h2>" in html
