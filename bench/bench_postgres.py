"""Benchmark: `engine: postgres` (evaluate and diff in the database) vs the embedded engine.

Starts a throwaway PostgreSQL server (tests/pgserver.py), generates N contacts in a table of
text columns there (seeded: every value derives from md5 of the row number and a salt), and a
mapping with RFM, a weighted score, top_percent, within_last, multi-select, an exclusive
group, a holdout, a suppression and consent, over 4 destinations. Then, in one run:

* postgres: plan (evaluate + diff against a ledger table in the same database) on an empty
  ledger, record the adds in the ledger (COPY), change 1% of the rows (stage flips), plan
  again: rows and bytes that left the database, and time, for each plan;
* duckdb: the same data pulled out of Postgres (COPY ... TO STDOUT, what the embedded engine
  must do every run), evaluated and diffed in DuckDB against the same ledger, before and
  after the same change;
* both engines' desired sets are compared destination by destination.

    python bench/bench_postgres.py               # 1,000,000 contacts
    python bench/bench_postgres.py --n 100000    # quick
"""

from __future__ import annotations

import argparse
import io
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


class Meter:
    """Counts the rows and bytes a connection hands to Python."""

    def __init__(self, conn: Any):
        self.conn, self.rows, self.bytes = conn, 0, 0

    def _count(self, rows: list) -> list:
        self.rows += len(rows)
        self.bytes += sum(len(str(v).encode()) for r in rows for v in r if v is not None)
        return rows

    def execute(self, sql: str, params: Any = None) -> Any:
        cur = self.conn.execute(sql, params) if params is not None else self.conn.execute(sql)
        meter = self

        class Cursor:
            def fetchone(self):
                row = cur.fetchone()
                return meter._count([row])[0] if row is not None else None

            def fetchall(self):
                return meter._count(cur.fetchall())
        return Cursor()

    def cursor(self) -> Any:
        return self.conn.cursor()


def plan(project: Any, con: Any, engine: str, table: Any) -> tuple[dict, float]:
    from crmsync.sync.mapping.model import FieldType
    from crmsync.sync.pipeline.warehouse import diff
    from crmsync.sync.segments import warehouse
    from crmsync.sync.segments.engine import Evaluation

    schema = {"id": FieldType.string, "email": FieldType.string,
              **{k: FieldType(v) for k, v in SCHEMA.items()}}
    t0 = time.perf_counter()
    rel = warehouse.table_relation(table, "id", schema, [],
                                   conn=con if engine == "postgres" else None)
    if engine == "postgres":
        ev = warehouse.evaluate(project, con, {"crm": rel}, NOW)
    else:
        ev = Evaluation.build_on(project, con, "duckdb", {"crm": rel}, NOW)
    diffs = {d.name: diff(ev, d, "ledger") for d in project.mapping.destinations}
    return diffs, time.perf_counter() - t0


def pull_into_duckdb(pg: Any, duck: Any, tmp: Path) -> tuple[int, int, float]:
    """The embedded engine's pull: the whole table out of Postgres (COPY), into DuckDB."""
    t0 = time.perf_counter()
    buf = io.BytesIO()
    with pg.cursor() as cur, cur.copy("COPY contacts TO STDOUT (FORMAT csv, HEADER)") as cp:
        for chunk in cp:
            buf.write(chunk)
    path = tmp / "contacts.csv"
    path.write_bytes(buf.getvalue())
    duck.execute(f"CREATE OR REPLACE TABLE contacts AS SELECT * FROM read_csv('{path}', "
                 f"all_varchar = true, header = true)")
    rows = duck.execute("SELECT count(*) FROM contacts").fetchone()[0]
    return rows, len(buf.getvalue()), time.perf_counter() - t0


def record(pg: Any, duck: Any, diffs: dict) -> None:
    """A successful push: adds become ledger members, removes leave (both ledgers)."""
    data = [(name, a[0]) for name, d in diffs.items() for a in d.adds]
    gone = [(name, r[0]) for name, d in diffs.items() for r in d.removes]
    with pg.cursor() as cur:
        with cur.copy("COPY ledger (dest, key) FROM STDIN") as cp:
            for row in data:
                cp.write_row(row)
        cur.executemany("DELETE FROM ledger WHERE dest = %s AND key = %s", gone)
        cur.execute("ANALYZE ledger")  # as autovacuum would after a bulk load
    if data:
        dests, keys = zip(*data, strict=True)
        duck.execute("INSERT INTO ledger (dest, key) SELECT unnest(?), unnest(?)",
                     [list(dests), list(keys)])
    for d, k in gone:
        duck.execute("DELETE FROM ledger WHERE dest = ? AND key = ?", [d, k])


def main() -> None:
    import duckdb
    import psycopg
    from pgserver import start_server

    from crmsync.sync.mapping.loader import load
    from crmsync.sync.segments import warehouse

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp_s, \
                psycopg.connect(server.dsn, autocommit=True) as pg:
            tmp = Path(tmp_s)
            (tmp / "mapping.yaml").write_text(yaml.safe_dump(mapping()), encoding="utf-8")
            project = load(tmp / "mapping.yaml")
            t0 = time.perf_counter()
            pg.execute(GENERATE, [args.n])
            pg.execute("CREATE TABLE ledger (dest text, key text, value text DEFAULT '', "
                       "state text DEFAULT 'member', PRIMARY KEY (dest, key))")
            pg.execute("ANALYZE contacts")
            print(f"{args.n:,} contacts generated in Postgres in {time.perf_counter() - t0:.1f}s")
            duck = duckdb.connect()
            duck.execute("SET TimeZone = 'UTC'")
            duck.execute("CREATE TABLE ledger (dest VARCHAR, key VARCHAR, value VARCHAR "
                         "DEFAULT '', state VARCHAR DEFAULT 'member', PRIMARY KEY (dest, key))")
            table = warehouse.table_name("contacts")
            print(f"{'':28}{'plan s':>8}{'rows out':>12}{'bytes out':>14}  adds/removes")
            for label in ("first plan (empty ledger)", "after 1% of rows changed"):
                meter = Meter(pg)
                pdiffs, pt = plan(project, meter, "postgres", table)
                rows, nbytes, pull_t = pull_into_duckdb(pg, duck, tmp)
                ddiffs, dt = plan(project, duck, "duckdb", table)
                same = all({a[0] for a in pdiffs[n].adds} == {a[0] for a in ddiffs[n].adds}
                           and pdiffs[n].removes == ddiffs[n].removes for n in pdiffs)
                changes = sum(len(d.adds) + len(d.removes) for d in pdiffs.values())
                print(f"{label}")
                print(f"  postgres (in place)       {pt:8.2f}{meter.rows:12,}{meter.bytes:14,}"
                      f"  {changes:,}")
                print(f"  duckdb (pull + plan)      {pull_t + dt:8.2f}{rows:12,}{nbytes:14,}"
                      f"  (pull {pull_t:.2f}s + evaluate/diff {dt:.2f}s); same diff: {same}")
                record(pg, duck, pdiffs)
                if label.startswith("first"):
                    n = pg.execute("UPDATE contacts SET stage = CASE WHEN stage = ' customer' "
                                   "THEN 'lead' ELSE ' customer' END, employees = '900' "
                                   "WHERE right(id, 2) = '07'").rowcount
                    print(f"  ({n:,} rows changed: stage flipped, employees 900)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
