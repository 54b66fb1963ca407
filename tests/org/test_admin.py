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
