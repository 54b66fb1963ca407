"""Choosing the interface language: the user's saved choice, else the login page's cookie, else Chinese."""

import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from app.billing.models import ENTRY_KINDS
from app.demo import DEMO_PASSWORD
from app.extensions import db
from app.fieldwork.models import VISIT_STATUSES
from app.i18n import LOCALE_COOKIE, legal_document_language, translate_label
from app.ledger.models import LedgerImport
from app.network.models import BILLING_STATUSES, Account
from app.org.models import User
from app.payments.models import REFUND_KINDS
from app.processes.models import PROCESS_TYPES, TASK_STATUSES

LEDGERS = Path(__file__).resolve().parents[1] / "fixtures" / "ledgers"


@pytest.fixture(autouse=True)
def _demo_group(demo):
    """Every test here needs the demo group's users."""


def _saved_locale(username):
    db.session.expire_all()
    return db.session.scalar(sa.select(User.locale).filter_by(username=username))


def _sign_in(client, username):
    response = client.post("/login", data={"username": username, "password": DEMO_PASSWORD})
    assert response.status_code == 302, f"login of {username} failed: {response.status_code}"
    return client


def test_login_page_chinese_by_default(client):
    html = client.get("/login").get_data(as_text=True)
    assert '<html lang="zh-CN">' in html
    assert "<h1>登录</h1>" in html
    assert "用户名" in html
    # Each input sits in one label; a label inside another is invalid HTML.
    assert "<label><label" not in html
    assert html.count("<label") == 2


def test_login_page_english_with_cookie(client):
    client.set_cookie(LOCALE_COOKIE, "en")
    html = client.get("/login").get_data(as_text=True)
    assert '<html lang="en">' in html
    assert "<h1>Sign in</h1>" in html
    assert "Username" in html
    assert "用户名" not in html


def test_unknown_cookie_value_gives_chinese(client):
    client.set_cookie(LOCALE_COOKIE, "fr")
    html = client.get("/login").get_data(as_text=True)
    assert "<h1>登录</h1>" in html


def test_switch_before_login_sets_cookie(client):
    response = client.post("/language", data={"locale": "en", "next": "/login"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert client.get_cookie(LOCALE_COOKIE).value == "en"
    assert "<h1>Sign in</h1>" in client.get("/login").get_data(as_text=True)


def test_login_error_follows_cookie(client):
    client.set_cookie(LOCALE_COOKIE, "en")
    response = client.post("/login", data={"username": "tj_clerk", "password": "wrong password"})
    assert response.status_code == 401
    assert "Incorrect username or password." in response.get_data(as_text=True)


def test_switch_saves_user_choice(login):
    client = login("tj_clerk")
    response = client.post("/language", data={"locale": "en", "next": "/"})
    assert response.status_code == 302
    assert _saved_locale("tj_clerk") == "en"
    assert "Sign out" in client.get("/").get_data(as_text=True)


def test_saved_choice_survives_new_browser(app_ctx, login):
    login("tj_clerk").post("/language", data={"locale": "en"})
    # A second browser without the cookie: the saved choice applies from the first page after login.
    fresh = _sign_in(app_ctx.test_client(), "tj_clerk")
    assert fresh.get_cookie(LOCALE_COOKIE) is None
    html = fresh.get("/").get_data(as_text=True)
    assert '<html lang="en">' in html
    assert "Sign out" in html


def test_saved_choice_beats_cookie(login):
    client = login("tj_clerk")
    client.post("/language", data={"locale": "zh_CN"})
    client.set_cookie(LOCALE_COOKIE, "en")
    html = client.get("/").get_data(as_text=True)
    assert '<html lang="zh-CN">' in html
    assert "退出" in html


def test_user_without_choice_follows_cookie(client):
    client.set_cookie(LOCALE_COOKIE, "en")
    _sign_in(client, "tj_clerk")
    assert _saved_locale("tj_clerk") is None
    assert "Sign out" in client.get("/").get_data(as_text=True)


def test_switch_rejects_unknown_language(login):
    client = login("tj_clerk")
    response = client.post("/language", data={"locale": "de"})
    assert response.status_code == 400
    assert "de" in response.get_data(as_text=True)
    assert _saved_locale("tj_clerk") is None
    assert client.get_cookie(LOCALE_COOKIE) is None


def test_switch_ignores_offsite_next(login):
    response = login("tj_clerk").post("/language", data={"locale": "en", "next": "https://example.com/"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_read_only_hq_user_may_switch(login):
    response = login("hq_auditor").post("/language", data={"locale": "en"})
    assert response.status_code == 302
    assert _saved_locale("hq_auditor") == "en"


def test_api_error_follows_language(login):
    client = login("tj_clerk")
    chinese = client.get("/api/v1/tasks", query_string={"q": "a\x00b"})
    assert chinese.status_code == 400
    assert "无效字符" in chinese.get_json()["message"]
    client.post("/language", data={"locale": "en"})
    english = client.get("/api/v1/tasks", query_string={"q": "a\x00b"})
    assert english.status_code == 400
    assert english.get_json()["message"] == (
        'The query parameter "q" contains an invalid character (NUL). Remove it and try again.'
    )


def test_not_found_page_english(login):
    client = login("tj_clerk")
    client.post("/language", data={"locale": "en"})
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert "404 Not found" in response.get_data(as_text=True)
    assert "Check the address, or open the page again from the menu." in response.get_data(as_text=True)


def test_not_found_page_chinese_message(login):
    client = login("tj_clerk")
    html = client.get("/no-such-page").get_data(as_text=True)
    assert "404 未找到" in html
    assert "未找到您要访问的页面或记录" in html
    # Werkzeug's English default description is not shown on a Chinese page.
    assert "requested URL was not found" not in html


def test_method_not_allowed_page_chinese(login):
    client = login("tj_clerk")
    response = client.get("/logout")
    assert response.status_code == 405
    html = response.get_data(as_text=True)
    assert "此页面不支持该操作" in html
    assert "method is not allowed" not in html


def test_abort_message_of_view_kept(login):
    client = login("tj_clerk")
    response = client.get("/admin/companies")
    assert response.status_code == 403
    assert "只有集团管理员可以分配分公司功能。" in response.get_data(as_text=True)


def test_import_errors_follow_language(login):
    client = login("tj_clerk")
    # Uploaded by a Chinese-speaking user, so the stored reasons are Chinese.
    workbook = (LEDGERS / "TJ-dirty-shared.xlsx").read_bytes()
    response = client.post("/ledger/", data={"file": (io.BytesIO(workbook), "dirty.xlsx")}, content_type="multipart/form-data")
    assert response.status_code == 302
    job_id = db.session.scalar(sa.select(LedgerImport.id).order_by(LedgerImport.id.desc()).limit(1))
    chinese = client.get(f"/ledger/{job_id}").get_data(as_text=True)
    assert "建筑面积不是数字" in chinese
    client.post("/language", data={"locale": "en"})
    english = client.get(f"/ledger/{job_id}").get_data(as_text=True)
    assert "The building area is not a number" in english
    assert "建筑面积不是数字" not in english


def test_address_english_on_pages_only(app_ctx, login, import_fixture):
    import_fixture("TJ", "TJ-shared.xlsx")
    account = db.session.scalar(sa.select(Account).order_by(Account.id).limit(1))
    client = login("tj_clerk")
    client.post("/language", data={"locale": "en"})
    html = client.get(f"/accounts/{account.id}").get_data(as_text=True)
    assert f"building {int(account.unit.building.code)}, unit" in html
    # Receipts and exports print the Chinese address, whatever the reader's language.
    with app_ctx.test_request_context(headers={"Cookie": f"{LOCALE_COOKIE}=en"}):
        assert "号楼" in account.address
        assert "号楼" not in account.display_address
        with legal_document_language():
            assert "号楼" in account.display_address


@pytest.mark.parametrize(("label", "chinese", "english"), [
    ("process", "报停", "Suspension"),
    ("billing status", "报停", "Suspended"),
    ("task status", "待办", "Open"),
    ("visit status", "待办", "Open"),
    ("refund kind", "退费", "Refund"),
    ("ledger line kind", "退费", "Refund"),
])
def test_context_labels_translate_apart(app_ctx, label, chinese, english):
    text = {"process": PROCESS_TYPES["suspension"], "billing status": BILLING_STATUSES["suspended"],
            "task status": TASK_STATUSES["open"], "visit status": VISIT_STATUSES["open"],
            "refund kind": REFUND_KINDS["refund"], "ledger line kind": ENTRY_KINDS["refund"]}[label]
    assert text == chinese
    with force_locale("zh_CN"):
        assert translate_label(text) == chinese
    with force_locale("en"):
        assert translate_label(text) == english


def test_refunds_page_title_stays_plural(app_ctx):
    with force_locale("en"):
        assert translate_label("退费") == "Refunds"
        assert translate_label(REFUND_KINDS["refund"]) == "Refund"


def test_message_list_of_step_names(app):
    from app.i18n import M_, Message
    from app.processes.step_names import step_name_value

    # One default step name and one a company wrote in its own diagram.
    message = M_("%(label)s：待办「%(names)s」已超过办理期限，请尽快办理。", label=Message("超时催办"),
                 names=[step_name_value("分公司审批"), step_name_value("片区经理复核")])
    stored = Message.from_data(message.as_data())
    with app.test_request_context(), force_locale("zh_CN"):
        assert str(stored) == "超时催办：待办「分公司审批、片区经理复核」已超过办理期限，请尽快办理。"
    with app.test_request_context(), force_locale("en"):
        assert str(stored) == "Overdue reminder: the task “Company approval, 片区经理复核” is past its due date. Please handle it soon."
