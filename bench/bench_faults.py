"""The kill-and-fault matrix over every platform destination, printed as a table.

    python bench/bench_faults.py [--platform NAME ...] [--seed 0] [--quick]

Runs ``tests/faultmatrix.py``'s sweep (every boundary kill at a spread of batches, seeded
random kills, every fault, in a first push and a churn push of 20+ batches; ``--quick``: the
CI cases), each followed by clean re-runs, against the loopback fakes, and prints one row
per case and a total per platform: kills, lost, stray, members of others removed (and how
many of those no client can know about), duplicate adds, runs to converge.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import Cli  # noqa: E402
from faultmatrix import CI_CASES, Figures, NotApplicable, run_case, sweep, table  # noqa: E402
from matrix_harnesses import PLATFORMS, harness  # noqa: E402


def quick_waits() -> None:
    """As the tests do: no real back-off in the in-process runs."""
    from crmsync.connectors import google, meta
    from crmsync.connectors import salesforce as sf
    from crmsync.connectors.ratelimit import RollingWindow
    from crmsync.connectors.retry import RetryPolicy

    quick = RetryPolicy(attempts=4, initial_wait=0.0, max_wait=0.0)
    sf.RETRY, sf.ROW_RETRY_WAIT = quick, 0.0
    meta.CustomAudienceDestination.policy = quick
    google.CustomerMatchDestination.policy = quick
    google.CustomerMatchDestination.limiter = RollingWindow(10_000, 60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", action="append", choices=PLATFORMS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="only the CI cases")
    args = ap.parse_args()
    quick_waits()
    cases = CI_CASES if args.quick else sweep(seed=args.seed)
    rows: list[Figures] = []
    t0 = time.monotonic()
    for platform in args.platform or PLATFORMS:
        for phase, event, n in cases:
            with tempfile.TemporaryDirectory() as tmp, harness(platform, Path(tmp)) as h:
                try:
                    f = run_case(h, Path(tmp), Cli(Path(tmp)), phase, event, n, seed=n)
                except NotApplicable:
                    continue
                except Exception as exc:  # a case that breaks is reported, not fatal
                    f = Figures(platform, f"{phase}: {event} #{n}", runs=99,
                                notes=[f"error: {exc!r}"[:300]])
            rows.append(f)
            mark = "" if f.ok() else "  <-- " + "; ".join(f.notes)[:200]
            print(" | ".join(map(str, f.row())) + mark, flush=True)
    print()
    print(table(rows))
    print()
    totals = []
    for platform in args.platform or PLATFORMS:
        mine = [f for f in rows if f.platform == platform]
        t = Figures(platform, f"total ({len(mine)} cases)")
        for f in mine:
            t.kills += f.kills
            t.lost += f.lost
            t.stray += f.stray
            t.others_removed += f.others_removed
            t.unknowable += f.unknowable
            t.duplicate_adds += f.duplicate_adds
            t.runs = max(t.runs, f.runs)
        totals.append(t)
    print(table(totals).replace("| runs", "| max runs"))
    print(f"\n{len(rows)} cases in {time.monotonic() - t0:.0f} s; "
          f"{sum(not f.ok() for f in rows)} not as they should be")


if __name__ == "__main__":
    main()
