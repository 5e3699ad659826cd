"""`crmsync run` end to end against the Salesforce fake: the conformance battery for both
destinations, then a Salesforce source feeding a campaign and a field write-back."""

from __future__ import annotations

import json

import pytest

from crmsync.connectors.testing import DESTINATION_CHECKS as CHECKS

from conftest import write_mapping

pytest.importorskip("simple_salesforce")

from crmsync.connectors import salesforce as sfmod  # noqa: E402
from crmsync.connectors.retry import RetryPolicy  # noqa: E402

from fakes.salesforce import FakeSalesforce, tls_pair  # noqa: E402

ENV = {"SF_USERNAME": "sync@acme.example", "SF_PASSWORD": "pw", "SF_SECURITY_TOKEN": "tok"}
CAMPAIGN = "Champions (crmsync)"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(sfmod, "RETRY", RetryPolicy(attempts=4, initial_wait=0.0, max_wait=0.0))


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return tls_pair(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fake(tls):
    ctx, ca = tls
    with FakeSalesforce(tls=ctx) as f:
        f.ca = ca
        yield f


def connection(fake: FakeSalesforce) -> dict:
    return {"type": "salesforce", "base_url": fake.url, "username": "${SF_USERNAME}",
            "password": "${SF_PASSWORD}", "security_token": "${SF_SECURITY_TOKEN}",
            "ca_file": str(fake.ca), "timeout": 2}


class Harness:
    batch_limit = 200  # sObject Collections

    def __init__(self, fake: FakeSalesforce, kind: str):
        self.fake, self.kind = fake, kind

    def destination(self):
        if self.kind == "campaign":
            return {"type": "salesforce_campaign", "connection": "sf", "campaign": CAMPAIGN}
        return {"type": "salesforce_field", "connection": "sf", "field": "Segment__c"}

    def connections(self):
        return {"sf": connection(self.fake)}

    def env(self):
        return ENV

    def keys(self, n):
        return [self.fake.insert("Contact", LastName=f"L{i}") for i in range(n)]

    def remote(self):
        if self.kind == "campaign":
            return self.fake.members(CAMPAIGN)
        return {r["Id"] for r in self.fake.live("Contact") if r["Segment__c"]}

    def write_count(self):
        return len([r for r in self.fake.calls(path="/composite/sobjects")
                    if r.method in ("POST", "PATCH", "DELETE")])

    def fail_next_writes(self, n):
        self.fake.fail_next(n, status=503, body=[{"errorCode": "SERVER_UNAVAILABLE",
                                                  "message": "try later"}],
                            headers={"Retry-After": "0"}, path="/composite/sobjects")

    def heal(self):
        self.fake.scripted.clear()


@pytest.mark.parametrize("kind", ["campaign", "field"])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, kind, fake, cli, tmp_path):
    check(Harness(fake, kind), cli, tmp_path)


# ---------------------------------------------------------------- salesforce source


def setup(tmp_path, fake, **conn):
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "connections": {"sf": {**connection(fake), **conn}},
        "sources": {"crm": {"connection": "sf", "object": "Contact",
                            "properties": ["Email", "LeadSource", "NumberOfEmployees__c"],
                            "identity": {"email": "Email"}}},
        "segments": {
            "web": {"description": "from the web", "owner": "revops@x.example",
                    "where": {"field": "LeadSource", "eq": "Web"}},
            "big": {"description": "big companies", "owner": "revops@x.example",
                    "where": {"field": "NumberOfEmployees__c", "gte": 250}}},
        "groups": {"tier": {"exclusive": True, "segments": ["web", "big"]}},
        "destinations": [
            {"name": "web-campaign", "segment": "web", "type": "salesforce_campaign",
             "connection": "sf", "campaign": CAMPAIGN},
            {"name": "tier-field", "group": "tier", "type": "salesforce_field",
             "connection": "sf", "field": "Segment__c"}],
    })


def desired(fake: FakeSalesforce) -> set[str]:
    return {r["Id"] for r in fake.live("Contact") if r["LeadSource"] == "Web"}


def labels(fake: FakeSalesforce) -> dict[str, str]:
    return {r["Id"]: r["Segment__c"] for r in fake.live("Contact") if r["Segment__c"]}


def expected_labels(fake: FakeSalesforce) -> dict[str, str]:
    out = {}
    for r in fake.live("Contact"):
        if r["LeadSource"] == "Web":
            out[r["Id"]] = "web"
        elif (r["NumberOfEmployees__c"] or 0) >= 250:
            out[r["Id"]] = "big"
    return out


def test_full_then_incremental_with_updates_deletes_merges(cli, tmp_path, fake):
    sources = ["Web", "Phone", "Other"]
    ids = [fake.insert("Contact", LastName=f"L{i}", Email=f"u{i}@x.example",
                       LeadSource=sources[i % 3], NumberOfEmployees__c=100 * (i % 5))
           for i in range(300)]
    m = setup(tmp_path, fake)
    first = cli.json("run", "-c", m, env=ENV)
    assert first["exit_code"] == 0, first
    assert fake.members(CAMPAIGN) == desired(fake) and len(desired(fake)) == 100
    assert labels(fake) == expected_labels(fake)
    assert fake.logins == ["password"]

    fake.tick(3600)
    fake.update("Contact", ids[1], LeadSource="Web")  # joins
    fake.update("Contact", ids[0], LeadSource="Other")  # leaves
    new = fake.insert("Contact", LastName="N", Email="n@x.example", LeadSource="Web")
    fake.delete("Contact", ids[3])  # a member deleted
    fake.merge("Contact", ids[5], ids[6])  # ids[6] (a member) merged into ids[5]
    fake.expire_sessions()  # the next run's first call meets an expired session
    before = len(fake.requests)
    second = cli.json("run", "-c", m, env=ENV)
    assert second["exit_code"] == 0, second
    assert fake.members(CAMPAIGN) == desired(fake) and new in desired(fake)
    assert labels(fake) == expected_labels(fake)
    camp = second["destinations"]["web-campaign"]
    assert (camp["adds"], camp["removes"]) == (2, 3)
    calls = [(r.method, r.path.replace("/services/data/v59.0", "")) for r in fake.requests[before:]]
    # the minimum: the expired session costs one refused call and one login shared by the
    # source and both destinations; one page of changes, one of deletions; one batch per op
    assert calls == [
        ("GET", "/sobjects/Contact/describe"), ("POST", "/services/Soap/u/59.0"),
        ("GET", "/sobjects/Contact/describe"), ("GET", "/query/"), ("GET", "/queryAll/"),
        ("POST", "/composite/sobjects"), ("DELETE", "/composite/sobjects"),
        ("PATCH", "/composite/sobjects"), ("PATCH", "/composite/sobjects")]
    third = cli.json("run", "-c", m, env=ENV)  # nothing changed: pull only, no write
    assert all(d["calls"] == 0 for d in third["destinations"].values())


def test_run_converges_under_faults(cli, tmp_path, fake):
    for i in range(500):
        fake.insert("Contact", LastName=f"L{i}", LeadSource="Web" if i % 2 else "Phone",
                    NumberOfEmployees__c=300 if i % 3 == 0 else 10)
    m = setup(tmp_path, fake)
    fake.fail_rate(0.1, status=500, body=[{"errorCode": "UNKNOWN_EXCEPTION", "message": "x"}])
    fake.fail_next(1, drop=True, path="/composite/sobjects")
    fake.fail_next(1, status=401, path="/composite/sobjects", body=[
        {"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}])
    last = None
    for _ in range(4):
        last = cli.json("run", "-c", m, env=ENV)
        if last["exit_code"] == 0:
            break
    fake.fail_rate(0.0)
    assert last and last["exit_code"] == 0, last
    assert fake.logins == ["password", "password"]  # the one expiry: one more login
    assert fake.members(CAMPAIGN) == desired(fake)
    assert labels(fake) == expected_labels(fake)


def test_daily_limit_stops_with_a_clear_message(cli, tmp_path, fake):
    for i in range(5):
        fake.insert("Contact", LastName=f"L{i}", LeadSource="Web")
    m = setup(tmp_path, fake, limit_reserve=0.5)
    fake.api_max = 8  # stop once 4 or fewer calls are left
    res = cli("run", "-c", m, "--json", env=ENV)
    assert res.exit_code == 1
    # source: describe + query; campaign: find + create, then the add is not sent
    assert fake.api_used == 4 and not fake.calls("POST", "/composite/")
    out = json.loads(res.stdout)
    assert "keep 50% in reserve" in out["destinations"]["web-campaign"]["message"]
    assert "pw" not in res.stdout + res.stderr


def test_validate_needs_no_network(cli, tmp_path, fake):
    m = setup(tmp_path, fake)
    res = cli("validate", "-c", m, env=ENV)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert fake.requests == []
