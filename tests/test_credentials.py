"""Expired or revoked static tokens stop the destination at once (exit 1, the ${VAR} to
rotate, nothing sent), and one run converges after the token is fixed; refreshable
credentials (Salesforce sessions) re-authenticate once and go on.

HubSpot private apps answer 401 (https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details);
Meta answers OAuthException code 190 (https://developers.facebook.com/docs/graph-api/guides/error-handling).
"""

from __future__ import annotations

import pytest

from crmsync.connectors.testing.destination import _setup

pytest.importorskip("hubspot")
pytest.importorskip("facebook_business")

from test_hubspot_conformance import HubSpotListHarness  # noqa: E402
from test_meta_conformance import MetaHarness  # noqa: E402

from fakes.hubspot import FakeHubSpot  # noqa: E402
from fakes.meta import FakeGraph  # noqa: E402


def _history(cli, m, env) -> list[dict]:
    return cli.json("history", "-c", m, env=env)


def test_hubspot_401_stops_at_once_names_the_variable_and_one_run_converges(cli, tmp_path):
    with FakeHubSpot(token="pat-conformance", rate_limit=1000) as fake:
        h = HubSpotListHarness(fake)
        keys = h.keys(25)
        m = _setup(h, tmp_path, set(keys), keys, batch_size=10)
        assert cli("run", "-c", m, env=h.env()).exit_code == 0
        # the token is revoked; the next run has 20 changes in 3 batches
        more = h.keys(15)
        m = _setup(h, tmp_path, set(keys[5:]) | set(more), keys + more, batch_size=10)
        fake.expire_token()
        before = len(fake.requests)
        res = cli("run", "-c", m, env=h.env())
        assert res.exit_code == 1
        assert "${HUBSPOT_TOKEN}" in res.stderr and "pat-conformance" not in res.output
        assert len(fake.requests) - before == 1  # stopped at the first refusal: no retry
        runs = _history(cli, m, h.env())
        failed = runs[0]["destinations"][0]
        assert failed["status"] == "failed" and failed["adds"] == failed["removes"] == 0
        assert h.remote() == set(keys)  # nothing of the batch was applied
        fake.tokens.add("pat-conformance")
        fake.expired.clear()
        fixed = cli.json("run", "-c", m, env=h.env())
        assert fixed["exit_code"] == 0
        assert h.remote() == set(keys[5:]) | set(more)
        again = cli.json("run", "-c", m, env=h.env())["destinations"]["d"]
        assert (again["adds"], again["removes"]) == (0, 0)


def test_meta_190_stops_at_once_names_the_variable_and_one_run_converges(cli, tmp_path):
    with FakeGraph(account="act_1234") as fake:
        fake.tokens = {"EAAconformance"}
        h = MetaHarness(fake)
        keys = h.keys(30)
        m = _setup(h, tmp_path, set(keys[:20]), keys)
        assert cli("run", "-c", m, env=h.env()).exit_code == 0
        m = _setup(h, tmp_path, set(keys[10:]), keys)
        revoked = {"META_ACCESS_TOKEN": "EAArevoked-secret-value"}
        before = len(fake.requests)
        res = cli("run", "-c", m, env=revoked)
        assert res.exit_code == 1
        assert "${META_ACCESS_TOKEN}" in res.stderr and "190" in res.stderr
        assert "EAArevoked-secret-value" not in res.output
        assert len(fake.requests) - before == 1
        assert h.remote() == set(keys[:20])
        fixed = cli.json("run", "-c", m, env=h.env())
        assert fixed["exit_code"] == 0 and h.remote() == set(keys[10:])
        again = cli.json("run", "-c", m, env=h.env())["destinations"]["d"]
        assert (again["adds"], again["removes"]) == (0, 0)
