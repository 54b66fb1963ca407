"""schemathesis against /api/v1/openapi.json: generated requests as a logged-in company user.

Each operation of the document gets valid (positive) and invalid (negative) requests. Every
response must be a non-5xx status listed for the operation, with a body and content type
that match the document, and a request the document forbids must get a 4xx. Requests carry
the session cookie of a TJ clerk; schemathesis also resends some without it or with a
forged one and expects 401.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from app.api.openapi import OPERATIONS
from tests.fuzz.conftest import FUZZ_EXAMPLES

# Flask-Login's strong session protection ties the session to the user agent, so the login
# and every generated request send the same one.
USER_AGENT = "heatflow-fuzz"
# Operations without parameters or body, where no request can violate the document.
NO_INPUT = {"api.openapi_document"}


@pytest.fixture
def clerk_cookie(demo, make_account, app_ctx):
    """(name, value) of a TJ clerk's session cookie; the clerk may start requests, and TJ has one billed account."""
    from app.demo import DEMO_PASSWORD

    make_account("TJ", "88.50")
    client = app_ctx.test_client()
    response = client.post(
        "/login", data={"username": "tj_clerk", "password": DEMO_PASSWORD}, headers={"User-Agent": USER_AGENT}
    )
    assert response.status_code == 302
    cookie = client.get_cookie(app_ctx.config.get("SESSION_COOKIE_NAME", "session"))
    return cookie.key, cookie.value


def _own_app_context(app):
    """Wrap `app` so that each request runs in a fresh app context, as in production.

    Requests would otherwise reuse the test's app context, where Flask-Login caches the
    logged-in user on `g`, and a request without a cookie would act as that user.
    """

    def wsgi(environ, start_response):
        with app.app_context():
            return list(app(environ, start_response))

    return wsgi


def _load_schema(app, cookie):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", _own_app_context(app))
    name, value = cookie

    @schema.auth()
    class SessionCookie:
        def get(self, case, context):
            return value

        def set(self, case, data, context):
            case.cookies = {**(case.cookies or {}), name: data}
            case.headers = {**(case.headers or {}), "User-Agent": USER_AGENT}

    return schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_openapi(app_ctx, clerk_cookie, mode):
    # One test per mode runs every operation, so the demo data is installed twice per backend,
    # not once per operation. Failures are collected and reported together.
    schema = _load_schema(app_ctx, clerk_cookie)
    failures = {}
    requests_sent = {}
    for endpoint in sorted(OPERATIONS):
        if mode == GenerationMode.NEGATIVE and endpoint in NO_INPUT:
            continue
        operation = schema.find_operation_by_id(endpoint.removeprefix("api."))

        @given(case=operation.as_strategy(generation_mode=mode, auth_storage=schema.auth))
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            requests_sent[endpoint] = requests_sent.get(endpoint, 0) + 1
            case.call_and_validate(headers={"User-Agent": USER_AGENT})

        try:
            call()
        except Exception as error:  # noqa: BLE001  (schemathesis raises FailureGroup and check errors)
            failures[endpoint] = error
    assert not failures, "\n\n".join(f"{endpoint}: {error}" for endpoint, error in failures.items())
    # Printed for the figures in docs/security.md (pytest -s shows it).
    print(f"schemathesis {mode.value}: {sum(requests_sent.values())} generated requests {requests_sent}")
    assert set(requests_sent) == {endpoint for endpoint in OPERATIONS if mode == GenerationMode.POSITIVE or endpoint not in NO_INPUT}
