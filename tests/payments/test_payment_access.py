"""Only cashiers of the account's own company see the counter pages of an account or payment."""

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.payments.models import Payment
from app.payments.services import collect_payment


def _payment_count():
    return db.session.scalar(sa.select(sa.func.count()).select_from(Payment))


def _payment_line_count():
    return db.session.scalar(sa.select(sa.func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "payment"))


def test_other_company_cannot_see_account(tj_account, login):
    account = tj_account("TJ-0001031")
    client = login("qd_cashier")

    page = client.get(f"/payments/accounts/{account.id}")
    search = client.get("/payments/", query_string={"q": account.account_no})

    assert page.status_code == 404
    assert f"未找到编号为 {account.id} 的用户，或该用户不属于您的公司。" in page.get_data(as_text=True)
    assert f"/payments/accounts/{account.id}" not in search.get_data(as_text=True)
    assert "没有找到匹配的用户" in search.get_data(as_text=True)


def test_other_company_cannot_pay_account(tj_account, login):
    account = tj_account("TJ-0001031")

    response = login("qd_cashier").post(
        f"/payments/accounts/{account.id}", data={"amount": "100.00", "method": "cash", "request_token": "tok-qd"}
    )

    assert response.status_code == 404
    assert _payment_count() == 0
    assert _payment_line_count() == 0


def test_other_company_cannot_open_payment(tj_account, cashier, login):
    payment = collect_payment(tj_account("TJ-0001031"), "100.00", "cash", cashier("tj_cashier"))
    client = login("qd_cashier")

    assert client.get(f"/payments/{payment.id}").status_code == 404
    assert client.get(f"/payments/{payment.id}/receipt.pdf").status_code == 404
    assert db.session.get(Payment, payment.id).receipt_prints == 0


@pytest.mark.parametrize("username", ["tj_clerk", "hq_admin", "hq_auditor"])
def test_without_collect_permission_forbidden(username, tj_account, login):
    account = tj_account("TJ-0001031")
    client = login(username)

    counter = client.get("/payments/")
    post = client.post(
        f"/payments/accounts/{account.id}", data={"amount": "100.00", "method": "cash", "request_token": "tok-x"}
    )

    assert counter.status_code == 403
    assert post.status_code == 403
    assert "柜台收费" in post.get_data(as_text=True)
    assert _payment_count() == 0


def test_anonymous_redirected_to_login(tj_billed, client):
    response = client.get("/payments/")

    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_nav_shows_counter_link(demo, login):
    page = login("tj_cashier").get("/").get_data(as_text=True)

    assert "柜台收费" in page
