"""The counter finds an account by any of the numbers and details a cashier is given."""

import pytest


@pytest.mark.parametrize(
    "field",
    ["account_no", "legacy_no", "customer_name", "address", "phone"],
)
def test_counter_search_finds_account(field, tj_account, login):
    account = tj_account("TJ-0001031")
    queries = {
        "account_no": account.account_no,
        "legacy_no": "TJ-0001031",
        "customer_name": "廖凯",
        "address": "柳林里 3-3-902",
        "phone": "15450662754",
    }
    client = login("tj_cashier")

    response = client.get("/payments/", query_string={"q": queries[field]})

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert account.account_no in page
    assert f"/payments/accounts/{account.id}" in page


def test_counter_search_reports_no_match(tj_billed, login):
    response = login("tj_cashier").get("/payments/", query_string={"q": "不存在的小区 99-9-9999"})

    assert response.status_code == 200
    assert "没有找到匹配的用户" in response.get_data(as_text=True)


def test_counter_page_prefills_total_owed(tj_account, login):
    account = tj_account("TJ-0001031")

    response = login("tj_cashier").get(f"/payments/accounts/{account.id}")

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "柳林里3号楼3单元902" in page
    assert "2025-2026" in page
    assert "136.32 ㎡" in page  # charge area = building area in TJ
    assert "25.00 元/㎡" in page
    # 1960.43 prior arrears + 136.32 m² × 25.00 = 3408.00 season fee
    assert 'value="5368.43"' in page
    assert 'name="request_token"' in page


def test_counter_search_english_count_and_hint(tj_account, login):
    account = tj_account("TJ-0001031")
    client = login("tj_cashier")
    assert client.post("/language", data={"locale": "en"}).status_code in (302, 303)

    page = client.get("/payments/", query_string={"q": "柳林里 3-3-902"}).get_data(as_text=True)

    assert account.account_no in page
    assert "Accounts found: 1" in page
    assert "1 accounts found" not in page
    # The example in the search hint is an address as stored, not a transliteration the search cannot match.
    assert "address such as community 15-4-604" in page
    assert "Liulinli" not in page
