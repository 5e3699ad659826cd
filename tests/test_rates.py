"""Pushing at the platforms' allowed rates: maximum batches, no 429 from the client's own pacing,
a 429's Retry-After honoured. Counts only: no timing assertions."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from crmsync.connectors.base import Change, Context, Op, SourceState
from crmsync.connectors.ratelimit import RollingWindow
from crmsync.connectors.retry import RetryPolicy
from crmsync.sync.mapping.model import DestinationConfig
from tests.fakes.hubspot import MEMBERSHIP_CHANGE_MAX, FakeHubSpot

NOW = datetime(2026, 11, 24)


def _ctx(tmp_path: Path) -> Context:
    return Context(now=NOW, base_dir=tmp_path)


# ---------------------------------------------------------------- HubSpot

pytest.importorskip("hubspot")
from tests.test_hubspot import TOKEN, connection, list_dest, prop_dest  # noqa: E402


def test_hubspot_property_write_back_sends_full_batches_of_100(tmp_path):
    with FakeHubSpot(token=TOKEN, rate_limit=1000) as fake:
        ids = [fake.add_contact({"email": f"u{i}@x.example"}) for i in range(250)]
        d = prop_dest(fake, tmp_path)
        d.open({})
        r = d.write(Op.ADD, [Change(k, "customers", "customers") for k in ids])
        assert len(r.done) == 250
        sizes = [len(q.json()["inputs"]) for q in fake.calls("POST", r"/batch/update$")]
        assert sizes == [100, 100, 50]


def test_hubspot_list_chunk_bound_is_the_fakes_refusal_bound(tmp_path):
    from crmsync.connectors.hubspot import HubSpotListDestination
    assert HubSpotListDestination.max_batch == MEMBERSHIP_CHANGE_MAX
    with FakeHubSpot(token=TOKEN, rate_limit=1000) as fake:
        d = list_dest(fake, tmp_path)
        d.open({})
        api = d.client.sdk.crm.lists.memberships_api
        too_many = [str(i) for i in range(MEMBERSHIP_CHANGE_MAX + 1)]
        with pytest.raises(Exception) as err:  # the SDK's ApiException: 400
            api.add_and_remove(d.list_id, membership_change_request={
                "recordIdsToAdd": too_many, "recordIdsToRemove": []})
        assert getattr(err.value, "status", None) == 400


def test_hubspot_paced_pull_draws_no_429(tmp_path):
    # 30 pages against 10 requests per 0.5 s: limit-bound, and the limiter keeps it clean
    with FakeHubSpot(token=TOKEN, rate_limit=10, window=0.5) as fake:
        for i in range(3000):
            fake.add_contact({"email": f"u{i}@x.example"})
        from crmsync.connectors.hubspot import HubSpotSource
        from crmsync.sync.mapping.model import SourceConfig
        cfg = SourceConfig(connection="hubspot", properties=["email"])
        src = HubSpotSource("crm", cfg, HubSpotSource.Options(),
                            connection(fake, rate_limit=10, rate_window=0.5), _ctx(tmp_path))
        rows = src.pull(SourceState()).rows
        assert len(rows) == 3000
        assert fake.throttled == 0 and src.ctx.meter.throttled == 0
        assert len(fake.calls("GET", r"/crm/v3/objects/contacts$")) == 30  # ceil(3000 / 100)


def test_hubspot_429_retry_after_is_honoured(tmp_path):
    with FakeHubSpot(token=TOKEN, rate_limit=2, window=0.5) as fake:
        ids = [fake.add_contact({"email": f"u{i}@x.example"}) for i in range(300)]
        d = prop_dest(fake, tmp_path)  # the client believes in 1000 a window: the fake 429s
        slept: list[float] = []
        d.ctx.sleep = lambda s: (slept.append(s), time.sleep(s))
        d.open({})
        r = d.write(Op.ADD, [Change(k, "customers", "customers") for k in ids])
        assert len(r.done) == 300
        assert fake.throttled >= 1 and d.ctx.meter.throttled == fake.throttled
        answered = [q for q in fake.calls(path=r"/batch/update$") if q.status == 429]
        assert slept and slept[0] == 1.0  # the fake's Retry-After, not a backoff guess
        assert len(answered) == fake.throttled


# ---------------------------------------------------------------- Google


def test_google_sends_10000_members_a_request_and_paces_without_429(tmp_path):
    pytest.importorskip("google.ads.datamanager_v1")
    from crmsync.connectors import google as g
    from tests.fakes.google import DataManagerFake

    with DataManagerFake(per_minute=2, window=0.5) as fake:
        fake.add_account("1234567890", terms_accepted=True)
        conn = g.GoogleAdsConnection(type="google_ads", operating_account="1234567890",
                                     base_url=fake.url)
        cfg = DestinationConfig(name="cm", type="google_ads_customer_match", segment="s",
                                connection="google", identifiers=["email"], audience="a",
                                terms_of_service="accepted")
        d = g.CustomerMatchDestination(cfg, g.CustomerMatchOptions(**cfg.options), conn,
                                       _ctx(tmp_path))
        d.limiter = RollingWindow(2, 0.5 * 1.01 + 0.05)  # the fake's quota, scaled alike
        d.open({})
        changes = [Change(f"k{i}", value=d.encode({"email": f"p{i}@x.example"}))
                   for i in range(25_000)]
        r = d.write(Op.ADD, changes)
        assert len(r.done) == 25_000
        sizes = [len(q.json()["audienceMembers"]) for q in fake.calls("POST", r":ingest$")]
        assert sizes == [10_000, 10_000, 5_000]
        assert d.ctx.meter.throttled == 0


# ---------------------------------------------------------------- Meta


def test_meta_sends_10000_rows_a_request_and_honours_regain_time(tmp_path):
    pytest.importorskip("facebook_business")
    from crmsync.connectors import meta as m
    from tests.fakes.meta import FakeGraph

    with FakeGraph(account="act_1234") as fake:
        conn = m.MetaConnection(type="meta", access_token="EAA-t", ad_account_id="act_1234",
                                base_url=fake.url)
        cfg = DestinationConfig(name="ca", type="meta_custom_audience", segment="s",
                                connection="meta", identifiers=["email"], audience="a")
        d = m.CustomAudienceDestination(cfg, m.CustomAudienceOptions(**cfg.options), conn,
                                        _ctx(tmp_path))
        slept: list[float] = []
        d.ctx.sleep = slept.append
        d.policy = RetryPolicy(attempts=3, initial_wait=0, max_wait=0)
        d.open({})
        fake.throttle(code=80003, subcode=None, n=1, regain_minutes=1, path=r"/users$")
        changes = [Change(f"k{i}", value=d.encode({"email": f"p{i}@x.example"}))
                   for i in range(25_000)]
        assert len(d.write(Op.ADD, changes).done) == 25_000
        ok = [q for q in fake.calls("POST", r"/users$") if q.status == 200]
        assert [len(json.loads(q.form()["payload"])["data"]) for q in ok] == [10_000, 10_000,
                                                                              5_000]
        assert slept == [60.0]  # estimated_time_to_regain_access: 1 minute
        assert d.ctx.meter.throttled == 1


# ---------------------------------------------------------------- Salesforce


def test_salesforce_campaign_sends_collections_of_200(tmp_path):
    pytest.importorskip("simple_salesforce")
    from crmsync.connectors import salesforce as sf
    from tests.fakes.salesforce import FakeSalesforce, tls_pair

    tls, ca = tls_pair(tmp_path)
    with FakeSalesforce(tls=tls) as fake:
        ids = [fake.insert("Contact", LastName=f"L{i}") for i in range(450)]
        conn = sf.SalesforceConnection(type="salesforce", base_url=fake.url,
                                       username="sync@acme.example", password="pw",
                                       security_token="tok", ca_file=str(ca))
        cfg = DestinationConfig(name="camp", type="salesforce_campaign", segment="s")
        d = sf.CampaignDestination(cfg, sf.CampaignDestination.Options(campaign="c"), conn,
                                   _ctx(tmp_path))
        d.open({})
        done = 0
        for start in range(0, len(ids), d.batch_size):
            done += len(d.write(Op.ADD, [Change(k) for k in ids[start:start + d.batch_size]]).done)
        assert done == 450 and len(fake.members("c")) == 450
        sizes = [len(q.json()["records"]) for q in fake.calls("POST", r"/composite/sobjects$")]
        assert sizes == [200, 200, 50]
