"""HubSpot rate limits, errors and faults: the outcome table end to end against the fake."""

from __future__ import annotations

import math
import uuid

import pytest

from crmsync.connectors.base import Change, Op, SourceState
from crmsync.connectors.hubspot import OUTCOMES, classify
from crmsync.connectors.retry import Action
from crmsync.sync.errors import DestinationStopped
from crmsync.sync.pipeline.push import write_batches
from tests.fakes.hubspot import FakeHubSpot
from tests.test_hubspot import TOKEN, connection, list_dest, prop_dest, source

pytest.importorskip("hubspot")


def burst_body(policy: str = "TEN_SECONDLY_ROLLING") -> dict:
    return {"status": "error", "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()), "policyName": policy}


@pytest.fixture
def fake():
    with FakeHubSpot(token=TOKEN, rate_limit=1000) as f:
        yield f


def opened(fake, tmp_path, **kw):
    d = list_dest(fake, tmp_path, **kw)
    d.open({})
    return d


def test_outcome_table_covers_every_case():
    assert OUTCOMES["429:DAILY"] is Action.STOP and OUTCOMES[429] is Action.RETRY
    assert OUTCOMES[401] is Action.STOP and OUTCOMES[400] is Action.REJECT
    assert OUTCOMES["5xx"] is Action.RETRY and OUTCOMES["network"] is Action.RETRY
    import urllib3
    assert classify(urllib3.exceptions.ProtocolError("reset")).action is Action.RETRY
    assert classify(ValueError("bug")).action is Action.FAIL


def test_5xx_retried_then_converges(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(3)]
    d = opened(fake, tmp_path)
    fake.fail_next(2, status=503, body={"status": "error", "message": "unavailable"},
                   path="add-and-remove")
    res = d.write(Op.ADD, [Change(k) for k in ids])
    assert set(res.done) == set(ids) and fake.members("crmsync · Champions") == set(ids)
    assert d.ctx.meter.retries == 2
    assert len(fake.calls("PUT", "add-and-remove")) == 3


def test_429_burst_honours_retry_after_and_is_metered(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(3)]
    d = opened(fake, tmp_path)
    fake.fail_next(3, status=429, body=burst_body(), headers={"Retry-After": "0"},
                   path="add-and-remove")
    res = d.write(Op.ADD, [Change(k) for k in ids])
    assert set(res.done) == set(ids)
    assert d.ctx.meter.throttled == 3 and d.ctx.meter.retries == 3
    # urllib3's own retries are off: every request the fake saw went through our loop
    assert d.ctx.meter.calls == len(fake.requests)


def test_429_without_retry_after_waits_the_interval_header(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(2)]
    d = opened(fake, tmp_path)
    slept: list[float] = []
    d.ctx.sleep = slept.append
    fake.fail_next(1, status=429, body=burst_body(),
                   headers={"X-HubSpot-RateLimit-Interval-Milliseconds": "1500"},
                   path="add-and-remove")
    d.write(Op.ADD, [Change(k) for k in ids])
    assert slept == [1.5]


def test_daily_limit_stops_the_destination(tmp_path):
    with FakeHubSpot(token=TOKEN, rate_limit=1000, daily_limit=3) as fake:
        ids = [fake.add_contact() for _ in range(5)]
        d = opened(fake, tmp_path, chunk=1)  # open: get_by_name + create = 2 calls
        with pytest.raises(DestinationStopped, match="daily"):
            d.write(Op.ADD, [Change(k) for k in ids])
        assert fake.members("crmsync · Champions") == {ids[0]}
        assert len(fake.calls("PUT")) == 2  # one accepted, one DAILY 429, never retried


def test_expired_token_names_the_env_var_not_the_token(fake, tmp_path):
    d = opened(fake, tmp_path)
    fake.expire_token()
    with pytest.raises(DestinationStopped) as err:
        d.write(Op.ADD, [Change(fake.add_contact())])
    assert "${HUBSPOT_TOKEN}" in str(err.value) and TOKEN not in str(err.value)
    assert "401" in str(err.value)
    assert len(fake.calls("PUT")) == 1  # not retried


def test_dropped_connection_and_timeout_are_retried(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(2)]
    d = list_dest(fake, tmp_path, conn=connection(fake, timeout=0.3))
    d.open({})
    fake.fail_next(1, drop=True, path="add-and-remove")
    fake.fail_next(1, delay=0.6, status=200, body={}, path="add-and-remove")
    res = d.write(Op.ADD, [Change(k) for k in ids])
    assert set(res.done) == set(ids) and d.ctx.meter.retries == 2
    assert d.ctx.meter.calls == len(fake.requests)  # no silent urllib3 retry of the PUT


def test_a_refused_call_stops_the_destination_and_rejects_no_row(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(2)]
    d = opened(fake, tmp_path)
    fake.fail_next(1, status=400, body={"status": "error", "message": "bad request",
                                        "category": "VALIDATION_ERROR"}, path="add-and-remove")
    with pytest.raises(DestinationStopped, match="VALIDATION_ERROR"):
        d.write(Op.ADD, [Change(k) for k in ids])
    assert d.ctx.meter.retries == 0 and fake.members(d.options.list) == set()
    res = d.write(Op.ADD, [Change(k) for k in ids])  # the next try sends them
    assert set(res.done) == set(ids) and not res.rejected


def test_client_limiter_keeps_a_normal_run_free_of_429(tmp_path):
    with FakeHubSpot(token=TOKEN, rate_limit=5, window=1.0) as fake:
        ids = [fake.add_contact() for _ in range(12)]
        d = list_dest(fake, tmp_path, chunk=1,
                      conn=connection(fake, rate_limit=5, rate_window=1.0))
        d.open({})
        res = d.write(Op.ADD, [Change(k) for k in ids])
        assert set(res.done) == set(ids)
        assert fake.throttled == 0 and d.ctx.meter.throttled == 0


def test_misconfigured_limit_draws_429s_and_still_converges(tmp_path):
    with FakeHubSpot(token=TOKEN, rate_limit=4, window=0.5) as fake:
        ids = [fake.add_contact() for _ in range(10)]
        d = list_dest(fake, tmp_path, chunk=1,
                      conn=connection(fake, rate_limit=1000, max_attempts=10))
        d.open({})
        res = d.write(Op.ADD, [Change(k) for k in ids])
        assert set(res.done) == set(ids) and fake.members("crmsync · Champions") == set(ids)
        assert fake.throttled > 0 and d.ctx.meter.throttled == fake.throttled


def test_ten_percent_5xx_converges_with_exact_successful_calls(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(3_000)]  # 120 calls of 25
    d = opened(fake, tmp_path, chunk=25)
    waits: list[float] = []
    d.ctx.sleep = waits.append  # retry.py adds up to 1 s of jitter per wait: skip it
    fake.fail_rate(0.1, status=500, body={"status": "error", "message": "internal"})
    res = d.write(Op.ADD, [Change(k) for k in ids])
    fake.fail_rate(0.0)
    assert set(res.done) == set(ids) and fake.members("crmsync · Champions") == set(ids)
    puts = fake.calls("PUT", "add-and-remove")
    assert len(puts) == math.ceil(3_000 / 25) + d.ctx.meter.retries
    assert d.ctx.meter.retries == len(waits) > 0


def test_property_writes_survive_faults(fake, tmp_path):
    ids = [fake.add_contact() for _ in range(300)]
    d = prop_dest(fake, tmp_path)
    d.open({})
    fake.fail_next(1, status=502, path="batch/update")
    fake.fail_next(1, status=429, body=burst_body(), headers={"Retry-After": "0"},
                   path="batch/update")
    res = d.write(Op.ADD, [Change(k, value="leads") for k in ids])
    assert set(res.done) == set(ids)
    assert all(fake.contacts[k]["props"]["crmsync_lifecycle"] == "leads" for k in ids)


def test_search_rate_limit_respected_by_source(tmp_path):
    with FakeHubSpot(token=TOKEN, rate_limit=1000, search_rate=5) as fake:
        for _ in range(5):
            fake.add_contact()
        s = source(fake, tmp_path, ["email"], search_page_size=1)
        p = s.pull(SourceState())
        fake.tick(3_600_000)
        for _ in range(8):
            fake.add_contact()
        from datetime import datetime
        q = s.pull(SourceState(cursor=p.cursor, last_full_at=datetime(2026, 11, 24, 12)))
        assert len(list(q.rows)) == 8 + 5  # the look-back re-reads the newest of last time
        assert fake.throttled == 0


def test_source_stops_on_expired_token(fake, tmp_path):
    fake.add_contact()
    fake.expire_token()
    with pytest.raises(DestinationStopped, match="HUBSPOT_TOKEN"):
        source(fake, tmp_path, ["email"]).pull(SourceState())


def _at_once(d, changes: list[Change], n: int = 4) -> dict[str, str | None]:
    """``changes`` added through the push's scheduler, ``n`` batches in flight."""
    d.config = d.config.model_copy(update={"concurrency": n})
    done: dict[str, str | None] = {}

    def settle(_, answer) -> None:
        assert not answer.stopped, answer.result
        done.update(answer.result.done)

    size = d.batch_size
    write_batches(d, Op.ADD, ((None, changes[i:i + size])
                              for i in range(0, len(changes), size)), settle)
    return done


def test_batches_in_flight_share_the_limiter(tmp_path):
    """Four batches at once under the account's one rolling window: no 429."""
    with FakeHubSpot(token=TOKEN, rate_limit=5, window=1.0) as fake:
        fake.latency = 0.05  # answers take a while: requests overlap
        ids = [fake.add_contact() for _ in range(14)]
        d = list_dest(fake, tmp_path, chunk=1,
                      conn=connection(fake, rate_limit=5, rate_window=1.0))
        d.open({})
        assert set(_at_once(d, [Change(k) for k in ids])) == set(ids)
        assert fake.max_in_flight >= 2 and fake.throttled == 0 and d.ctx.meter.throttled == 0


def test_batches_in_flight_retry_429s_and_count_each_call_once(tmp_path):
    """A limit set too high draws 429s on several threads at once: each is retried after
    its Retry-After, every member lands, and the meter counts each call and throttle
    exactly once (the threads share it)."""
    with FakeHubSpot(token=TOKEN, rate_limit=4, window=0.5) as fake:
        fake.latency = 0.02
        ids = [fake.add_contact() for _ in range(24)]
        d = list_dest(fake, tmp_path, chunk=1,
                      conn=connection(fake, rate_limit=1000, max_attempts=20))
        d.open({})
        assert set(_at_once(d, [Change(k) for k in ids])) == set(ids)
        assert fake.members("crmsync · Champions") == set(ids)
        assert fake.throttled > 0 and d.ctx.meter.throttled == fake.throttled
        assert d.ctx.meter.calls == len(fake.requests)
