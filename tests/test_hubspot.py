"""HubSpot connector against the stateful fake, through the real SDK over loopback HTTP."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest

from crmsync.connectors.base import Change, Context, Op, SourceState
from crmsync.connectors.hubspot import (
    HubSpotConnection,
    HubSpotListDestination,
    HubSpotPropertyDestination,
    HubSpotSource,
)
from crmsync.sync.errors import DestinationStopped
from crmsync.sync.mapping.model import DestinationConfig, FieldType, SourceConfig
from tests.fakes.hubspot import FakeHubSpot

pytest.importorskip("hubspot")

TOKEN = "pat-na1-test"
NOW = datetime(2026, 11, 24, 12, 0)


@pytest.fixture
def fake():
    with FakeHubSpot(token=TOKEN, rate_limit=1000) as f:
        yield f


def connection(fake: FakeHubSpot, **kw) -> HubSpotConnection:
    kw.setdefault("rate_limit", 1000)
    kw.setdefault("backoff", 0.01)
    return HubSpotConnection(type="hubspot", token=TOKEN, base_url=fake.url, **kw)


def ctx(tmp_path, **kw) -> Context:
    return Context(now=NOW, base_dir=tmp_path, env_var={"token": "HUBSPOT_TOKEN"}, **kw)


def list_dest(fake, tmp_path, *, name="crmsync · Champions", chunk=None, batch_size=None,
              conn=None):
    opts = {"list": name} | ({"chunk_size": chunk} if chunk else {})
    cfg = DestinationConfig(name="champions-list", type="hubspot_list", segment="champions",
                            connection="hubspot", batch_size=batch_size, **opts)
    return HubSpotListDestination(cfg, HubSpotListDestination.Options(**cfg.options),
                                  conn or connection(fake), ctx(tmp_path))


def prop_dest(fake, tmp_path, *, prop="crmsync_lifecycle", group="lifecycle",
              labels=("customers", "leads"), **extra):
    cfg = DestinationConfig(name="rfm-tag", type="hubspot_property", group=group,
                            connection="hubspot", property=prop, **extra)
    return HubSpotPropertyDestination(cfg, HubSpotPropertyDestination.Options(**cfg.options),
                                      connection(fake), ctx(tmp_path, labels=labels))


def adds(keys) -> list[Change]:
    return [Change(key=k) for k in keys]


# ---------------------------------------------------------------- list destination


def test_list_created_once_and_found_again(fake, tmp_path):
    d = list_dest(fake, tmp_path)
    state = d.open({})
    assert fake.list_named("crmsync · Champions")["processingType"] == "MANUAL"
    assert fake.list_named("crmsync · Champions")["objectTypeId"] == "0-1"
    assert len(fake.calls("POST", r"^/crm/v3/lists/?$")) == 1
    # next run: found by stored id, no second list
    assert list_dest(fake, tmp_path).open(state) == state
    # stored id gone (list deleted in HubSpot): found by name
    assert list_dest(fake, tmp_path).open({"list_id": "999"}) == state
    assert len(fake.lists) == 1


def test_list_add_remove_exact_calls(fake, tmp_path):
    ids = [fake.add_contact({"email": f"c{i}@x.example"}) for i in range(2_500)]
    d = list_dest(fake, tmp_path, chunk=1000)
    d.open({})
    assert d.batch_size == 1000
    before = len(fake.requests)
    res = d.write(Op.ADD, adds(ids))
    assert set(res.done) == set(ids) and not res.rejected and not res.preexisting
    put = fake.calls("PUT", "add-and-remove")
    assert len(put) == math.ceil(2_500 / 1000) == len(fake.requests) - before
    assert fake.members("crmsync · Champions") == set(ids)
    assert all(r.json()["recordIdsToRemove"] == [] for r in put)
    res = d.write(Op.REMOVE, adds(ids[:10]))
    assert set(res.done) == set(ids[:10])
    assert fake.members("crmsync · Champions") == set(ids[10:])
    assert d.ctx.meter.calls == len(fake.requests) and d.ctx.meter.throttled == 0
    assert d.readback() == {"list_id": d.list_id, "size": 2_490}
    assert sorted(d.members(), key=int) == ids[10:]


def test_batch_size_from_config_wins_when_smaller(fake, tmp_path):
    d = list_dest(fake, tmp_path, chunk=1000, batch_size=300)
    assert d.batch_size == 300


def test_missing_records_are_rejected_and_preexisting_reported(fake, tmp_path):
    a, b, c = (fake.add_contact() for _ in range(3))
    d = list_dest(fake, tmp_path)
    d.open({})
    d.write(Op.ADD, adds([a]))
    fake.archive_contact(b)
    res = d.write(Op.ADD, adds([a, b, c, "777777", "not-an-id"]))
    assert set(res.done) == {a, c}
    assert res.preexisting == {a}
    assert set(res.rejected) == {b, "777777", "not-an-id"}
    assert "no longer exists" in res.rejected[b]
    # removing a contact that was deleted meanwhile is done, not retried forever
    fake.archive_contact(c)
    assert set(d.write(Op.REMOVE, adds([c])).done) == {c}


def test_update_sends_nothing_for_a_list(fake, tmp_path):
    d = list_dest(fake, tmp_path)
    d.open({})
    n = len(fake.requests)
    assert set(d.write(Op.UPDATE, adds(["1", "2"])).done) == {"1", "2"}
    assert len(fake.requests) == n


def test_dynamic_list_stops(fake, tmp_path):
    fake.lists["5"] = {"listId": "5", "name": "Dyn", "objectTypeId": "0-1",
                       "processingType": "DYNAMIC", "members": {}}
    with pytest.raises(DestinationStopped, match="DYNAMIC"):
        list_dest(fake, tmp_path, name="Dyn").open({})


# ---------------------------------------------------------------- property destination


def test_property_created_with_options_and_written(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(250)]
    d = prop_dest(fake, tmp_path)
    d.open({})
    p = fake.properties["crmsync_lifecycle"]
    assert (p["type"], p["fieldType"]) == ("enumeration", "select")
    res = d.write(Op.ADD, [Change(key=k, value="customers" if i % 2 else "leads")
                           for i, k in enumerate(ids)])
    assert set(res.done) == set(ids)
    assert {o["value"] for o in fake.properties["crmsync_lifecycle"]["options"]} == {
        "customers", "leads"}
    assert len(fake.calls("POST", "batch/update")) == math.ceil(250 / 100)
    assert fake.contacts[ids[1]]["props"]["crmsync_lifecycle"] == "customers"
    # UPDATE to a known option: no property change, one batch
    n = len(fake.calls("PATCH"))
    d.write(Op.UPDATE, [Change(key=ids[0], value="customers", previous="leads")])
    assert len(fake.calls("PATCH")) == n
    assert fake.contacts[ids[0]]["props"]["crmsync_lifecycle"] == "customers"
    # REMOVE clears the value
    d.write(Op.REMOVE, [Change(key=ids[0], previous="customers")])
    assert fake.contacts[ids[0]]["props"]["crmsync_lifecycle"] is None


def test_segment_destination_seeds_option_and_string_type(fake, tmp_path):
    cfg = DestinationConfig(name="seg", type="hubspot_property", segment="champions",
                            connection="hubspot", property="crmsync_champion")
    d = HubSpotPropertyDestination(cfg, HubSpotPropertyDestination.Options(**cfg.options),
                                   connection(fake), ctx(tmp_path))
    d.open({})
    assert [o["value"] for o in fake.properties["crmsync_champion"]["options"]] == ["champions"]
    s = prop_dest(fake, tmp_path, prop="crmsync_text", property_type="string")
    s.open({})
    assert fake.properties["crmsync_text"]["type"] == "string"


def test_property_rejects_missing_and_invalid_rows(fake, tmp_path):
    a, b = fake.add_contact(), fake.add_contact()
    fake.archive_contact(b)
    d = prop_dest(fake, tmp_path)
    d.open({})
    res = d.write(Op.ADD, [Change(key=a, value="leads"), Change(key=b, value="leads")])
    assert set(res.done) == {a} and set(res.rejected) == {b}
    # a value HubSpot refuses (option removed behind our back) is a per-row reject
    fake.properties["crmsync_lifecycle"]["options"] = []
    c = fake.add_contact()
    res = d.write(Op.UPDATE, [Change(key=a, value="leads"), Change(key=c, value="")])
    assert set(res.rejected) == {a} and set(res.done) == {c}
    assert "allowed options" in res.rejected[a]


def test_property_of_wrong_type_stops(fake, tmp_path):
    fake.define_property("crmsync_lifecycle", "number", "number")
    with pytest.raises(DestinationStopped, match="number"):
        prop_dest(fake, tmp_path).open({})


# ---------------------------------------------------------------- source


def source(fake, tmp_path, props, **opts):
    cfg = SourceConfig(connection="hubspot", properties=props, **opts)
    conn = connection(fake, search_rate=fake.search_rate)
    return HubSpotSource("crm", cfg, HubSpotSource.Options(**cfg.options), conn, ctx(tmp_path))


def test_schema_types_from_property_definitions(fake, tmp_path):
    fake.define_property("num_employees", "number", "number")
    fake.define_property("hs_email_optout", "bool", "booleancheckbox")
    fake.define_property("last_order_date", "date", "date")
    fake.define_property("lifecyclestage", "enumeration", "select", ["lead", "customer"])
    fake.define_property("interests", "enumeration", "checkbox", ["a", "b"])
    s = source(fake, tmp_path, ["email", "num_employees", "hs_email_optout", "last_order_date",
                                "lifecyclestage", "interests", "lastmodifieddate"])
    assert s.schema() == {
        "id": FieldType.string, "email": FieldType.string, "num_employees": FieldType.number,
        "hs_email_optout": FieldType.bool, "last_order_date": FieldType.date,
        "lifecyclestage": FieldType.enumeration, "interests": FieldType.multi,
        "lastmodifieddate": FieldType.datetime}


def test_full_then_incremental_with_deletes_and_merges(fake, tmp_path):
    fake.define_property("interests", "enumeration", "checkbox", ["a", "b"])
    ids = [fake.add_contact({"email": f"c{i}@x.example", "interests": "a;b"}) for i in range(250)]
    s = source(fake, tmp_path, ["email", "interests"])
    p = s.pull(SourceState())
    assert p.full and len(list(p.rows)) == 250 and p.rows[0]["interests"] == ["a", "b"]
    assert len(fake.calls("GET", "/objects/contacts$")) == math.ceil(250 / 100)
    state = SourceState(cursor=p.cursor, last_full_at=NOW, rows=250)
    fake.tick(60_000)
    fake.update_contact(ids[3], {"email": "new@x.example"})
    new = fake.add_contact({"email": "n@x.example"})
    fake.archive_contact(ids[4])
    fake.merge_contacts(ids[5], ids[6])
    q = source(fake, tmp_path, ["email", "interests"]).pull(state)
    assert not q.full
    keys = {r["id"] for r in q.rows}
    assert {ids[3], new, ids[5]} <= keys and ids[4] not in keys
    assert set(q.deleted) == {ids[4], ids[6]}
    assert q.cursor["since"] >= p.cursor["since"]


def test_incremental_past_10000_with_equal_timestamps(fake, tmp_path):
    fake.search_rate = 100  # keep the test fast; the search limit is tested below
    old = [fake.add_contact(at=fake.clock_ms - 7_200_000) for _ in range(10)]
    last = fake.add_contact(at=fake.clock_ms - 3_600_000)  # newest of the full pull
    p = source(fake, tmp_path, ["email"]).pull(SourceState())
    changed = [fake.add_contact({"email": f"e{i}"}) for i in range(10_450)]  # same timestamp
    state = SourceState(cursor=p.cursor, last_full_at=NOW, rows=11)
    n = len(fake.calls("POST", "search"))
    q = source(fake, tmp_path, ["email"]).pull(state)
    keys = [r["id"] for r in q.rows]
    # the look-back window re-reads the newest contact of last time, never the older ones
    assert set(keys) == {*changed, last} and not set(old) & set(keys)
    assert len(keys) == len(set(keys)) == 10_451
    # exactly ceil(changes / 200) search pages; no 400 from passing the 10,000 cap
    assert len(fake.calls("POST", "search")) - n == math.ceil(10_451 / 200)
    assert all(r.json()["limit"] == 200 for r in fake.calls("POST", "search"))
    assert fake.throttled == 0


def test_full_reconcile_every_full_every(fake, tmp_path):
    fake.add_contact()
    s = source(fake, tmp_path, ["email"], full_every="1d")
    p = s.pull(SourceState())
    state = SourceState(cursor=p.cursor, last_full_at=NOW - timedelta(days=2))
    assert s.pull(state).full
    assert not s.pull(SourceState(cursor=p.cursor, last_full_at=NOW)).full


def test_an_answer_without_results_stops_instead_of_emptying_the_crm(fake, tmp_path):
    from crmsync.sync.errors import CrmsyncError

    fake.add_contact({"email": "a@x.example"})
    s = source(fake, tmp_path, ["email"])
    fake.fail_next(status=200, body={}, path="/crm/v3/objects/contacts")
    with pytest.raises(CrmsyncError, match="without 'results'"):
        s.pull(SourceState())
