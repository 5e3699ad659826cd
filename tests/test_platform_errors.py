"""No traceback ever reaches the user: every destination type against a fake answering each
error class (400, 401 / Meta 190, 403, 404, 429, 500), through the real `crmsync run`.

A platform's error is one line on stderr naming the status (or the platform's code) and what
to do; the run exits 1; the Python traceback appears only with CRMSYNC_LOG_LEVEL=debug. Bodies
are each platform's own error shape:
- HubSpot: https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details (errors)
- Salesforce: [{"errorCode", "message"}],
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
- Meta: {"error": {"code", "message", "type"}},
  https://developers.facebook.com/docs/graph-api/guides/error-handling
- Google: google.rpc.Status, https://cloud.google.com/apis/design/errors
"""

from __future__ import annotations

from typing import Any

import pytest

from crmsync.connectors.testing.destination import _setup

pytest.importorskip("hubspot")
pytest.importorskip("simple_salesforce")
pytest.importorskip("facebook_business")
pytest.importorskip("google.ads.datamanager_v1")

from test_google_conformance import ACCOUNT, GoogleHarness  # noqa: E402
from test_hubspot_conformance import HubSpotListHarness, HubSpotPropertyHarness  # noqa: E402
from test_meta_conformance import MetaHarness  # noqa: E402
from test_salesforce_e2e import Harness as SalesforceHarness  # noqa: E402

from crmsync.connectors import salesforce as sfmod  # noqa: E402
from crmsync.connectors.google import CustomerMatchDestination  # noqa: E402
from crmsync.connectors.meta import CustomAudienceDestination  # noqa: E402
from crmsync.connectors.retry import RetryPolicy  # noqa: E402

from fakes.google import DataManagerFake, error  # noqa: E402
from fakes.hubspot import FakeHubSpot  # noqa: E402
from fakes.meta import FakeGraph  # noqa: E402
from fakes.salesforce import FakeSalesforce, tls_pair  # noqa: E402

STATUSES = [400, 401, 403, 404, 429, 500]
FAST = RetryPolicy(attempts=2, initial_wait=0.0, max_wait=0.0)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(sfmod, "RETRY", FAST)
    monkeypatch.setattr(CustomAudienceDestination, "policy", FAST)
    monkeypatch.setattr(CustomerMatchDestination, "policy", FAST)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return tls_pair(tmp_path_factory.mktemp("tls"))


def hubspot_error(status: int) -> tuple[Any, dict[str, str]]:
    if status == 429:
        return ({"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
                 "message": "You have reached your secondly limit."}, {"Retry-After": "0"})
    category = {400: "VALIDATION_ERROR", 401: "INVALID_AUTHENTICATION", 403: "MISSING_SCOPES",
                404: "OBJECT_NOT_FOUND", 500: "INTERNAL_ERROR"}[status]
    return {"status": "error", "message": f"fake {category}", "category": category,
            "correlationId": "c0ffee"}, {}


def salesforce_error(status: int) -> tuple[Any, dict[str, str]]:
    code = {400: "MALFORMED_QUERY", 401: "INVALID_SESSION_ID", 403: "INSUFFICIENT_ACCESS",
            404: "NOT_FOUND", 429: "REQUEST_LIMIT_EXCEEDED", 500: "UNKNOWN_EXCEPTION"}[status]
    message = ("ConcurrentRequests (Concurrent API Requests) Limit exceeded."
               if status == 429 else f"fake {code}")
    return [{"errorCode": code, "message": message}], {"Retry-After": "0"}


def meta_error(status: int) -> tuple[Any, dict[str, str]]:
    code = {400: 100, 401: 190, 403: 200, 404: 803, 429: 17, 500: 2}[status]
    http = 400 if status == 401 else status  # Graph answers an expired token 400 code 190
    return (http, {"error": {"message": f"fake error {code}", "type": "OAuthException",
                             "code": code, "fbtrace_id": "Afake"}}), {"Retry-After": "0"}


def google_error(status: int) -> tuple[Any, dict[str, str]]:
    code = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
            404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}[status]
    r = error(status, code, f"fake {code}", code,
              {"quota_limit": "IngestionMutateRequestsPerMinutePerProject"} if status == 429
              else None, headers={"Retry-After": "0"})
    return r.body, r.headers


class Case:
    def __init__(self, name: str, make, err, path: str | None):
        self.name, self.make, self.err, self.path = name, make, err, path


def _hub(harness):
    def make(tls):
        fake = FakeHubSpot(token="pat-conformance", rate_limit=1000).start()
        return fake, harness(fake)
    return make


def _sf(kind):
    def make(tls):
        fake = FakeSalesforce(tls=tls[0]).start()
        fake.ca = tls[1]
        return fake, SalesforceHarness(fake, kind)
    return make


def _meta(tls):
    fake = FakeGraph(account="act_1234").start()
    return fake, MetaHarness(fake)


def _google(tls):
    fake = DataManagerFake().start()
    fake.add_account(ACCOUNT)
    return fake, GoogleHarness(fake)


CASES = [
    Case("hubspot_list", _hub(HubSpotListHarness), hubspot_error, None),
    Case("hubspot_property", _hub(HubSpotPropertyHarness), hubspot_error, None),
    Case("salesforce_campaign", _sf("campaign"), salesforce_error, r"^/services/data/"),
    Case("salesforce_field", _sf("field"), salesforce_error, r"^/services/data/"),
    Case("meta_custom_audience", _meta, meta_error, None),
    Case("google_ads_customer_match", _google, google_error, None),
]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_error_class_is_one_line_without_traceback(case, status, tls, cli, tmp_path):
    fake, h = case.make(tls)
    try:
        keys = h.keys(3)
        m = _setup(h, tmp_path, set(keys), keys)
        body, headers = case.err(status)
        http = status
        if isinstance(body, tuple):  # (http status, body): Meta's 190 comes as a 400
            http, body = body
        fake.fail_next(40, status=http, body=body, headers=headers, path=case.path)
        res = cli("run", "-c", m, env=h.env())
        assert "Traceback" not in res.stderr, res.stderr
        assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if " d: failed" in ln]
        assert len(lines) == 1, res.stderr
        code = {190: "190"}.get(body.get("error", {}).get("code") if isinstance(body, dict)
                                else None, str(status))
        assert code in lines[0] or str(http) in lines[0], lines[0]
        # the traceback is there for a bug report, at DEBUG only
        fake.scripted.clear()
        fake.fail_next(40, status=http, body=body, headers=headers, path=case.path)
        debug = cli("run", "-c", m, env={**h.env(), "CRMSYNC_LOG_LEVEL": "debug"})
        assert debug.exit_code == 1
    finally:
        fake.stop()
