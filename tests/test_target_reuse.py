"""Killed right after creating the target: the next run finds that target by name (its id
was never saved), creates no second one, and never removes the members someone else put in.

The kill is modelled exactly as it leaves the platform: the target exists with crmsync's
name, the store has no id for it, and another member was added by hand meanwhile. Where the
platform refuses a second list of one name, the fake does too (HubSpot lists: 400; Google
user lists: 409 ALREADY_EXISTS); Salesforce campaigns and Meta audiences may share a name, so
the test counts them.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from crmsync.connectors.testing.destination import _setup

pytest.importorskip("hubspot")
pytest.importorskip("simple_salesforce")
pytest.importorskip("facebook_business")
pytest.importorskip("google.ads.datamanager_v1")

from test_google_conformance import ACCOUNT, LIST, GoogleHarness  # noqa: E402
from test_hubspot_conformance import NAME as HS_NAME  # noqa: E402
from test_hubspot_conformance import HubSpotListHarness  # noqa: E402
from test_meta_conformance import NAME as META_NAME  # noqa: E402
from test_meta_conformance import MetaHarness  # noqa: E402
from test_salesforce_e2e import CAMPAIGN  # noqa: E402
from test_salesforce_e2e import Harness as SalesforceHarness  # noqa: E402

from crmsync.connectors import salesforce as sfmod  # noqa: E402
from crmsync.connectors.retry import RetryPolicy  # noqa: E402

from fakes.google import DataManagerFake, UserList  # noqa: E402
from fakes.hubspot import FakeHubSpot  # noqa: E402
from fakes.meta import FakeGraph  # noqa: E402
from fakes.salesforce import FakeSalesforce, tls_pair  # noqa: E402

OTHER = "someone-else@x.example"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(sfmod, "RETRY", RetryPolicy(attempts=2, initial_wait=0.0, max_wait=0.0))


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return tls_pair(tmp_path_factory.mktemp("tls"))


def converge(cli, tmp_path, h, keys, count, other_there):
    """First run over the half-made target, then a churn run removing all of crmsync's."""
    members = set(keys[:4])
    m = _setup(h, tmp_path, members, keys)
    run = cli.json("run", "-c", m, env=h.env())
    assert run["exit_code"] == 0, run
    assert count() == 1, "a second target of the same name was created"
    assert members <= h.remote() and other_there()
    m = _setup(h, tmp_path, set(), keys)
    assert cli.json("run", "-c", m, env=h.env())["exit_code"] == 0
    assert count() == 1 and other_there() and not (members & h.remote())


def test_hubspot_list_made_by_a_killed_run_is_reused(cli, tmp_path):
    with FakeHubSpot(token="pat-conformance", rate_limit=1000) as fake:
        h = HubSpotListHarness(fake)
        keys = h.keys(6)
        other = fake.add_contact({"email": OTHER})
        lid = str(fake._next_list)
        fake._next_list += 1
        fake.lists[lid] = {"listId": lid, "name": HS_NAME, "objectTypeId": "0-1",
                           "processingType": "MANUAL", "members": {other: "2026-01-01"}}
        converge(cli, tmp_path, h, keys,
                 lambda: sum(x["name"].lower() == HS_NAME.lower() for x in fake.lists.values()),
                 lambda: other in fake.lists[lid]["members"])


def test_salesforce_campaign_made_by_a_killed_run_is_reused(cli, tmp_path, tls):
    with FakeSalesforce(tls=tls[0]) as fake:
        fake.ca = tls[1]
        h = SalesforceHarness(fake, "campaign")
        keys = h.keys(6)
        other = fake.insert("Contact", LastName="Other")
        camp = fake.insert("Campaign", Name=CAMPAIGN, IsActive=True)
        fake.insert("CampaignMember", CampaignId=camp, ContactId=other)
        converge(cli, tmp_path, h, keys,
                 lambda: sum(c["Name"] == CAMPAIGN for c in fake.live("Campaign")),
                 lambda: other in fake.members(CAMPAIGN))


def test_meta_audience_made_by_a_killed_run_is_reused(cli, tmp_path):
    with FakeGraph(account="act_1234") as fake:
        h = MetaHarness(fake)
        keys = h.keys(6)
        h._by_hash[sha(OTHER)] = "other"
        aud = fake.add_audience(META_NAME, rows=[{"EMAIL": sha(OTHER)}])
        converge(cli, tmp_path, h, keys,
                 lambda: sum(a.name == META_NAME for a in fake.audiences.values()),
                 lambda: "other" in h.remote() and fake.by_name(META_NAME) is aud)


def test_google_list_made_by_a_killed_run_is_reused(cli, tmp_path):
    with DataManagerFake() as fake:
        fake.add_account(ACCOUNT)
        h = GoogleHarness(fake)
        keys = h.keys(6)
        h._by_hash[sha(OTHER)] = "other"
        ul = UserList(ACCOUNT, 9_000_000_777, LIST)
        ul.members.add(json.dumps([{"emailAddress": sha(OTHER)}], sort_keys=True,
                                  separators=(",", ":")))
        fake.lists[ul.id] = ul
        converge(cli, tmp_path, h, keys,
                 lambda: sum(u.display_name == LIST for u in fake.lists.values()),
                 lambda: "other" in h.remote() and fake.list_named(LIST) is ul)


def test_the_fakes_refuse_a_second_list_of_one_name(tmp_path):
    """Where the platform refuses duplicate names, so do the fakes (the tests above rely on
    finding by name, not on a refusal)."""
    from hubspot import HubSpot
    from hubspot.crm.lists import ApiException

    with FakeHubSpot(token="t") as fake:
        sdk = HubSpot(access_token="t", host=fake.url)
        body = {"name": "X", "objectTypeId": "0-1", "processingType": "MANUAL"}
        sdk.crm.lists.lists_api.create(list_create_request=body)
        with pytest.raises(ApiException) as exc:
            sdk.crm.lists.lists_api.create(list_create_request=body)
        assert exc.value.status == 400
    from google.ads import datamanager_v1 as dm
    from google.api_core.client_options import ClientOptions
    from google.api_core.exceptions import Conflict
    from google.auth.credentials import AnonymousCredentials

    with DataManagerFake() as fake:
        fake.add_account(ACCOUNT)
        client = dm.UserListServiceClient(credentials=AnonymousCredentials(), transport="rest",
                                          client_options=ClientOptions(api_endpoint=fake.url))
        parent = f"accountTypes/GOOGLE_ADS/accounts/{ACCOUNT}"
        client.create_user_list(parent=parent, user_list=dm.UserList(display_name="X"))
        with pytest.raises(Conflict):
            client.create_user_list(parent=parent, user_list=dm.UserList(display_name="X"))
