"""Benchmark: a `crmsync run` filling an N-member csv audience, and the 1% churn run after it,
each against `crmsync plan` over the same data in the same benchmark run.

Generates N + N/200 contacts (bench/generate.py, seeded, at run time); the first file holds the
first N of them, every one in the audience (identifiers email, phone, names, country; a
contact with none of them is counted ``no_identifier``). Then, as CLI subprocesses, each with
its own wall time and peak RSS (bench_plan's launcher, os.wait4):

* ``plan`` of the new file ("pull": it pulls the file into the store), ``plan`` again (the
  reference: evaluate and diff over the stored snapshot, the file unchanged), then ``run``,
  which finds the same stored snapshot and fills the csv audience;
* the churn: 0.5% of the contacts leave the file and 0.5% new ones join it; again ``plan``
  (pulls the change), ``plan`` (the reference) and ``run``;
* the update: every member's value changes (the export writes emails in upper case), the
  same three steps: the ledger rewrites every row.

So "run − plan" is what the run adds to a plan over the same stored data: the push, the
ledger and the file. Also checks that the audience file holds the desired members.

    python bench/bench_csv_fill.py --n 100000          # quick
    python bench/bench_csv_fill.py                     # targets: 1,000,000 members
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from bench_plan import AS_OF, _crmsync, run_child_rss  # noqa: E402

SEED = 131313
IDENTIFIERS = ["email", "phone", "first_name", "last_name", "country"]


def write_contacts(cols: dict[str, list[str]], rows: np.ndarray, path: Path) -> None:
    """The contacts at positions ``rows`` of the generated columns, as generate.py writes them."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(generate.COLUMNS)
        data = [cols[c] for c in generate.COLUMNS]
        w.writerows([col[i] for col in data] for i in rows.tolist())


def write_mapping(folder: Path) -> Path:
    mapping = {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "identity": {"email": "email", "phone": "phone",
                                         "first_name": "firstname", "last_name": "lastname",
                                         "country": "country", "phone_region": "US"}}},
        "segments": {"everyone": {"description": "every contact", "owner": "bench@acme.example",
                                  "where": {"field": "id", "is_known": True}}},
        "destinations": [{"name": "audience-file", "segment": "everyone", "type": "csv",
                          "path": "out/audience.csv", "identifiers": IDENTIFIERS}],
    }
    path = folder / "fill.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def step(name: str, cmd: list[str]) -> dict:
    """Run one CLI command; its wall seconds, peak RSS (MiB) and, for a plan, its figures."""
    wall, rss, out = run_child_rss(cmd)
    fig: dict = {"step": name, "seconds": wall, "rss_mib": rss}
    if "--json" in cmd:
        d = json.loads(out)["destinations"]["audience-file"]
        fig.update({k: d[k] for k in ("desired", "add", "remove", "update")})
    print(f"  {name:12}{wall:8.2f} s{rss:8.0f} MiB", file=sys.stderr, flush=True)
    return fig


def audience_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def bench(n: int, folder: Path) -> dict:
    extra = max(n // 200, 1)  # 0.5% leave, 0.5% join: 1% churn
    t0 = time.perf_counter()
    cols = generate.rows(n + extra, SEED)
    rng = np.random.default_rng(SEED)
    contacts = folder / "contacts.csv"
    write_contacts(cols, np.arange(n), contacts)
    t_gen = time.perf_counter() - t0
    mapping = write_mapping(folder)
    plan = [*_crmsync(), "plan", "-c", str(mapping), "--json", "--as-of", AS_OF]
    run = [*_crmsync(), "run", "-c", str(mapping), "--as-of", AS_OF]
    steps = [step("fill pull", plan), step("fill plan", plan), step("fill run", run)]
    fill_members = audience_rows(folder / "out" / "audience.csv")
    keep = np.ones(n + extra, dtype=bool)
    keep[n:] = False
    keep[rng.choice(n, size=extra, replace=False)] = False
    keep[n:] = True
    write_contacts(cols, np.flatnonzero(keep), contacts)
    steps += [step("churn pull", plan), step("churn plan", plan), step("churn run", run)]
    churn_members = audience_rows(folder / "out" / "audience.csv")
    # every member updated: the export now writes emails in upper case (the csv audience
    # sends raw values, so each member's value changes)
    cols["email"] = [e.upper() for e in cols["email"]]
    write_contacts(cols, np.flatnonzero(keep), contacts)
    steps += [step("update pull", plan), step("update plan", plan), step("update run", run)]
    by = {s["step"]: s for s in steps}
    return {
        "members": n, "generate_s": t_gen, "steps": steps,
        "fill_members_written": fill_members, "churn_members_written": churn_members,
        "fill_desired": by["fill plan"]["desired"], "churn_desired": by["churn plan"]["desired"],
        "churn_add": by["churn plan"]["add"], "churn_remove": by["churn plan"]["remove"],
        "churn_update": by["churn plan"]["update"], "update_update": by["update plan"]["update"],
        "update_run_minus_plan_s": by["update run"]["seconds"] - by["update plan"]["seconds"],
        "fill_run_minus_plan_s": by["fill run"]["seconds"] - by["fill plan"]["seconds"],
        "churn_run_minus_plan_s": by["churn run"]["seconds"] - by["churn plan"]["seconds"],
        "peak_rss_mib": max(s["rss_mib"] for s in steps),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="audience size")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        fig = bench(args.n, Path(tmp))
    ok = (fig["fill_members_written"] == fig["fill_desired"]
          and fig["churn_members_written"] == fig["churn_desired"])
    fig["file_matches_desired"] = ok
    if args.json:
        print(json.dumps(fig, indent=1))
        return
    print(f"{args.n:,} contacts in a csv audience (generated in {fig['generate_s']:.1f}s)")
    print(f"{'':14}{'seconds':>9}{'peak RSS':>13}")
    for s in fig["steps"]:
        print(f"{s['step']:14}{s['seconds']:9.2f}{s['rss_mib']:9.0f} MiB")
    print(f"fill:  run - plan = {fig['fill_run_minus_plan_s']:+.2f} s "
          f"({fig['fill_desired']:,} members written)")
    print(f"churn: run - plan = {fig['churn_run_minus_plan_s']:+.2f} s "
          f"(+{fig['churn_add']:,} -{fig['churn_remove']:,} ~{fig['churn_update']:,})")
    print(f"update: run - plan = {fig['update_run_minus_plan_s']:+.2f} s "
          f"(~{fig['update_update']:,}: every member's value changed)")
    print(f"the audience file holds the desired members: {ok}")


if __name__ == "__main__":
    main()
