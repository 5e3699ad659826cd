"""Benchmark: the HubSpot connectors against the fake enforcing HubSpot's rolling limit.

Pulls N contacts (full pull, 100 a page) and pushes an N-member list (add-and-remove in chunks),
then reports the achieved request rate as a share of the limit (goal >= 90%) and the share of
calls answered 429 (goal <= 1%).

    python bench/bench_hubspot.py                      # 100,000 contacts, 100 requests / 10 s
    python bench/bench_hubspot.py --contacts 20000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakes from a checkout

from crmsync.connectors.base import Change, Context, Op, SourceState  # noqa: E402
from crmsync.connectors.hubspot import (  # noqa: E402
    HubSpotConnection,
    HubSpotListDestination,
    HubSpotSource,
)
from crmsync.sync.mapping.model import DestinationConfig, SourceConfig  # noqa: E402
from tests.fakes.hubspot import FakeHubSpot  # noqa: E402

TOKEN = "pat-bench"


def phase(fake: FakeHubSpot, limit: int, window: float, fn) -> dict:
    n0, t0, thr0 = len(fake.requests), time.monotonic(), fake.throttled
    extra = fn()
    secs = time.monotonic() - t0
    calls = len(fake.requests) - n0
    throttled = fake.throttled - thr0
    rate = calls / secs if secs else 0.0
    return {"calls": calls, "seconds": round(secs, 2), "rate_per_s": round(rate, 2),
            "share_of_limit": round(rate / (limit / window), 3),
            "share_429": round(throttled / calls, 4) if calls else 0.0, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--rate-limit", type=int, default=100)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    with FakeHubSpot(token=TOKEN, rate_limit=a.rate_limit, window=a.window,
                     daily_limit=10**9) as fake, tempfile.TemporaryDirectory() as tmp:
        for i in range(a.contacts):
            fake.add_contact({"email": f"u{i}@bench.example"})
        conn = HubSpotConnection(type="hubspot", token=TOKEN, base_url=fake.url,
                                 rate_limit=a.rate_limit, rate_window=a.window)
        ctx = Context(now=datetime(2026, 11, 24), base_dir=Path(tmp))
        cfg = SourceConfig(connection="hubspot", properties=["email"])
        src = HubSpotSource("crm", cfg, HubSpotSource.Options(), conn, ctx)
        keys: list[str] = []

        def pull() -> dict:
            p = src.pull(SourceState())
            keys.extend(r["id"] for r in p.rows)
            return {"contacts": len(keys)}

        dcfg = DestinationConfig(name="bench", type="hubspot_list", segment="s",
                                 connection="hubspot", list="bench", chunk_size=a.chunk)
        dest = HubSpotListDestination(dcfg, HubSpotListDestination.Options(**dcfg.options),
                                      conn, ctx)

        def push() -> dict:
            dest.open({})
            res = dest.write(Op.ADD, [Change(k) for k in keys])
            return {"members": len(fake.members("bench")), "done": len(res.done)}

        out = {"limit": f"{a.rate_limit}/{a.window:g}s",
               "pull": phase(fake, a.rate_limit, a.window, pull),
               "push": phase(fake, a.rate_limit, a.window, push)}
        total_calls = out["pull"]["calls"] + out["push"]["calls"]
        out["share_429"] = round(fake.throttled / total_calls, 4)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for name in ("pull", "push"):
            r = out[name]
            print(f"{name}: {r['calls']} calls in {r['seconds']} s = {r['rate_per_s']}/s, "
                  f"{r['share_of_limit']:.0%} of {out['limit']}, 429s {r['share_429']:.2%}")


if __name__ == "__main__":
    main()
