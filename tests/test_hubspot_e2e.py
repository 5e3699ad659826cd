"""`crmsync run` end to end against the HubSpot fake: HubSpot source, list and property
destinations; new, updated, deleted and merged contacts; exact call counts; faults."""

from __future__ import annotations

import json
import math
import time

import pytest
import yaml

from crmsync.sync.store.database import Store

from conftest import write_mapping

pytest.importorskip("hubspot")

from tests.fakes.hubspot import FakeHubSpot  # noqa: E402

TOKEN = "pat-na1-e2e-secret"
ENV = {"HUBSPOT_TOKEN": TOKEN}
LIST = "crmsync · Customers"


@pytest.fixture
def fake():
    with FakeHubSpot(token=TOKEN, rate_limit=1000, search_rate=100) as f:
        f.define_property("lifecyclestage", "enumeration", "select",
                          ["lead", "customer", "other"])
        f.define_property("num_employees", "number", "number")
        yield f


def setup(tmp_path, fake, *, chunk=100, **conn):
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "connections": {"hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}",
                                    "base_url": fake.url, "rate_limit": 1000,
                                    "search_rate": 100, "backoff": 0.01, **conn}},
        "sources": {"crm": {"connection": "hubspot",
                            "properties": ["email", "lifecyclestage", "num_employees"],
                            "identity": {"email": "email"}}},
        "segments": {
            "customers": {"description": "paying", "owner": "revops@x.example",
                          "where": {"field": "lifecyclestage", "eq": "customer"}},
            "leads": {"description": "not yet", "owner": "revops@x.example",
                      "where": {"field": "lifecyclestage", "eq": "lead"}}},
        "groups": {"lifecycle": {"exclusive": True, "segments": ["customers", "leads"]}},
        "destinations": [
            {"name": "customers-list", "segment": "customers", "type": "hubspot_list",
             "connection": "hubspot", "list": LIST, "chunk_size": chunk},
            {"name": "lifecycle-tag", "group": "lifecycle", "type": "hubspot_property",
             "connection": "hubspot", "property": "crmsync_lifecycle"}],
    })


def desired(fake: FakeHubSpot, stage: str) -> set[str]:
    return {cid for cid, c in fake.contacts.items()
            if not c["archived"] and c["props"].get("lifecyclestage") == stage}


def labels(fake: FakeHubSpot) -> dict[str, str]:
    return {cid: c["props"]["crmsync_lifecycle"] for cid, c in fake.contacts.items()
            if not c["archived"] and c["props"].get("crmsync_lifecycle")}


def expected_labels(fake: FakeHubSpot) -> dict[str, str]:
    out = {k: "customers" for k in desired(fake, "customer")}
    out.update({k: "leads" for k in desired(fake, "lead")})
    return out


def test_run_change_run_converges_with_minimal_calls(cli, tmp_path, fake):
    stages = ["customer", "lead", "other"]
    ids = [fake.add_contact({"email": f"u{i}@x.example", "lifecyclestage": stages[i % 3],
                             "num_employees": i}, at=fake.clock_ms - 86_400_000)
           for i in range(300)]
    m = setup(tmp_path, fake)
    first = cli.json("run", "-c", m, env=ENV)
    assert first["exit_code"] == 0, first
    assert fake.members(LIST) == desired(fake, "customer")
    assert labels(fake) == expected_labels(fake)
    assert fake.throttled == 0

    # changes in HubSpot: updated, new, deleted, merged
    fake.tick(3_600_000)
    fake.update_contact(ids[1], {"lifecyclestage": "customer"})  # lead -> customer
    fake.update_contact(ids[0], {"lifecyclestage": "other"})  # customer -> out
    new = fake.add_contact({"email": "n@x.example", "lifecyclestage": "customer"})
    fake.archive_contact(ids[3])  # a customer deleted
    fake.merge_contacts(ids[5], ids[6])  # ids[6] (a customer) merged into a lead
    before = len(fake.requests)
    second = cli.json("run", "-c", m, env=ENV)
    assert second["exit_code"] == 0, second
    assert fake.members(LIST) == desired(fake, "customer")
    assert {new, ids[1]} <= fake.members(LIST) and not {ids[0], ids[3], ids[6]} & fake.members(LIST)
    assert labels(fake) == expected_labels(fake)
    lst = second["destinations"]["customers-list"]
    assert (lst["adds"], lst["removes"]) == (2, 3)  # +1, +new; -0, -3 (deleted), -6 (merged)
    # minimum calls. The first run's write-back changed lastmodifieddate of every contact it
    # labelled (as HubSpot does), so the incremental pull re-reads them: pages of changes.
    changed = sum(not c["archived"] for c in fake.contacts.values())
    pages = math.ceil(changed / 200)
    calls = [(r.method, r.path) for r in fake.requests[before:]]
    assert calls.count(("POST", "/crm/v3/objects/contacts/search")) == pages
    assert sum("add-and-remove" in p for _, p in calls) == 2  # one add batch, one remove
    assert sum("batch/update" in p for _, p in calls) == 3  # one batch per op
    # properties + pages + archived page; list: find by id, 2 batches, readback;
    # property: get definition, 3 batches
    assert len(calls) == 1 + pages + 1 + (1 + 2 + 1) + (1 + 3)
    assert not fake.calls("POST", r"^/crm/v3/lists/?$")[1:]  # the list was created once


def test_runs_converge_under_faults(cli, tmp_path, fake):
    ids = [fake.add_contact({"email": f"u{i}@x.example",
                             "lifecyclestage": "customer" if i % 2 else "lead"})
           for i in range(400)]
    m = setup(tmp_path, fake, chunk=50, max_attempts=8)
    fake.fail_rate(0.1, status=500, body={"status": "error", "message": "internal"})
    fake.fail_next(3, status=429, headers={"Retry-After": "0"}, body={
        "status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
        "message": "You have reached your secondly limit."}, path="add-and-remove")
    first = cli.json("run", "-c", m, env=ENV)
    assert sum(d["retries"] for d in first["destinations"].values()) >= 3  # the 429 burst
    fake.tick(60_000)
    for i in ids[:40]:
        fake.update_contact(i, {"lifecyclestage": "other"})
    fake.expire_token()
    stopped = cli("run", "-c", m, "--json", env=ENV)
    assert stopped.exit_code == 1 and "${HUBSPOT_TOKEN}" in stopped.stderr
    fake.tokens.add(TOKEN)
    fake.expired.clear()
    for _ in range(3):  # whatever failed transiently is retried by the next runs
        last = cli.json("run", "-c", m, env=ENV)
        if last["exit_code"] == 0:
            break
    fake.fail_rate(0.0)
    assert first["destinations"]
    assert last["exit_code"] == 0, last
    assert fake.members(LIST) == desired(fake, "customer")
    assert labels(fake) == expected_labels(fake)


def test_expired_token_message_names_the_variable(cli, tmp_path, fake):
    fake.add_contact({"email": "a@x.example", "lifecyclestage": "customer"})
    m = setup(tmp_path, fake)
    fake.expire_token()
    res = cli("run", "-c", m, "--json", env=ENV)
    out = res.stdout + res.stderr
    assert res.exit_code != 0 and "HUBSPOT_TOKEN" in out and TOKEN not in out


def test_resync_reconciles_with_real_memberships(cli, tmp_path, fake):
    for i in range(30):
        fake.add_contact({"email": f"u{i}@x.example", "lifecyclestage": "customer"})
    m = setup(tmp_path, fake)
    assert cli.json("run", "-c", m, env=ENV)["exit_code"] == 0
    lst = fake.list_named(LIST)
    gone = sorted(lst["members"])[:5]
    for k in gone:  # someone removed members by hand in HubSpot
        del lst["members"][k]
    res = cli("resync", "customers-list", "-c", m, env=ENV)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert cli.json("run", "-c", m, env=ENV)["exit_code"] == 0
    assert fake.members(LIST) == desired(fake, "customer")
    assert len(fake.members(LIST)) == 30


@pytest.mark.slow
def test_more_than_10000_changes_with_equal_timestamps(cli, tmp_path, fake):
    ids = [fake.add_contact({"email": f"u{i}@x.example", "lifecyclestage": "lead"},
                            at=fake.clock_ms - 86_400_000) for i in range(10_600)]
    m = setup(tmp_path, fake, chunk=10_000)
    assert cli.json("run", "-c", m, env=ENV)["exit_code"] == 0
    fake.tick(3_600_000)
    for cid in ids[:10_450]:  # one bulk import: every change has the same timestamp
        fake.update_contact(cid, {"lifecyclestage": "customer"})
    before = len(fake.requests)
    res = cli.json("run", "-c", m, env=ENV)
    assert res["exit_code"] == 0, res
    assert fake.members(LIST) == set(ids[:10_450])
    assert labels(fake) == expected_labels(fake)
    calls = [(r.method, r.path) for r in fake.requests[before:]]
    assert calls.count(("POST", "/crm/v3/objects/contacts/search")) == math.ceil(10_600 / 200)
    assert sum("add-and-remove" in p for _, p in calls) == math.ceil(10_450 / 10_000)
    assert sum("batch/update" in p for _, p in calls) == math.ceil(10_450 / 100)
    assert fake.throttled == 0


class LateAnswer(FakeHubSpot):
    """Applies an add-and-remove, then answers too late once (the client times out and
    retries: the retry finds the contacts already in the list)."""

    stall = 0.0

    def add_and_remove(self, req):
        resp = super().add_and_remove(req)
        if self.stall:
            stall, self.stall = self.stall, 0.0
            time.sleep(stall)
        return resp

    add_and_remove._route = FakeHubSpot.add_and_remove._route


@pytest.mark.parametrize("lost", ["answer", "crash"])
def test_an_add_whose_answer_was_lost_is_crmsyncs_own(cli, tmp_path, lost):
    with LateAnswer(token=TOKEN, rate_limit=1000, search_rate=100) as fake:
        fake.define_property("lifecyclestage", "enumeration", "select", ["lead", "customer"])
        fake.define_property("num_employees", "number", "number")
        ids = [fake.add_contact({"email": f"u{i}@x.example", "lifecyclestage": "customer"})
               for i in range(4)]
        m = setup(tmp_path, fake, timeout=0.5)
        if lost == "answer":
            fake.stall = 1.5
        first = cli.json("run", "-c", m, env=ENV)["destinations"]["customers-list"]
        assert fake.members(LIST) == set(ids)
        if lost == "answer":
            assert first["retries"] >= 1
        else:  # the run died after HubSpot applied the adds, before their checkpoint
            store = Store.open(tmp_path / ".crmsync/state.duckdb")
            store.con.execute("UPDATE ledger SET state = 'pending' "
                              "WHERE dest = 'customers-list'")
            store.close()
            again = cli.json("run", "-c", m, env=ENV)["destinations"]["customers-list"]
            assert again["adds"] == 4  # sent again: HubSpot says they are already there
        fake.tick(60_000)
        for i in ids:
            fake.update_contact(i, {"lifecyclestage": "lead"})
        gone = cli.json("run", "-c", m, "--force", env=ENV)["destinations"]["customers-list"]
        assert gone["removes"] == 4 and fake.members(LIST) == set()


def test_a_refused_request_stops_the_list_is_resent_and_quotes_no_email(cli, tmp_path, fake):
    ids = [fake.add_contact({"email": f"u{i}@x.example", "lifecyclestage": "customer"})
           for i in range(3)]
    m = setup(tmp_path, fake)
    fake.fail_next(1, status=400, path="add-and-remove", body={
        "status": "error", "category": "VALIDATION_ERROR",
        "message": "bad value u1@x.example"})
    res = cli("run", "-c", m, "--json", env=ENV)
    assert res.exit_code == 1
    d = json.loads(res.stdout)["destinations"]["customers-list"]
    assert d["status"] == "failed" and "VALIDATION_ERROR" in d["message"]
    history = cli("history", "-c", m, "--json").stdout
    assert "u1@x.example" not in res.stdout + res.stderr + history
    assert cli.json("run", "-c", m, env=ENV)["exit_code"] == 0  # sent again, not rejected
    assert fake.members(LIST) == set(ids)


def test_a_new_field_in_the_mapping_makes_the_next_pull_full(cli, tmp_path, fake):
    """The snapshot is stored typed: when the mapping's fields or types change, the next pull
    reads every contact again (an incremental pull would leave the new field unknown for
    every contact that did not change since)."""
    ids = [fake.add_contact({"email": f"u{i}@x.example", "lifecyclestage": "lead",
                             "num_employees": 100 * i}, at=fake.clock_ms - 86_400_000)
           for i in range(5)]
    m = setup(tmp_path, fake)
    mapping = yaml.safe_load(m.read_text())
    mapping["sources"]["crm"]["properties"] = ["email", "lifecyclestage"]
    mapping["destinations"] = mapping["destinations"][:1]  # a list: contacts stay unmodified
    write_mapping(m, mapping)
    assert cli.json("run", "-c", m, env=ENV)["exit_code"] == 0
    fake.tick(3_600_000)
    mapping["sources"]["crm"]["properties"] = ["email", "lifecyclestage", "num_employees"]
    mapping["segments"]["big"] = {"description": "d", "owner": "o",
                                  "where": {"field": "num_employees", "gte": 200}}
    write_mapping(m, mapping)
    plan = cli.json("plan", "-c", m, env=ENV)
    assert plan["segments"]["big"]["matched"] == 3, plan  # 200, 300, 400: read again
    assert len(ids) == 5
