"""The demo's second week: mappings/demo/contacts-2.csv, made from contacts.csv with seeded
changes, so that a second run (as of 2026-11-08) has sizes that move, contacts that migrate
between the segments of an exclusive group, and a holdout with an outcome to compare.

A week later (seed 20261108):
- lifecycle stages advance (subscriber -> lead -> mql -> sql -> opportunity -> customer,
  trial -> customer) at typical weekly rates; a new customer places a first order;
- orders come in: about 4% of buyers order again, and the win-back campaign works: members of
  ``at_risk`` who were sent (not held out) order with 24%, those held out with 8% (the
  outcome ``crmsync lift at_risk --outcome last_order_date --since 2026-11-01`` measures);
- engagement moves (clicks and views redrawn for 15% of contacts), trials log in;
- 300 new contacts arrive (leads and subscribers), 60 are deleted.

Who is in ``at_risk`` and held out as of 2026-11-01 is read from crmsync's own evaluation of
the demo mapping (in a temporary store), so the effect follows the mapping's holdout.

    python bench/demo_week2.py            # writes mappings/demo/contacts-2.csv
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "mappings" / "demo.yaml"
WEEK1 = ROOT / "mappings" / "demo" / "contacts.csv"
WEEK2 = ROOT / "mappings" / "demo" / "contacts-2.csv"
SEED = 20261108
AS_OF_1 = datetime(2026, 11, 1)
AS_OF_2 = datetime(2026, 11, 8)
#: weekly chance of moving to the next stage
ADVANCE = {"subscriber": ("lead", .05), "lead": ("mql", .06), "mql": ("sql", .10),
           "sql": ("opportunity", .10), "opportunity": ("customer", .15),
           "trial": ("customer", .12)}
REORDER, WINBACK_SENT, WINBACK_HELD = .04, .24, .08


def _generator():
    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def at_risk_week1() -> tuple[set[str], set[str]]:
    """Keys of ``at_risk`` as of week 1: sent (members not held out) and held out."""
    from crmsync.sync.mapping.loader import load
    from crmsync.sync.pipeline.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mappings"
        shutil.copytree(DEMO.parent / "demo", folder / "demo")
        shutil.copy(DEMO, folder / "demo.yaml")
        runner = Runner(load(folder / "demo.yaml", env={}), as_of=AS_OF_1)
        try:
            ev = runner.evaluate()
            rows = runner.store.con.execute(
                f'SELECT _key, "h:at_risk" FROM {ev.table("crm")} WHERE "m:at_risk"').fetchall()
        finally:
            runner.close()
    return {k for k, h in rows if not h}, {k for k, h in rows if h}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def week2(rows: list[dict[str, str]], sent: set[str], held: set[str],
          rng: np.random.Generator) -> list[dict[str, str]]:
    out = []
    for r in rows:
        r = dict(r)
        stage = r["lifecyclestage"].strip().lower()
        if stage in ADVANCE and rng.random() < ADVANCE[stage][1]:
            stage = ADVANCE[stage][0]
            r["lifecyclestage"] = stage
        orders = _number(r["order_count"]) if r["order_count"] else 0.0
        chance = (WINBACK_SENT if r["id"] in sent else WINBACK_HELD if r["id"] in held
                  else REORDER if orders else 1.0 if stage == "customer" and not orders else 0)
        if orders is not None and rng.random() < chance:
            day = AS_OF_1 + timedelta(seconds=int(rng.integers(3600, 7 * 86400)))
            r["last_order_date"] = f"{day:%Y-%m-%d}"
            if not r.get("first_order_date", "x"):  # a first order (where the column exists)
                r["first_order_date"] = r["last_order_date"]
            r["order_count"] = str(int(orders) + 1)
            revenue = _number(r["total_revenue"]) if r["total_revenue"] else 0.0
            if revenue is not None:
                r["total_revenue"] = f"{revenue + rng.lognormal(4.6, 0.9):.2f}"
        if rng.random() < .15:
            engaged = rng.gamma(0.6, 1.0)
            r["email_clicks_30d"] = str(rng.poisson(engaged * 2.5))
            r["page_views_30d"] = str(rng.poisson(engaged * 9 + rng.exponential(1.5)))
        if stage == "trial" and rng.random() < .5:
            seen = AS_OF_2 - timedelta(seconds=int(rng.exponential(3 * 86400)))
            r["last_login"] = seen.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(r)
    gone = set(rng.choice(len(out), size=60, replace=False).tolist())
    out = [r for i, r in enumerate(out) if i not in gone]
    gen = _generator()
    new = gen.rows(300, SEED)
    for i in range(300):
        row = {c: new[c][i] for c in gen.COLUMNS}
        row["id"] = f"c{len(rows) + 1 + i:06d}"
        row["lifecyclestage"] = ("lead", "subscriber")[i % 2]
        row["created_at"] = (AS_OF_1 + timedelta(hours=int(rng.integers(1, 7 * 24)))
                             ).strftime("%Y-%m-%dT%H:%M:%SZ")
        for c in ("first_order_date", "last_order_date", "order_count", "total_revenue"):
            if c in row:
                row[c] = ""
        out.append(row)
    return out


def generate(path: str | Path) -> tuple[Path, int, int]:
    """Write week 2 to ``path``; returns it and the at_risk contacts sent / held out in week 1."""
    with WEEK1.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns, rows = reader.fieldnames, list(reader)
    sent, held = at_risk_week1()
    out = week2(rows, sent, held, np.random.default_rng(SEED))
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, columns, lineterminator="\n")
        w.writeheader()
        w.writerows(out)
    return path, len(sent), len(held)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(WEEK2))
    args = ap.parse_args(argv)
    path, sent, held = generate(args.output)
    print(f"{path}: at_risk as of week 1: {sent} sent, {held} held out")


if __name__ == "__main__":
    main()
