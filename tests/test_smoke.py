"""The app boots, logs in and serves its main pages on every backend."""


def test_login_page_renders(client):
    response = client.get("/login")
    assert response.status_code == 200
    assert "登录" in response.get_data(as_text=True)


def test_demo_user_sees_home(demo, login):
    response = login("tj_clerk").get("/")
    assert response.status_code == 200
    assert "津南热力有限公司" in response.get_data(as_text=True)
