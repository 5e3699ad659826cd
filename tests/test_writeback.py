"""Write-back of a group into a HubSpot property or a Salesforce field, on a fresh account.

HubSpot: an enumeration property is created with one option per segment of the group (label
and value), grown by PATCH when the group grows (every option sent: HubSpot cannot append one,
https://developers.hubspot.com/docs/methods/contacts/v2/update_contact_property), and
cleared when a contact leaves; the fake refuses an enumeration without options (400
VALIDATION_ERROR). Salesforce: crmsync creates no field; a missing field or a restricted
picklist without the value says what to create.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from crmsync.connectors.base import Change, Context, Op
from crmsync.sync.errors import DestinationStopped
from crmsync.sync.mapping.model import DestinationConfig

from conftest import write_mapping

pytest.importorskip("hubspot")

from crmsync.connectors.hubspot import HubSpotConnection, HubSpotPropertyDestination  # noqa: E402

from fakes.hubspot import FakeHubSpot  # noqa: E402

TOKEN = "pat-na1-writeback"
NOW = datetime(2026, 11, 24, 12, 0)


@pytest.fixture
def fake():
    with FakeHubSpot(token=TOKEN, rate_limit=1000, search_rate=100) as f:
        yield f


def prop(fake, tmp_path, labels, **opts) -> HubSpotPropertyDestination:
    cfg = DestinationConfig(name="tag", type="hubspot_property", group="lifecycle",
                            connection="hubspot", property="crmsync_lifecycle", **opts)
    conn = HubSpotConnection(type="hubspot", token=TOKEN, base_url=fake.url, rate_limit=1000,
                             backoff=0.01)
    ctx = Context(now=NOW, base_dir=tmp_path, env_var={"token": "HUBSPOT_TOKEN"},
                  labels=tuple(labels))
    return HubSpotPropertyDestination(cfg, HubSpotPropertyDestination.Options(**cfg.options),
                                      conn, ctx)


def options(fake) -> list[tuple[str, str]]:
    return [(o["label"], o["value"]) for o in fake.properties["crmsync_lifecycle"]["options"]]


def test_the_fake_refuses_an_enumeration_without_options(fake):
    from hubspot import HubSpot
    from hubspot.crm.properties import ApiException

    sdk = HubSpot(access_token=TOKEN, host=fake.url)
    with pytest.raises(ApiException) as exc:
        sdk.crm.properties.core_api.create("contacts", property_create={
            "name": "x", "label": "x", "groupName": "contactinformation",
            "type": "enumeration", "fieldType": "select", "options": []})
    assert exc.value.status == 400 and "VALIDATION_ERROR" in exc.value.body


def test_created_with_every_segment_of_the_group_as_an_option(fake, tmp_path):
    d = prop(fake, tmp_path, ["customers", "sql", "mql", "leads"])
    d.open({})
    assert options(fake) == [("customers", "customers"), ("sql", "sql"), ("mql", "mql"),
                             ("leads", "leads")]
    assert len(fake.calls("POST", "/crm/v3/properties/contacts$")) == 1
    assert not fake.calls("PATCH")  # made whole at once


def test_options_grow_when_the_group_grows(fake, tmp_path):
    prop(fake, tmp_path, ["customers", "leads"]).open({})
    again = prop(fake, tmp_path, ["customers", "leads"])
    again.open({})
    assert not fake.calls("PATCH")  # nothing new: no call
    grown = prop(fake, tmp_path, ["customers", "partners", "leads"])
    grown.open({})
    assert len(fake.calls("PATCH")) == 1
    assert [v for _, v in options(fake)] == ["customers", "leads", "partners"]
    c = fake.add_contact()
    assert set(grown.write(Op.ADD, [Change(c, value="partners")]).done) == {c}
    assert fake.contacts[c]["props"]["crmsync_lifecycle"] == "partners"


def test_a_group_property_without_labels_stops_clearly(fake, tmp_path):
    with pytest.raises(DestinationStopped, match="needs its options"):
        prop(fake, tmp_path, []).open({})


def test_run_writes_moves_and_clears_the_group(cli, tmp_path, fake):
    ids = [fake.add_contact({"email": f"u{i}@x.example", "lifecyclestage": s})
           for i, s in enumerate(["customer", "lead", "other"])]
    fake.define_property("lifecyclestage", "enumeration", "select", ["lead", "customer", "other"])
    mapping = {
        "version": 1,
        "connections": {"hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}",
                                    "base_url": fake.url, "rate_limit": 1000,
                                    "search_rate": 100, "backoff": 0.01}},
        "sources": {"crm": {"connection": "hubspot", "properties": ["email", "lifecyclestage"],
                            "identity": {"email": "email"}}},
        "segments": {
            "customers": {"where": {"field": "lifecyclestage", "eq": "customer"}},
            "leads": {"where": {"field": "lifecyclestage", "eq": "lead"}}},
        "groups": {"lifecycle": {"exclusive": True, "segments": ["customers", "leads"]}},
        "destinations": [{"name": "lifecycle-tag", "group": "lifecycle",
                          "type": "hubspot_property", "connection": "hubspot",
                          "property": "crmsync_lifecycle"}]}
    m = write_mapping(tmp_path / "m.yaml", mapping)
    env = {"HUBSPOT_TOKEN": TOKEN}
    res = cli("run", "-c", m, env=env)
    assert res.exit_code == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert options(fake) == [("customers", "customers"), ("leads", "leads")]
    assert [fake.contacts[i]["props"].get("crmsync_lifecycle") for i in ids] == [
        "customers", "leads", None]
    # a lead becomes a customer, the customer leaves both segments
    fake.tick(60_000)
    fake.update_contact(ids[1], {"lifecyclestage": "customer"})
    fake.update_contact(ids[0], {"lifecyclestage": "other"})
    assert cli("run", "-c", m, env=env).exit_code == 0
    assert [fake.contacts[i]["props"].get("crmsync_lifecycle") for i in ids] == [
        None, "customers", None]
    # the group grows: the option exists before the first contact is written with it
    mapping["segments"]["others"] = {"where": {"field": "lifecyclestage", "eq": "other"}}
    mapping["groups"]["lifecycle"]["segments"].append("others")
    write_mapping(m, mapping)
    assert cli("run", "-c", m, env=env).exit_code == 0
    assert [v for _, v in options(fake)] == ["customers", "leads", "others"]
    assert fake.contacts[ids[2]]["props"]["crmsync_lifecycle"] == "others"


# ---------------------------------------------------------------- Salesforce field

sf = pytest.importorskip("simple_salesforce")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    from fakes.salesforce import tls_pair
    return tls_pair(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    from crmsync.connectors import salesforce as sfmod
    from crmsync.connectors.retry import RetryPolicy
    monkeypatch.setattr(sfmod, "RETRY", RetryPolicy(attempts=2, initial_wait=0.0, max_wait=0.0))


def sf_field(tls, tmp_path, field="Segment__c"):
    from crmsync.connectors import salesforce as sfmod

    from fakes.salesforce import FakeSalesforce

    f = FakeSalesforce(tls=tls[0]).start()
    cfg = DestinationConfig(name="tag", type="salesforce_field", group="lifecycle")
    conn = sfmod.SalesforceConnection(type="salesforce", base_url=f.url, username="sync@acme.example",
                                      password="pw", security_token="tok", ca_file=str(tls[1]),
                                      timeout=2)
    d = sfmod.FieldDestination(cfg, sfmod.FieldDestination.Options(field=field), conn,
                               Context(now=NOW, base_dir=tmp_path, labels=("customers", "leads")))
    return f, d


def test_salesforce_missing_field_says_how_to_create_it(tls, tmp_path):
    f, d = sf_field(tls, tmp_path, field="Lifecycle__c")
    try:
        c = f.insert("Contact", LastName="L")
        with pytest.raises(DestinationStopped) as exc:
            d.write(Op.ADD, [Change(c, value="customers")])
        msg = str(exc.value)
        assert "Contact.Lifecycle__c" in msg and "crmsync creates no field" in msg
        assert "Picklist with the values customers, leads" in msg
    finally:
        d.close()
        f.stop()


def test_salesforce_restricted_picklist_names_the_value_to_add(tls, tmp_path):
    f, d = sf_field(tls, tmp_path)
    try:
        f.restricted[("Contact", "Segment__c")] = {"customers"}
        a, b = f.insert("Contact", LastName="A"), f.insert("Contact", LastName="B")
        res = d.write(Op.ADD, [Change(a, value="customers"), Change(b, value="leads")])
        assert set(res.done) == {a}
        assert "restricted picklist without the value 'leads'" in res.rejected[b]
        assert set(d.write(Op.REMOVE, [Change(a, previous="customers")]).done) == {a}
        assert f.records["Contact"][a]["Segment__c"] is None  # cleared on leaving
    finally:
        d.close()
        f.stop()
