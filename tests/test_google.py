"""CustomerMatchDestination against the Data Manager fake: the real REST client over loopback."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crmsync.connectors import load
from crmsync.connectors.base import Change, Context, Op
from crmsync.connectors.google import (
    CustomerMatchDestination,
    CustomerMatchOptions,
    GoogleAdsConnection,
)
from crmsync.connectors.ratelimit import RollingWindow
from crmsync.sync.errors import ConfigError, DestinationStopped
from crmsync.sync.mapping.model import DestinationConfig

from fakes.google import DataManagerFake, error, quota_error
from fakes.server import Request, Response, route

pytest.importorskip("google.ads.datamanager_v1", reason="needs the google extra: pip install 'crmsync[google]'")

ACCOUNT = "1234567890"
MANAGER = "9876543210"


class Clock:
    """A fake clock shared by the fake's quota, the limiter and the retry sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[DataManagerFake]:
    f = DataManagerFake(clock=clock)
    f.add_account(ACCOUNT)
    with f:
        yield f


def make(fake: DataManagerFake, clock: Clock, *, identifiers: list[str] | None = None,
         login: str | None = None, **options: Any) -> CustomerMatchDestination:
    options = {"list": "Champions (crmsync)", "terms_of_service": "accepted", **options}
    cfg = DestinationConfig(name="champions-google", type="google_ads_customer_match",
                            segment="champions", connection="google",
                            identifiers=identifiers or ["email", "phone"], **options)
    conn = GoogleAdsConnection(type="google_ads", operating_account=ACCOUNT,
                               login_account=login, base_url=fake.url)
    ctx = Context(now=datetime(2026, 11, 24), base_dir=Path("."),
                  env_var={"credentials_file": "GOOGLE_APPLICATION_CREDENTIALS"})
    d = CustomerMatchDestination(cfg, CustomerMatchOptions(**cfg.options), conn, ctx)
    d.ctx.sleep = clock.sleep
    d.limiter = RollingWindow(300, 60.0, clock=clock, sleep=clock.sleep)
    return d


def email(i: int) -> str:
    return f"Person.{i}@Example.com"


def changes(d: CustomerMatchDestination, n: int, start: int = 0) -> list[Change]:
    return [Change(f"k{i}", value=d.encode({"email": email(i), "phone_region": "US"}))
            for i in range(start, start + n)]


def expected(i: int) -> str:
    return hashlib.sha256(email(i).lower().encode()).hexdigest()


def emails_in(fake: DataManagerFake, list_id: str) -> set[str]:
    return {ids["emailAddress"] for row in fake.member_rows(int(list_id)) for ids in row
            if "emailAddress" in ids}


# ------------------------------------------------------------------ registry and config

def test_registered_through_entry_points() -> None:
    assert load("destination", "google_ads_customer_match") is CustomerMatchDestination
    assert load("connection", "google_ads") is GoogleAdsConnection
    assert CustomerMatchDestination.value == "identity" and CustomerMatchDestination.hashed


def test_connection_normalises_account_ids() -> None:
    c = GoogleAdsConnection(type="google_ads", operating_account="123-456-7890",
                            login_account=" 987-654-3210 ")
    assert (c.operating_account, c.login_account) == ("1234567890", "9876543210")
    with pytest.raises(ValueError, match="account id"):
        GoogleAdsConnection(type="google_ads", operating_account="act_12")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        CustomerMatchOptions(list="x", membership_duration="600d")
    with pytest.raises(ValueError):
        CustomerMatchOptions(list="x", audience="typo")
    assert not CustomerMatchOptions(list="x").terms_accepted


def test_unsupported_identifiers_are_a_config_error(fake: DataManagerFake, clock: Clock) -> None:
    with pytest.raises(ConfigError, match="date_of_birth"):
        make(fake, clock, identifiers=["email", "date_of_birth"])


# ------------------------------------------------------------------ open

def test_open_creates_then_reuses_the_list(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock, description="Top customers", membership_duration="30d")
    state = d.open({})
    assert d.ctx.meter.calls == 2  # list + create
    ul = fake.list_named("Champions (crmsync)")
    assert ul is not None and state["list_id"] == str(ul.id)
    assert ul.description == "Top customers" and ul.membership_duration == "2592000s"

    again = make(fake, clock)
    assert again.open(dict(state))["list_id"] == state["list_id"]
    assert again.ctx.meter.calls == 0  # the stored id is trusted: no call

    fresh = make(fake, clock)
    assert fresh.open({})["list_id"] == state["list_id"]
    assert fresh.ctx.meter.calls == 1 and len(fake.lists) == 1  # found by name, not created


def test_open_pages_through_lists(fake: DataManagerFake, clock: Clock) -> None:
    fake.page_size = 2
    for i in range(5):
        make(fake, clock, list=f"other {i}").open({})
    d = make(fake, clock, list="other 4")
    fake.requests.clear()
    assert d.open({})["list_id"] == str(fake.list_named("other 4").id)
    assert len(fake.calls("GET", "/userLists$")) == 3  # pages of 2, 2, 1


def test_renamed_list_is_found_again(fake: DataManagerFake, clock: Clock) -> None:
    state = make(fake, clock).open({})
    d = make(fake, clock, list="Renamed")
    assert d.open(state)["list_id"] != state["list_id"]
    assert fake.list_named("Renamed") is not None


class LosingFake(DataManagerFake):
    """Creates the list but loses the answer once (503 after the work is done)."""

    lose = True

    @route("POST", r"/v1/accountTypes/GOOGLE_ADS/accounts/(\d+)/userLists")
    def create_user_list(self, req: Request) -> Response:
        resp = super().create_user_list(req)
        if self.lose:
            self.lose = False
            return Response(503, {"error": {"code": 503, "message": "lost",
                                            "status": "UNAVAILABLE"}})
        return resp


def test_create_answer_lost_then_found(clock: Clock) -> None:
    """The retry meets ALREADY_EXISTS and the list is found, not duplicated."""
    with LosingFake(clock=clock) as fake:
        fake.add_account(ACCOUNT)
        d = make(fake, clock)
        state = d.open({})
        assert len(fake.lists) == 1 and state["list_id"] == str(fake.list_named(
            "Champions (crmsync)").id)
        assert d.ctx.meter.retries == 1
        assert d.ctx.meter.calls == 4  # list, create (lost), create (409), list


def test_permission_denied_stops_with_what_to_fix(fake: DataManagerFake, clock: Clock) -> None:
    fake.accounts[ACCOUNT] = False
    d = make(fake, clock)
    with pytest.raises(DestinationStopped, match="access.*account 1234567890.*login_account"):
        d.open({})
    assert d.ctx.meter.calls == 1 and d.ctx.meter.retries == 0


def test_login_account_is_sent(fake: DataManagerFake, clock: Clock) -> None:
    fake.add_account(MANAGER)
    d = make(fake, clock, login=MANAGER)
    d.open({})
    d.write(Op.ADD, changes(d, 2))
    lists = fake.calls(path="/userLists")
    assert lists and all(r.headers.get("login-account") ==
                         f"accountTypes/GOOGLE_ADS/accounts/{MANAGER}" for r in lists)
    body = fake.calls("POST", ":ingest$")[0].json()
    assert body["destinations"][0]["loginAccount"]["accountId"] == MANAGER


# ------------------------------------------------------------------ write

def test_add_remove_update_converge(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock)
    list_id = d.open({})["list_id"]
    adds = changes(d, 5)
    r = d.write(Op.ADD, adds)
    assert set(r.done) == {f"k{i}" for i in range(5)} and not r.rejected
    assert emails_in(fake, list_id) == {expected(i) for i in range(5)}

    gone = [Change(c.key, previous=c.value) for c in adds[:2]]
    assert set(d.write(Op.REMOVE, gone).done) == {"k0", "k1"}
    assert emails_in(fake, list_id) == {expected(i) for i in range(2, 5)}

    new_value = d.encode({"email": "new.address@example.com"})
    upd = Change("k2", value=new_value, previous=adds[2].value)
    assert set(d.write(Op.UPDATE, [upd]).done) == {"k2"}
    want = {expected(3), expected(4), hashlib.sha256(b"new.address@example.com").hexdigest()}
    assert emails_in(fake, list_id) == want
    # list+create, ingest, remove, remove+ingest (update: the old identifiers go out first)
    assert d.ctx.meter.calls == 6
    assert [r.path for r in fake.requests[-2:]] == ["/v1/audienceMembers:remove",
                                                    "/v1/audienceMembers:ingest"]
    body = fake.calls("POST", ":ingest$")[0].json()
    assert body["encoding"] == 1 and body["termsOfService"] == {
        "customerMatchTermsOfServiceStatus": 1}
    assert body["consent"] == {"adUserData": 1, "adPersonalization": 1}


def test_ten_thousand_members_per_request(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock)
    list_id = d.open({})["list_id"]
    fake.requests.clear()
    r = d.write(Op.ADD, changes(d, 10_001))
    assert len(r.done) == 10_001
    sizes = [len(c.json()["audienceMembers"]) for c in fake.calls("POST", ":ingest$")]
    assert sizes == [10_000, 1]
    assert len(fake.lists[int(list_id)].members) == 10_001


def test_terms_not_accepted_in_mapping_stops_before_any_call(fake: DataManagerFake,
                                                              clock: Clock) -> None:
    d = make(fake, clock, terms_of_service="not_accepted")
    d.open({})
    calls = d.ctx.meter.calls
    with pytest.raises(DestinationStopped, match="terms_of_service: accepted"):
        d.write(Op.ADD, changes(d, 1))
    assert d.ctx.meter.calls == calls and not fake.calls("POST", ":ingest$")


def test_terms_error_from_google_stops(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock)
    d.open({})
    resp = error(400, "INVALID_ARGUMENT", "terms", "TERMS_AND_CONDITIONS_NOT_SIGNED")
    fake.fail_next(1, status=400, body=resp.body, path=":ingest$")
    with pytest.raises(DestinationStopped, match="terms of service are not accepted"):
        d.write(Op.ADD, changes(d, 1))


def test_bad_member_is_rejected_and_the_rest_sent(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock)
    list_id = d.open({})["list_id"]
    batch = changes(d, 3)
    batch.insert(1, Change("bad", value='[{"emailAddress":"not-a-hash"}]'))
    batch.append(Change("empty", value="not json"))
    r = d.write(Op.ADD, batch)
    assert r.rejected == {"bad": "INVALID_SHA256_FORMAT", "empty": "no encoded identifiers to send"}
    assert set(r.done) == {"k0", "k1", "k2"}
    assert emails_in(fake, list_id) == {expected(i) for i in range(3)}
    assert len(fake.calls("POST", ":ingest$")) == 2


# ------------------------------------------------------------------ quotas and faults

def test_client_side_limiter_keeps_under_the_minute_quota(fake: DataManagerFake,
                                                          clock: Clock) -> None:
    fake.per_minute = 3
    d = make(fake, clock)
    d.limiter = RollingWindow(3, 60.0, clock=clock, sleep=clock.sleep)
    d.open({})
    for i in range(7):
        d.write(Op.ADD, changes(d, 1, start=i))
    assert d.ctx.meter.throttled == 0 and d.ctx.meter.retries == 0
    assert len(fake.calls("POST", ":ingest$")) == 7
    assert clock.t - 1000.0 >= 120.0  # 7 requests at 3 a minute span two waits


def test_minute_quota_429_is_retried_after_retry_after(fake: DataManagerFake,
                                                       clock: Clock) -> None:
    fake.per_minute = 2
    d = make(fake, clock)  # the limiter allows 300: the fake's quota answers 429
    list_id = d.open({})["list_id"]
    for i in range(3):
        d.write(Op.ADD, changes(d, 1, start=i))
    m = d.ctx.meter
    assert (m.throttled, m.retries) == (1, 1)
    assert len(fake.calls("POST", ":ingest$")) == 4
    assert clock.slept and clock.slept[0] == 60.0  # the fake's Retry-After
    assert emails_in(fake, list_id) == {expected(i) for i in range(3)}


def test_429_without_retry_after_backs_off(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock)
    d.open({})
    q = quota_error("IngestionMutateRequestsPerMinutePerProject")
    fake.fail_next(2, status=429, body=q.body, path=":ingest$")
    assert len(d.write(Op.ADD, changes(d, 1)).done) == 1
    assert d.ctx.meter.retries == 2 and len(clock.slept) == 2


def test_daily_quota_stops(fake: DataManagerFake, clock: Clock) -> None:
    fake.per_day = 1
    d = make(fake, clock)
    d.open({})
    d.write(Op.ADD, changes(d, 1))
    with pytest.raises(DestinationStopped, match="daily quota"):
        d.write(Op.ADD, changes(d, 1, start=1))
    assert d.ctx.meter.retries == 0


@pytest.mark.parametrize("fault", [{"status": 503}, {"drop": True}, {"status": 500}])
def test_transient_faults_are_retried(fake: DataManagerFake, clock: Clock,
                                      fault: dict) -> None:
    d = make(fake, clock)
    list_id = d.open({})["list_id"]
    fake.fail_next(1, path=":ingest$", **fault)
    assert len(d.write(Op.ADD, changes(d, 2)).done) == 2
    assert d.ctx.meter.retries == 1
    assert emails_in(fake, list_id) == {expected(0), expected(1)}


def test_persistent_outage_gives_up_as_stopped(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock)
    d.open({})
    fake.fail_next(20, status=503, path=":ingest$")
    with pytest.raises(DestinationStopped, match="gave up"):
        d.write(Op.ADD, changes(d, 1))
    assert d.ctx.meter.calls - 2 == d.policy.attempts


# ------------------------------------------------------------------ readback and request status

def test_readback_reports_size_match_rate_and_request_ids(fake: DataManagerFake,
                                                          clock: Clock) -> None:
    fake.google_users = {expected(0), expected(1)}
    d = make(fake, clock)
    d.open({})
    d.write(Op.ADD, changes(d, 4))
    rb = d.readback()
    assert rb["size"] == 2 and rb["match_rate"] == 50
    assert rb["request_ids"] == list(fake.statuses) and len(rb["request_ids"]) == 1
    calls = d.ctx.meter.calls

    idle = make(fake, clock)
    state = idle.open({"list_id": rb["list_id"], "list": "Champions (crmsync)",
                       "account": ACCOUNT, "size": 2, "match_rate": 50})
    assert state["list_id"] == rb["list_id"]
    assert idle.readback()["size"] == 2 and idle.ctx.meter.calls == 0  # nothing changed
    assert d.ctx.meter.calls == calls


def test_failed_members_are_reported_on_the_next_run(fake: DataManagerFake,
                                                     clock: Clock) -> None:
    fake.processing_polls = 1  # the first status read says PROCESSING
    d = make(fake, clock, ad_consent={"ad_user_data": "denied"})
    d.open({})
    d.write(Op.ADD, changes(d, 3))
    state = d.remember()  # what open() returned is never changed: the writes' ids are here
    assert len(state["pending"]) == 1

    second = make(fake, clock)
    state2 = second.open(dict(state))
    assert state2["pending"] == state["pending"]  # still processing: kept
    assert second.ctx.meter.calls == 1

    third = make(fake, clock)
    state3 = third.open(dict(state2))
    assert "pending" not in state3
    prev = third.readback()["previous_requests"]
    assert prev == {"checked": 1, "failed_records": 3,
                    "errors": {"PROCESSING_ERROR_REASON_DENIED_CONSENT": 3}}


def test_no_raw_email_or_phone_in_logs(fake: DataManagerFake, clock: Clock,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = make(fake, clock)
    d.open({})
    raw = [{"email": email(i), "phone": f"+1415555{i:04d}", "phone_region": "US"}
           for i in range(3)]
    d.write(Op.ADD, [Change(f"k{i}", value=d.encode(r)) for i, r in enumerate(raw)])
    fake.fail_next(1, status=503, path=":ingest$")
    d.write(Op.ADD, [Change("k9", value=d.encode(raw[0]))])
    d.readback()
    d.close()
    text = caplog.text.lower()
    assert "google:" in text
    for r in raw:
        assert r["email"].lower() not in text and r["phone"] not in text
        assert r["phone"][2:] not in text


def test_encode_is_json_of_hashes(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock, identifiers=["email", "phone", "first_name", "last_name", "country",
                                       "zip"])
    v = json.loads(d.encode({"email": "A@Example.com", "phone": "415 555 0100",
                             "first_name": "Jane", "last_name": "Doe", "country": "US",
                             "zip": "94043", "phone_region": "US"}))
    assert [next(iter(i)) for i in v] == ["emailAddress", "phoneNumber", "address"]
    assert v[2]["address"]["postalCode"] == "94043" and v[2]["address"]["regionCode"] == "US"


def test_unreadable_credentials_file_names_the_env_var(fake: DataManagerFake,
                                                       clock: Clock) -> None:
    d = make(fake, clock)
    d.connection = GoogleAdsConnection(type="google_ads", operating_account=ACCOUNT,
                                       credentials_file="/nonexistent/key.json",
                                       base_url="https://datamanager.example.invalid")
    with pytest.raises(DestinationStopped, match=r"\$GOOGLE_APPLICATION_CREDENTIALS"):
        d.open({})
    assert d.ctx.meter.calls == 0


def test_plain_http_is_only_anonymous_on_loopback(fake: DataManagerFake, clock: Clock) -> None:
    from google.auth.credentials import AnonymousCredentials
    d = make(fake, clock)
    assert isinstance(d._credentials(), AnonymousCredentials)
    d.connection = GoogleAdsConnection(type="google_ads", operating_account=ACCOUNT,
                                       credentials_file="/nonexistent/key.json",
                                       base_url="http://proxy.example:8080")
    with pytest.raises(DestinationStopped):
        d._credentials()


def test_failed_readback_does_not_fail_the_push(fake: DataManagerFake, clock: Clock) -> None:
    d = make(fake, clock)
    d.open({})
    d.write(Op.ADD, changes(d, 1))
    fake.fail_next(1, status=404, body={"error": {"code": 404, "message": "gone",
                                                  "status": "NOT_FOUND"}}, path="/userLists/")
    rb = d.readback()
    assert rb["size"] is None and len(rb["request_ids"]) == 1
