"""Where each demo role lands after login: the main page of its work, else the start page."""

import pytest

from app.demo import DEMO_PASSWORD


@pytest.mark.parametrize("username, landing", [
    ("tj_field", "/field/"),
    ("tj_approver", "/processes/inbox"),
    ("hq_approver", "/processes/inbox"),
    ("tj_cashier", "/payments/"),
    ("tj_finance", "/processes/inbox"),
    ("tj_clerk", "/accounts/"),
    ("hq_auditor", "/hq/collection"),
    ("tj_admin", "/"),
    ("hq_admin", "/"),
])
def test_role_lands_on_main_page(demo, client, username, landing):
    response = client.post("/login", data={"username": username, "password": DEMO_PASSWORD})

    assert response.status_code == 302
    assert response.headers["Location"] == landing
    assert client.get(landing).status_code == 200


def test_next_parameter_wins_over_landing(demo, client):
    response = client.post("/login?next=/billing/receivables", data={"username": "tj_field", "password": DEMO_PASSWORD})

    assert response.headers["Location"] == "/billing/receivables"
