"""CustomAudienceDestination against the stateful Graph fake, through the real SDK over HTTP."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import pytest

pytest.importorskip("facebook_business")

from crmsync.connectors.base import Change, Context, Op  # noqa: E402
from crmsync.connectors.meta import (  # noqa: E402
    CustomAudienceDestination,
    CustomAudienceOptions,
    MetaConnection,
)
from crmsync.connectors.retry import RetryPolicy  # noqa: E402
from crmsync.sync.errors import DestinationStopped, Reject  # noqa: E402
from crmsync.sync.mapping.model import DestinationConfig  # noqa: E402
from tests.fakes.meta import FakeGraph, sha  # noqa: E402

IDS = ["email", "phone", "first_name", "last_name", "country"]
CONTACTS = {  # key -> raw identity, with the normalised values Meta expects (by hand, per docs)
    "c1": ({"email": " Ana.Lopez@Example.com", "phone": "(650) 555-1234", "first_name": "Ana",
            "last_name": "López", "country": "US"},
           {"EMAIL": "ana.lopez@example.com", "PHONE": "16505551234", "FN": "ana",
            "LN": "lópez", "COUNTRY": "us"}),
    "c2": ({"email": "bob@example.com", "phone": "020 7946 0018", "first_name": "Bob",
            "last_name": "O'Neil", "country": "GB"},
           {"EMAIL": "bob@example.com", "PHONE": "442079460018", "FN": "bob", "LN": "oneil",
            "COUNTRY": "gb"}),
    "c3": ({"email": "CHLOE@example.org", "phone": None, "first_name": "Chloé",
            "last_name": "Smith", "country": None},
           {"EMAIL": "chloe@example.org", "FN": "chloé", "LN": "smith"}),
}
# Whole values, not short digit runs: a random 19-digit upload session id may contain "650".
RAW_PII = ["ana.lopez@example.com", "Ana.Lopez", "(650) 555", "5551234", "bob@example.com",
           "020 7946", "79460018", "chloe@example.org", "CHLOE"]


@pytest.fixture
def fake():
    with FakeGraph(account="act_1234") as f:
        for _, norm in CONTACTS.values():
            for key, value in norm.items():
                f.expect(key, [value])
        yield f
        assert not f.calls(path=r"/usersreplace$"), "usersreplace must never be used"
        assert not f.calls("DELETE"), "removals go in a POST body, never a DELETE URL"


def make(fake: FakeGraph, identifiers=IDS, sleeps=None, **opts) -> CustomAudienceDestination:
    cfg = DestinationConfig(name="champions-meta", type="meta_custom_audience",
                            connection="meta", identifiers=identifiers,
                            audience=opts.pop("audience", "Champions (crmsync)"), **opts)
    conn = MetaConnection(type="meta", access_token="EAAsecret-token", ad_account_id="act_1234",
                          base_url=fake.url)
    ctx = Context(now=datetime(2026, 11, 23), base_dir=Path("."),
                  env_var={"access_token": "META_ACCESS_TOKEN"})
    dest = CustomAudienceDestination(cfg, CustomAudienceOptions(**cfg.options), conn, ctx)
    dest.ctx.sleep = (sleeps.append if sleeps is not None else lambda s: None)
    dest.policy = RetryPolicy(attempts=4, initial_wait=0, max_wait=0)
    return dest


def encoded(dest, key):
    raw = dict(CONTACTS[key][0], phone_region="US")
    return dest.encode(raw)


def expected_row(key, identifiers=IDS):
    from crmsync.connectors.meta import SCHEMA
    norm = CONTACTS[key][1]
    return tuple(sorted((k, sha(norm[k])) for name in identifiers for k in SCHEMA[name]
                        if k in norm))


def adds(dest, keys):
    return [Change(k, value=encoded(dest, k)) for k in keys]


# ---------------------------------------------------------------- encode


def test_encode_is_schema_ordered_hashes_with_blanks(fake):
    dest = make(fake)
    row = json.loads(encoded(dest, "c3"))
    assert dest.schema == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
    assert row == [sha("chloe@example.org"), "", sha("chloé"), sha("smith"), ""]


def test_encode_dob_gender_extern_id():
    cfg = DestinationConfig(name="d", type="meta_custom_audience",
                            identifiers=["external_id", "date_of_birth", "gender", "zip"],
                            audience="A")
    dest = CustomAudienceDestination(cfg, CustomAudienceOptions(audience="A"), None,
                                     Context(now=datetime(2026, 1, 1), base_dir=Path(".")))
    row = json.loads(dest.encode({"external_id": " CRM-9 ", "date_of_birth": "1980-03-07",
                                  "gender": "Female", "zip": "94105-1234", "country": "US"}))
    assert dest.schema == ["EXTERN_ID", "DOBY", "DOBM", "DOBD", "GEN", "ZIP"]
    assert row == ["CRM-9", sha("1980"), sha("03"), sha("07"), sha("f"), sha("94105")]


def test_encode_rejects_when_nothing_usable(fake):
    dest = make(fake)
    with pytest.raises(Reject) as err:
        dest.encode({"email": "not-an-email", "phone": "12", "first_name": "Ana",
                     "country": "US", "phone_region": "US"})
    assert err.value.reason == ("no valid identifier: email is not a valid address; "
                                "phone is not a valid number")


def test_encode_passes_prehashed_values_through(fake):
    dest = make(fake, identifiers=["email"])
    h = sha("ana.lopez@example.com")
    assert json.loads(dest.encode({"email": h.upper()})) == [h]


# ---------------------------------------------------------------- open


def test_open_creates_then_reuses_the_audience(fake):
    dest = make(fake, customer_file_source="USER_PROVIDED_ONLY", description="crmsync: champions")
    state = dest.open({})
    aud = fake.by_name("Champions (crmsync)")
    assert state == {"audience_id": aud.id, "audience": "Champions (crmsync)"}
    assert aud.customer_file_source == "USER_PROVIDED_ONLY"
    assert aud.description == "crmsync: champions"
    assert [(r.method, r.path.split("/", 2)[2]) for r in fake.requests] == [
        ("GET", "act_1234/customaudiences"), ("POST", "act_1234/customaudiences")]
    from facebook_business.api import FacebookAdsApi
    assert fake.requests[0].path.startswith(f"/{FacebookAdsApi.API_VERSION}/")  # SDK default
    assert dest.ctx.meter.calls == 2

    again = make(fake)
    assert again.open(state) == state  # remembered: no call
    assert again.ctx.meter.calls == 0


def test_open_finds_an_existing_audience_by_name(fake):
    fake.add_audience("Other")
    aud = fake.add_audience("Champions (crmsync)")
    dest = make(fake)
    assert dest.open({})["audience_id"] == aud.id
    assert len(fake.requests) == 1 and len(fake.audiences) == 2


def test_terms_not_accepted_stops_with_what_to_do(fake):
    fake.tos_accepted = False
    with pytest.raises(DestinationStopped, match=r"terms are not accepted.*customaudiences/app/tos"):
        make(fake).open({})


def test_bad_token_stops_naming_the_env_var(fake):
    fake.fail_next(status=400, body={"error": {"message": "Invalid OAuth access token.",
                                               "type": "OAuthException", "code": 190}})
    with pytest.raises(DestinationStopped, match=r"\$\{META_ACCESS_TOKEN\}") as err:
        make(fake).open({})
    assert "EAAsecret-token" not in str(err.value)


# ---------------------------------------------------------------- write


def test_add_sends_one_session_post_with_normalised_hashes(fake):
    dest = make(fake)
    dest.open({})
    res = dest.write(Op.ADD, adds(dest, ["c1", "c2", "c3"]))
    assert res.done == {"c1": None, "c2": None, "c3": None} and not res.rejected
    posts = fake.calls("POST", r"/users$")
    assert len(posts) == 1 and dest.ctx.meter.calls == 3
    form = posts[0].form()
    assert "method" not in form
    session = json.loads(form["session"])
    assert session["batch_seq"] == 1 and session["last_batch_flag"] is True
    assert session["estimated_num_total"] == 3
    assert json.loads(form["payload"])["schema"] == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
    assert fake.invalid == []  # every digest is the hash of the documented normal form
    assert fake.by_name("Champions (crmsync)").members == {expected_row(k) for k in CONTACTS}


def test_a_normalisation_slip_is_caught_by_the_fake(fake):
    dest = make(fake, identifiers=["first_name"])
    dest.open({})
    dest.write(Op.ADD, [Change("x", value=json.dumps([sha("Ana")]))])  # not lower-cased
    assert fake.invalid == [("FN", sha("Ana"))]
    assert fake.by_name("Champions (crmsync)").members == set()


def test_remove_posts_method_delete_and_spares_others_members(fake):
    dest = make(fake)
    dest.open({})
    aud = fake.by_name("Champions (crmsync)")
    theirs = {"EMAIL": sha("someone@else.example")}
    aud.members.add(tuple(sorted(theirs.items())))
    changes = adds(dest, ["c1", "c2"])
    dest.write(Op.ADD, changes)
    res = dest.write(Op.REMOVE, [Change(c.key, previous=c.value) for c in changes])
    assert set(res.done) == {"c1", "c2"}
    post = fake.calls("POST", r"/users$")[-1]
    assert post.form()["method"] == "DELETE" and "payload" not in post.query
    assert aud.members == {tuple(sorted(theirs.items()))}


def test_update_removes_the_previous_row_then_adds_the_new_one(fake):
    dest = make(fake)
    dest.open({})
    old = encoded(dest, "c1")
    dest.write(Op.ADD, [Change("c1", value=old)])
    new = dest.encode(dict(CONTACTS["c2"][0], phone_region="US"))
    res = dest.write(Op.UPDATE, [Change("c1", value=new, previous=old)])
    assert res.done == {"c1": None}
    assert fake.by_name("Champions (crmsync)").members == {expected_row("c2")}
    forms = [r.form() for r in fake.calls("POST", r"/users$")]
    assert [f.get("method") for f in forms] == [None, "DELETE", None]


def test_removal_of_10000_rows_fits_where_the_sdk_delete_url_cannot(fake):
    dest = make(fake, identifiers=["email"])
    dest.open({})
    aud = fake.by_name("Champions (crmsync)")
    fake.known = None  # synthetic rows
    rows = [[sha(f"user{i}@example.com")] for i in range(10_000)]
    aud.members.update((("EMAIL", r[0]),) for r in rows)
    res = dest.write(Op.REMOVE, [Change(f"k{i}", previous=json.dumps(r))
                                 for i, r in enumerate(rows)])
    assert len(res.done) == 10_000 and aud.members == set()
    assert len(fake.calls("POST", r"/users$")) == 1

    # the SDK's own remove path (DELETE with the payload in the URL) is refused by the server;
    # the SDK even reports the non-JSON 414 as a success, which crmsync's check does not
    resp = dest._client().call("DELETE", (aud.id, "users"),
                               params={"payload": {"schema": ["EMAIL"], "data": rows}})
    assert resp.status() == 414 and resp.is_success()
    fake.requests.clear()  # that DELETE was the demonstration, not crmsync's path


def test_a_non_json_error_page_is_a_failure_not_a_success(fake):
    dest = make(fake)
    dest.open({})
    fake.fail_next(1, status=502, body="<html>Bad Gateway</html>", path=r"/users$")
    res = dest.write(Op.ADD, adds(dest, ["c1"]))
    assert res.done == {"c1": None} and dest.ctx.meter.retries == 1
    assert fake.by_name("Champions (crmsync)").members == {expected_row("c1")}


def test_more_than_10000_rows_go_in_one_session_of_ordered_chunks(fake):
    dest = make(fake, identifiers=["email"])
    dest.open({})
    fake.known = None
    changes = [Change(f"k{i}", value=json.dumps([sha(f"u{i}@example.com")]))
               for i in range(20_001)]
    res = dest.write(Op.ADD, changes)
    assert len(res.done) == 20_001
    sessions = [json.loads(r.form()["session"]) for r in fake.calls("POST", r"/users$")]
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3]
    assert [s["last_batch_flag"] for s in sessions] == [False, False, True]
    assert len({s["session_id"] for s in sessions}) == 1
    assert len(fake.by_name("Champions (crmsync)").members) == 20_001


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(("code", "subcode"), [(17, 2446079), (613, 1487742), (80003, None)])
def test_throttling_backs_off_and_retries(fake, code, subcode):
    sleeps: list[float] = []
    dest = make(fake, sleeps=sleeps)
    dest.open({})
    fake.throttle(code, subcode, n=2, regain_minutes=0, path=r"/users$")
    res = dest.write(Op.ADD, adds(dest, ["c1"]))
    assert res.done == {"c1": None}
    m = dest.ctx.meter
    assert (m.calls, m.retries, m.throttled) == (5, 2, 2)
    assert sleeps == [0.0, 0.0]  # estimated_time_to_regain_access honoured


def test_throttled_for_longer_than_policy_stops(fake):
    dest = make(fake)
    dest.open({})
    fake.throttle(80003, None, n=1, regain_minutes=30, path=r"/users$")
    with pytest.raises(DestinationStopped, match="80003"):
        dest.write(Op.ADD, adds(dest, ["c1"]))
    assert dest.ctx.meter.calls == 3


def test_server_errors_and_dropped_connections_are_retried(fake):
    dest = make(fake)
    dest.open({})
    fake.fail_next(1, status=500, body={"error": {"message": "x", "code": 2}}, path=r"/users$")
    fake.fail_next(1, drop=True, path=r"/users$")
    res = dest.write(Op.ADD, adds(dest, ["c1"]))
    assert res.done == {"c1": None} and dest.ctx.meter.retries == 2
    assert fake.by_name("Champions (crmsync)").members == {expected_row("c1")}


def test_retry_after_is_honoured_on_server_errors(fake):
    sleeps: list[float] = []
    dest = make(fake, sleeps=sleeps)
    dest.open({})
    fake.fail_next(1, status=503, body={"error": {"message": "busy", "code": 2}},
                   headers={"Retry-After": "1"}, path=r"/users$")
    assert dest.write(Op.ADD, adds(dest, ["c1"])).done == {"c1": None}
    assert sleeps == [1.0]


def test_audience_that_cannot_be_edited_stops(fake):
    dest = make(fake)
    dest.open({})
    fake.by_name("Champions (crmsync)").editable = False
    with pytest.raises(DestinationStopped, match="cannot be edited.*appeal"):
        dest.write(Op.ADD, adds(dest, ["c1"]))


def test_removal_below_minimum_size_is_deferred(fake):
    dest = make(fake)
    dest.open({})
    changes = adds(dest, ["c1", "c2"])
    dest.write(Op.ADD, changes)
    fake.by_name("Champions (crmsync)").min_size = 2
    res = dest.write(Op.REMOVE, [Change(c.key, previous=c.value) for c in changes])
    assert not res.done and not res.rejected
    assert set(res.deferred) == {"c1", "c2"} and "minimum size" in res.deferred["c1"]
    assert len(fake.by_name("Champions (crmsync)").members) == 2


def test_a_refused_call_stops_the_destination_and_rejects_no_row(fake):
    dest = make(fake)
    dest.open({})
    fake.fail_next(1, status=400, body={"error": {"message": "(#100) Invalid parameter",
                                                  "code": 100}}, path=r"/users$")
    with pytest.raises(DestinationStopped, match=r"\(#100\) Invalid parameter"):
        dest.write(Op.ADD, adds(dest, ["c1"]))
    res = dest.write(Op.ADD, adds(dest, ["c1"]))  # the next try sends it
    assert set(res.done) == {"c1"} and not res.rejected


def test_stored_rows_of_another_schema_are_rejected_not_sent(fake):
    dest = make(fake)
    dest.open({})
    res = dest.write(Op.REMOVE, [Change("c1", previous=json.dumps([sha("x@example.com")]))])
    assert "resync" in res.rejected["c1"] and not fake.calls("POST", r"/users$")


# ---------------------------------------------------------------- readback, logs


def test_readback_reports_the_audience_size_range(fake):
    dest = make(fake)
    dest.open({})
    dest.write(Op.ADD, adds(dest, ["c1", "c2"]))
    rb = dest.readback()
    assert rb["approximate_count_lower_bound"] == 2 and rb["approximate_count_upper_bound"] == 2
    dest.close()


def test_no_raw_email_phone_or_token_in_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    dest = make(fake)
    dest.open({})
    changes = adds(dest, list(CONTACTS))
    dest.write(Op.ADD, changes)
    fake.by_name("Champions (crmsync)").min_size = 5
    dest.write(Op.REMOVE, [Change(c.key, previous=c.value) for c in changes])
    fake.fail_next(1, status=400, body={"error": {"message": "bad", "code": 100}}, path="/users")
    with pytest.raises(DestinationStopped) as stopped:
        dest.write(Op.ADD, changes)
    dest.readback()
    caplog.records.append(logging.makeLogRecord({"msg": str(stopped.value)}))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records  # something was logged
    for needle in [*RAW_PII, "EAAsecret-token"]:
        assert needle.lower() not in text.lower(), needle


def test_app_secret_adds_a_proof_and_no_secret_leaks(fake, caplog):
    import hashlib
    import hmac

    caplog.set_level(logging.DEBUG)
    dest = make(fake)
    dest.connection = MetaConnection(type="meta", access_token="EAAsecret-token",
                                     ad_account_id="1234", app_secret="app-secret-xyz",
                                     base_url=fake.url)
    dest.open({})
    proof = hmac.new(b"app-secret-xyz", b"EAAsecret-token", hashlib.sha256).hexdigest()
    assert fake.requests[0].arg("appsecret_proof") == proof
    assert fake.requests[0].path.endswith("/act_1234/customaudiences")  # "act_" added
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(dest.connection)
    for secret in ("EAAsecret-token", "app-secret-xyz", proof):
        assert secret not in text
