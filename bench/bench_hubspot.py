"""Benchmark: the HubSpot connectors against the fake enforcing HubSpot's rolling limit.

A thin wrapper over ``bench/bench_rates.py --only hubspot`` (full pull at 100 a page,
incremental search pull, list push, property write-back), kept for its old flags.

    python bench/bench_hubspot.py                      # 100,000 contacts
    python bench/bench_hubspot.py --contacts 20000 --json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rates  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--scale", type=float, default=0.2, help="window time scale (1: real 10 s)")
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    n = a.contacts
    bench_rates.main(["--only", "hubspot", "--n", str(n), "--pull-n", str(n),
                      "--changed", str(max(1, n // 10)), "--property-n", str(n),
                      "--hubspot-chunk", str(a.chunk), "--scale", str(a.scale),
                      *(["--json"] if a.json else [])])


if __name__ == "__main__":
    main()
