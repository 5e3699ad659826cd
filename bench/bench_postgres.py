"""Benchmark: `engine: postgres` (evaluate and diff in the database) vs the embedded engine.

Starts a throwaway PostgreSQL server (tests/pgserver.py), generates N contacts in a table of
text columns there (seeded: every value derives from md5 of the row number and a salt), and a
mapping with RFM, a weighted score, top_percent, within_last, multi-select, an exclusive
group, a holdout, a suppression and consent, over 4 destinations. Then, in one run:

* a first ``run`` (fills 4 csv destinations) and, after 1% of the rows changed (stage
  flips), a ``plan``, each through the Runner (what the CLI runs) on two mappings over the
  same table: ``engine: postgres`` (evaluated and diffed in the database, its store in the
  same database) and the embedded engine (a postgres source pulled whole into DuckDB);
* time, rows and bytes that left the database, and the diffs compared engine by engine.

    python bench/bench_postgres.py               # 1,000,000 contacts
    python bench/bench_postgres.py --n 100000    # quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

NOW = datetime(2026, 11, 1)
COLUMNS = ["id", "email", "stage", "employees", "last_order", "orders", "revenue",
           "consent", "tags", "last_login", "clicks"]
SCHEMA = {"stage": "enumeration", "employees": "number", "last_order": "date",
          "orders": "number", "revenue": "number", "consent": "bool", "tags": "multi",
          "last_login": "datetime", "clicks": "number"}


def _r(salt: str, mod: int) -> str:
    """A seeded pseudo-random integer in [0, mod) from the row number i."""
    return f"((('x' || substr(md5(i::text || '{salt}'), 1, 7))::bit(28)::int) %% {mod})"


GENERATE = f"""
CREATE TABLE contacts AS SELECT
  'c' || lpad(i::text, 8, '0') AS id,
  'u' || i || '@example.com' AS email,
  (ARRAY['lead', 'MQL', ' customer', 'sql', ''])[1 + {_r('s', 5)}] AS stage,
  CASE WHEN {_r('e0', 20)} = 0 THEN 'n/a' ELSE {_r('e', 2000)}::text END AS employees,
  to_char(DATE '2026-11-01' - {_r('d', 720)}, 'YYYY-MM-DD') AS last_order,
  {_r('o', 40)}::text AS orders,
  ({_r('m', 500000)} / 100.0)::text AS revenue,
  (ARRAY['yes', 'no', 'true', ''])[1 + {_r('c', 4)}] AS consent,
  (ARRAY['a;b', 'b', 'c; a', '', 'd'])[1 + {_r('t', 5)}] AS tags,
  (1793491200000 - {_r('l', 60)}::bigint * 86400000 - {_r('l2', 86400000)})::text AS last_login,
  {_r('k', 50)}::text AS clicks
FROM generate_series(1, %s) AS i
"""


def mapping() -> dict[str, Any]:
    f = lambda field, op, v: {"field": field, op: v}  # noqa: E731
    return {
        "version": 1,
        "engine": "postgres",
        "sources": {"crm": {"type": "csv", "path": "unused.csv", "key": "id",
                            "schema": SCHEMA, "identity": {"email": "email"}}},
        "scores": {"rfm": {"type": "rfm", "recency": "last_order", "frequency": "orders",
                           "monetary": "revenue"},
                   "engagement": {"type": "weighted", "terms": [
                       {"field": "clicks", "weight": 2}, {"field": "orders", "weight": 1}]}},
        "segments": {
            "champions": {"where": f("rfm.segment", "in", ["Champions", "Loyal"])},
            "customers": {"where": {"all": [f("stage", "eq", "customer"),
                                            f("employees", "gte", 250)]}, "holdout": "10%"},
            "active": {"where": {"any": [f("last_login", "within_last", "7d"),
                                         f("tags", "has_any", ["a"])]}},
            "top": {"where": f("engagement", "top_percent", 10)},
            "leads": {"where": f("stage", "in", ["lead", "mql"])},
        },
        "groups": {"lifecycle": {"exclusive": True, "segments": ["customers", "leads"]}},
        "suppressions": {"no_tags": {"where": f("tags", "has_none", ["d"]), "scope": ["top"]}},
        "destinations": [
            {"name": n, "segment": n, "type": "csv", "path": f"out/{n}.csv",
             "identifiers": ["email"], **({"consent": "consent"} if n == "champions" else {})}
            for n in ("champions", "customers", "active", "top")],
    }


def run(path: Path, env: dict[str, str], command: str
        ) -> tuple[Any, float, int, int, dict[str, int]]:
    """One ``crmsync plan`` or ``run`` of the mapping, in process: its result, seconds, the
    rows and bytes the Postgres engine's diffs fetched (0 on the embedded engine), and the
    rows per table the shared store's working copy loaded."""
    import os

    from crmsync.sync.mapping.loader import load
    from crmsync.sync.pipeline.runner import Runner
    from crmsync.sync.pipeline.warehouse import WarehouseSync

    fetched = [0, 0]
    plan = WarehouseSync.plan

    def counting(self: Any, *a: Any, **kw: Any) -> Any:
        out = plan(self, *a, **kw)
        fetched[0] += self.fetched
        fetched[1] += self.fetched_bytes
        return out

    os.environ.update(env)
    WarehouseSync.plan = counting  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        with Runner(load(path), as_of=NOW) as r:
            res = r.plan() if command == "plan" else r.run()
            loaded = dict(getattr(r.store, "loaded", {}))
        return res, time.perf_counter() - t0, fetched[0], fetched[1], loaded
    finally:
        WarehouseSync.plan = plan  # type: ignore[method-assign]


def main() -> None:
    import psycopg
    from pgserver import start_server

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp_s, \
                psycopg.connect(server.dsn, autocommit=True) as pg:
            tmp = Path(tmp_s)
            paths = {}
            for engine in ("postgres", "duckdb"):
                m = mapping()
                m["name"] = f"bench-{engine}"
                m["connections"] = {"wh": {"type": "postgres", "dsn": "${BENCH_DSN}"}}
                m["sources"]["crm"] = {"connection": "wh", "table": "contacts", "key": "id",
                                       "schema": SCHEMA, "identity": {"email": "email"}}
                if engine == "duckdb":
                    del m["engine"]
                (tmp / engine).mkdir()
                paths[engine] = tmp / engine / "mapping.yaml"
                paths[engine].write_text(yaml.safe_dump(m), encoding="utf-8")
            env = {"BENCH_DSN": server.dsn}
            t0 = time.perf_counter()
            pg.execute(GENERATE, [args.n])
            pg.execute("ANALYZE contacts")
            print(f"{args.n:,} contacts generated in Postgres in {time.perf_counter() - t0:.1f}s")
            print(f"{'':32}{'s':>8}{'rows out':>12}{'bytes out':>14}  adds/removes/updates")
            table_bytes = pg.execute("SELECT sum(octet_length(c::text)) FROM contacts c"
                                     ).fetchone()[0]
            for step in ("run (first fill)", "plan after 1% of rows changed"):
                command = "run" if step.startswith("run") else "plan"
                print(step)
                out = {}
                for engine in ("postgres", "duckdb"):
                    res, secs, rows, nbytes, loaded = run(paths[engine], env, command)
                    if engine == "duckdb":  # it pulls the whole table every run
                        rows, nbytes = args.n, int(table_bytes)
                    figs = {d.name: (d.add, d.remove, d.update) for d in res.destinations}
                    out[engine] = figs
                    changes = sum(sum(v) for v in figs.values())
                    where = "in place" if engine == "postgres" else "pull + plan"
                    print(f"  {engine + ' (' + where + ')':30}{secs:8.2f}{rows:12,}"
                          f"{nbytes:14,}  {changes:,}")
                    if engine == "postgres":
                        print(f"    the store's working copy loaded {sum(loaded.values()):,} "
                              f"rows ({', '.join(f'{t} {n:,}' for t, n in loaded.items() if n)})")
                print(f"  same diffs on both engines: {out['postgres'] == out['duckdb']}")
                if command == "run":
                    n = pg.execute("UPDATE contacts SET stage = CASE WHEN stage = ' customer' "
                                   "THEN 'lead' ELSE ' customer' END, employees = '900' "
                                   "WHERE right(id, 2) = '07'").rowcount
                    print(f"  ({n:,} rows changed: stage flipped, employees 900)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
