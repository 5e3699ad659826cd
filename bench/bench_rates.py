"""Benchmark: push and pull at each platform's allowed rate, against the rate-limited fakes.

Every platform is driven through its real SDK against its fake on loopback (tests/fakes/).
Seeded data is generated at run time. For each phase it prints the requests sent, the 429s
(or throttling answers), the batch sizes, the minimum request/page count next to the actual
one, the seconds taken, and achieved ÷ allowed request rate, with what bounds the phase:

* ``limit``: the run needs more requests than one window allows, so the rate limit bounds its
  time; achieved ÷ allowed is the figure to judge (goal >= 90%, 429s <= 1%);
* ``server``: every request fits in one window (e.g. 20 requests of 10,000 under 300 a
  minute): the limit never binds, the time is the payload's processing (client + fake, one
  Python process), and achieved ÷ allowed only says how far under the limit the push stays.

Push phases run with each answer held ``--latency`` seconds by the fake (the round trip to
the platform, default 0.25 s), one batch at a time and then at the destination's
concurrency where its connector writes several batches at once (HubSpot, Google): the
reference and the figure, in the same run. Pulls page by cursor, one page after the other,
and Salesforce's push (no concurrency) run without it.

HubSpot's windows are time-scaled (``--scale``, default 0.2: 100 requests per 2 s instead of
per 10 s, search 5 per 0.2 s) identically in the fake and in the client's limiter, so the
ratio is the one the real limit gives, 5x faster (its latency too). The printout says so.

    python bench/bench_rates.py                 # everything, the sizes of issue 13
    python bench/bench_rates.py --only hubspot --n 20000 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakes from a checkout

from crmsync.connectors.base import Change, Context, Op, SourceState  # noqa: E402
from crmsync.sync.mapping.model import DestinationConfig, SourceConfig  # noqa: E402
from crmsync.sync.pipeline.push import Answer, write_batches  # noqa: E402

NOW = datetime(2026, 11, 24)


def phase(name: str, fake: Any, fn: Callable[[], dict[str, Any]], *, limit: int | None,
          window: float | None, throttled: Callable[[], int], min_requests: int,
          path: str | None = None, scale: float = 1.0) -> dict[str, Any]:
    """Run ``fn`` and measure the requests ``fake`` saw (matching ``path``)."""
    n0 = len(fake.calls(path=path))
    t0, thr0 = time.monotonic(), throttled()
    extra = fn()
    secs = time.monotonic() - t0
    reqs = len(fake.calls(path=path)) - n0
    thr = throttled() - thr0
    out: dict[str, Any] = {"phase": name, "requests": reqs, "min_requests": min_requests,
                           "seconds": round(secs, 2), "rate_per_s": round(reqs / secs, 2),
                           "throttled": thr, "share_429": round(thr / reqs, 4) if reqs else 0.0}
    if limit and window:
        allowed = limit / window
        out["allowed"] = f"{limit}/{window:g}s" + (f" (real {limit}/{window / scale:g}s, "
                                                    f"time-scaled x{scale:g})" if scale != 1
                                                    else "")
        out["achieved_over_allowed"] = round(reqs / secs / allowed, 3)
        out["bound"] = "limit" if reqs > limit else "server"
    out.update(extra)
    return out


# ---------------------------------------------------------------- HubSpot


def hubspot(a: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from crmsync.connectors import hubspot as hs
    from tests.fakes.hubspot import FakeHubSpot

    window, swindow = 10.0 * a.scale, 1.0 * a.scale
    token = "pat-bench"
    out = []
    with FakeHubSpot(token=token, rate_limit=100, window=window, search_rate=5,
                     search_window=swindow, daily_limit=10**9) as fake:
        n = max(a.pull_n, a.n)
        for i in range(n):
            fake.add_contact({"email": f"u{i}@bench.example"})
        conn = hs.HubSpotConnection(type="hubspot", token=token, base_url=fake.url,
                                    rate_limit=100, rate_window=window, search_rate=5,
                                    search_window=swindow)
        ctx = Context(now=NOW, base_dir=tmp)
        cfg = SourceConfig(connection="hubspot", properties=["email"])
        src = hs.HubSpotSource("crm", cfg, hs.HubSpotSource.Options(), conn, ctx)
        src.schema()  # the property definitions: one call, before the measured pages
        got: list[str] = []

        def full() -> dict[str, Any]:
            p = src.pull(SourceState())
            got.extend(r["id"] for r in p.rows)
            return {"rows": len(p.rows), "page_size": 100, "pages": len(fake.calls(
                "GET", r"/crm/v3/objects/contacts$")), "min_pages": math.ceil(n / 100)}

        thr = lambda: fake.throttled  # noqa: E731
        out.append(phase("hubspot pull full (list endpoint)", fake, full, limit=100,
                         window=window, throttled=thr, min_requests=math.ceil(n / 100),
                         path=r"/crm/v3/objects/contacts$", scale=a.scale))

        # incremental: a.changed contacts modified after the cursor, through search
        cursor = fake.clock_ms
        fake.tick(60_000)
        step = max(1, n // a.changed)
        for cid in list(fake.contacts)[::step][:a.changed]:
            fake.update_contact(cid, {"email": f"changed-{cid}@bench.example"})
        src.options = hs.HubSpotSource.Options(lookback=timedelta(0))
        state = SourceState(cursor={"since": cursor + 1}, last_full_at=NOW, rows=n)
        s0 = len(fake.calls("POST", r"/search$"))

        def incremental() -> dict[str, Any]:
            p = src.pull(state)
            pages = len(fake.calls("POST", r"/search$")) - s0
            return {"rows": len(p.rows), "page_size": 200, "pages": pages,
                    "min_pages": math.ceil(a.changed / 200),
                    "note": "search capped at 10,000 results a query: the query restarts "
                            "past the last id (hs_object_id > id), no page wasted"}

        out.append(phase("hubspot pull incremental (search)", fake, incremental, limit=5,
                         window=swindow, throttled=thr, min_requests=math.ceil(a.changed / 200),
                         path=r"/search$", scale=a.scale))

        # pushes: each answer held a.latency (time-scaled with the windows), one batch at a
        # time and then at the destination's concurrency
        fake.latency = a.latency * a.scale
        keys = got[:a.n]

        def push_list(d: Any) -> list[dict[str, Any]]:
            c0 = len(fake.calls("PUT", r"/add-and-remove$"))
            target = f"bench-{d.concurrency}"
            d.options = d.options.model_copy(update={"list": target})
            d.open({})

            def run() -> dict[str, Any]:
                done = write_all(d, [Change(k) for k in keys])
                sizes = [len(r.json()["recordIdsToAdd"]) for r in fake.calls(
                    "PUT", r"/add-and-remove$")[c0:]]
                return {"done": done, "batch_sizes": _sizes(sizes),
                        "members": len(fake.members(target)), "concurrency": d.concurrency,
                        "latency_s": fake.latency,
                        "note": "the minimum requests fit one window: the limit cannot bind"}

            return [phase(f"hubspot push list (add-and-remove), {d.concurrency} at once",
                          fake, run, limit=100, window=window, throttled=thr,
                          min_requests=math.ceil(len(keys) / a.hubspot_chunk),
                          path=r"/add-and-remove$", scale=a.scale)]

        dcfg = DestinationConfig(name="bench", type="hubspot_list", segment="s",
                                 connection="hubspot", list="bench", chunk_size=a.hubspot_chunk)
        out += both(hs.HubSpotListDestination(dcfg, hs.HubSpotListDestination.Options(
            **dcfg.options), conn, Context(now=NOW, base_dir=tmp)), push_list)

        # property write-back: 100 inputs a call, the rate-bound HubSpot push
        fake.define_property("crmsync_segment", "string", "text")
        pcfg = DestinationConfig(name="tag", type="hubspot_property", segment="s",
                                 connection="hubspot", property="crmsync_segment")
        popts = hs.HubSpotPropertyDestination.Options(property="crmsync_segment",
                                                      property_type="string")
        pdest = hs.HubSpotPropertyDestination(pcfg, popts, conn, Context(now=NOW, base_dir=tmp))
        pdest.open({})
        pkeys = keys[:a.property_n]

        def push_property(d: Any) -> list[dict[str, Any]]:
            c0 = len(fake.calls("POST", r"/batch/update$"))

            def run() -> dict[str, Any]:
                done = write_all(d, [Change(k, "s", "s") for k in pkeys])
                sizes = [len(r.json()["inputs"]) for r in fake.calls(
                    "POST", r"/batch/update$")[c0:]]
                return {"done": done, "batch_sizes": _sizes(sizes),
                        "concurrency": d.concurrency, "latency_s": fake.latency}

            return [phase(f"hubspot push property (batch update), {d.concurrency} at once",
                          fake, run, limit=100, window=window, throttled=thr,
                          min_requests=math.ceil(len(pkeys) / 100), path=r"/batch/update$",
                          scale=a.scale)]

        out += both(pdest, push_property)
    return out


def write_all(dest: Any, changes: list[Change]) -> int:
    """``changes`` written as adds through the push's own scheduler (``write_batches``:
    batches of the destination's size, up to its ``concurrency`` at once); rows done."""
    done = 0

    def settle(_: None, answer: Answer) -> None:
        nonlocal done
        if answer.stopped:
            raise answer.result  # type: ignore[misc]
        done += len(answer.result.done)  # type: ignore[union-attr]

    size = dest.batch_size
    write_batches(dest, Op.ADD, ((None, changes[i:i + size])
                                 for i in range(0, len(changes), size)), settle)
    return done


def at(dest: Any, concurrency: int) -> Any:
    """``dest`` writing ``concurrency`` batches at once (capped at its connector's maximum)."""
    dest.config = dest.config.model_copy(update={"concurrency": concurrency})
    return dest


def both(dest: Any, run: Callable[[Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A push phase one batch at a time, then at the connector's concurrency (when more
    than 1): the reference and the figure, in the same run."""
    out = run(at(dest, 1))
    if dest.max_concurrency > 1:
        out += run(at(dest, dest.max_concurrency))
    return out


def _sizes(sizes: list[int]) -> dict[str, Any]:
    if not sizes:
        return {}
    return {"max": max(sizes), "min": min(sizes), "requests_at_max": sizes.count(max(sizes))}


# ---------------------------------------------------------------- Google


def google(a: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from crmsync.connectors import google as g
    from tests.fakes.google import DataManagerFake

    account = "1234567890"
    with DataManagerFake() as fake:
        fake.add_account(account, terms_accepted=True)
        conn = g.GoogleAdsConnection(type="google_ads", operating_account=account,
                                     base_url=fake.url)
        cfg = DestinationConfig(name="cm", type="google_ads_customer_match", segment="s",
                                connection="google", identifiers=["email"],
                                audience="bench", terms_of_service="accepted")
        d, changes = _audience(g.CustomerMatchDestination, cfg, conn, tmp, a.n)
        fake.latency = a.latency
        thr = lambda: len([r for r in fake.calls(path=":ingest$") if r.status == 429])  # noqa: E731

        def push(d: Any) -> list[dict[str, Any]]:
            c0 = len(fake.calls("POST", r":ingest$"))

            def run() -> dict[str, Any]:
                done = write_all(d, changes)
                sizes = [len(r.json()["audienceMembers"]) for r in fake.calls(
                    "POST", r":ingest$")[c0:] if r.status == 200]
                return {"done": done, "batch_sizes": _sizes(sizes),
                        "concurrency": d.concurrency, "latency_s": fake.latency}

            return [phase(f"google push (audienceMembers:ingest), {d.concurrency} at once",
                          fake, run, limit=g.PER_MINUTE, window=60.0, throttled=thr,
                          min_requests=math.ceil(a.n / g.MAX_MEMBERS), path=r":ingest$")]

        return both(d, push)


def _audience(cls: Any, cfg: Any, conn: Any, tmp: Path, n: int) -> tuple[Any, list[Change]]:
    """An ad audience destination, opened, and ``n`` adds of hashed emails for it."""
    d = cls(cfg, cls.Options(**cfg.options), conn, Context(now=NOW, base_dir=tmp))
    d.open({})
    return d, [Change(f"k{i}", value=d.encode({"email": f"p{i}@bench.example"}))
               for i in range(n)]


# ---------------------------------------------------------------- Meta


def meta(a: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from crmsync.connectors import meta as m
    from tests.fakes.meta import FakeGraph

    with FakeGraph(account="act_1234") as fake:
        conn = m.MetaConnection(type="meta", access_token="EAA-bench", ad_account_id="act_1234",
                                base_url=fake.url)
        cfg = DestinationConfig(name="ca", type="meta_custom_audience", segment="s",
                                connection="meta", identifiers=["email"], audience="bench")
        d, changes = _audience(m.CustomAudienceDestination, cfg, conn, tmp, a.n)
        fake.latency = a.latency

        def push() -> dict[str, Any]:
            done = write_all(d, changes)
            sizes = [len(json.loads(r.form()["payload"])["data"])
                     for r in fake.calls("POST", r"/users$")]
            return {"done": done, "batch_sizes": _sizes(sizes), "concurrency": d.concurrency,
                    "latency_s": fake.latency,
                    "why_no_concurrency": "one upload session per write, batches in batch_seq "
                    "order; the custom_audience business-use-case budget is per ad account "
                    "(developers.facebook.com/docs/marketing-api/overview/rate-limiting)"}

        # Standard tier: 190,000 calls an hour per ad account (+40 per active audience)
        return [phase("meta push (/{audience}/users)", fake, push, limit=190_000,
                      window=3600.0, throttled=lambda: d.ctx.meter.throttled,
                      min_requests=math.ceil(a.n / m.MAX_ROWS), path=r"/users$")]


# ---------------------------------------------------------------- Salesforce


def salesforce(a: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from crmsync.connectors import salesforce as sf
    from tests.fakes.salesforce import SYSTEM_FIELDS, FakeSalesforce, tls_pair

    tls, ca = tls_pair(tmp)
    out = []
    rows = max(a.sf_rows, a.n)
    with FakeSalesforce(tls=tls, api_max=10**7) as fake:
        fake.fields["Contact"] = dict([*SYSTEM_FIELDS, ("Email", "email"),
                                       ("LastName", "string")])
        ids = [fake.insert("Contact", LastName=f"L{i}", Email=f"c{i}@x.example")
               for i in range(rows)]
        conn = sf.SalesforceConnection(type="salesforce", base_url=fake.url,
                                       username="sync@acme.example", password="pw",
                                       security_token="tok", ca_file=str(ca))
        sf.SalesforceClient.bulk_wait = 1
        thr = lambda: 0  # noqa: E731  no rate window: the daily allocation is the limit

        def pull(threshold: int, expect: int) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                cfg = SourceConfig(connection="sf", properties=["Email"])
                src = sf.SalesforceSource("crm", cfg, sf.SalesforceSource.Options(
                    bulk_threshold=threshold), conn, Context(now=NOW, base_dir=tmp))
                src.schema()
                t0 = time.monotonic()
                p = src.pull(SourceState())
                secs = time.monotonic() - t0
                return {"rows": len(p.rows), "rows_per_s": round(len(p.rows) / secs),
                        "pages": expect}
            return run

        bulk_pages = math.ceil(rows / sf.BULK_PAGE)
        r = phase(f"salesforce pull {rows} rows (Bulk API 2.0)", fake,
                  pull(50_000, bulk_pages), limit=None, window=None, throttled=thr,
                  min_requests=bulk_pages, path=r"/jobs/query/\w+/results")
        r["note"] = ("requests = CSV result pages of 50,000; plus 1 REST query (totalSize "
                     "decides), 1 job create, job status polls")
        out.append(r)
        # REST paging below the threshold: a fresh object of rest_rows rows
        for rec in list(fake.records["Contact"].values())[a.sf_rest_rows:]:
            rec["IsDeleted"] = True
        rest_pages = math.ceil(a.sf_rest_rows / fake.page_size)
        out.append(phase(f"salesforce pull {a.sf_rest_rows} rows (REST query pages)", fake,
                         pull(50_000, rest_pages), limit=None, window=None, throttled=thr,
                         min_requests=rest_pages, path=r"/query"))
        for rec in fake.records["Contact"].values():
            rec["IsDeleted"] = False

        cfg = DestinationConfig(name="camp", type="salesforce_campaign", segment="s")
        d = sf.CampaignDestination(cfg, sf.CampaignDestination.Options(campaign="bench"), conn,
                                   Context(now=NOW, base_dir=tmp))
        d.open({})
        keys = ids[:a.n]

        def push() -> dict[str, Any]:
            done = write_all(d, [Change(k) for k in keys])
            sizes = [len(r.json()["records"]) for r in fake.calls(
                "POST", r"/composite/sobjects$")]
            return {"done": done, "batch_sizes": _sizes(sizes), "concurrency": d.concurrency,
                    "latency_s": fake.latency, "api_usage": f"{fake.api_used}/{fake.api_max}",
                    "why_no_concurrency": "every CampaignMember insert locks its Campaign: "
                    "multi-threaded child inserts under one parent contend for the lock "
                    "(developer.salesforce.com/blogs/engineering/2014/07/"
                    "record-locking-cheat-sheet.html)"}

        r = phase("salesforce push campaign (sObject Collections)", fake, push, limit=None,
                  window=None, throttled=thr, min_requests=math.ceil(len(keys) / 200),
                  path=r"/composite/sobjects$")
        r["allowed"] = "no per-second limit; the org's daily allocation (Sforce-Limit-Info)"
        out.append(r)
    return out


PLATFORMS = {"hubspot": hubspot, "google": google, "meta": meta, "salesforce": salesforce}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="changes pushed per platform")
    ap.add_argument("--pull-n", type=int, default=200_000, help="HubSpot full pull size")
    ap.add_argument("--changed", type=int, default=20_000, help="HubSpot incremental size")
    ap.add_argument("--property-n", type=int, default=200_000,
                    help="HubSpot property write-back size")
    ap.add_argument("--hubspot-chunk", type=int, default=100_000)
    ap.add_argument("--sf-rows", type=int, default=500_000, help="Salesforce first load")
    ap.add_argument("--sf-rest-rows", type=int, default=50_000)
    ap.add_argument("--scale", type=float, default=0.2, help="HubSpot window time scale")
    ap.add_argument("--latency", type=float, default=0.25,
                    help="seconds each push request's answer is held by the fake (the round "
                         "trip to the platform; HubSpot's time-scaled with its windows)")
    ap.add_argument("--only", action="append", choices=sorted(PLATFORMS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.only or list(PLATFORMS):
            results += PLATFORMS[name](a, Path(tmp))
    report = {"n": a.n, "scale": a.scale, "latency": a.latency, "phases": results}
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            line = (f"{r['phase']}: {r['requests']} requests (minimum {r['min_requests']}) in "
                    f"{r['seconds']} s = {r['rate_per_s']}/s, 429s {r['share_429']:.2%}")
            if "achieved_over_allowed" in r:
                line += (f", achieved/allowed {r['achieved_over_allowed']:.1%} of "
                         f"{r['allowed']}, bound by {r['bound']}")
            if "pages" in r:
                line += f"; pages {r['pages']} (minimum {r.get('min_pages', r['min_requests'])})"
            if r.get("batch_sizes"):
                line += f"; batch sizes {r['batch_sizes']}"
            if "rows_per_s" in r:
                line += f"; {r['rows']} rows, {r['rows_per_s']} rows/s"
            print(line)
    return report


if __name__ == "__main__":
    main()
