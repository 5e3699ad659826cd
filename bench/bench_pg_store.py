"""The postgres source and the shared store, timed against the embedded default in one run.

Starts a throwaway PostgreSQL server (tests/pgserver.py), fills ``analytics.contacts`` with
``--n`` seeded rows, then times, with a CSV audience as the destination:

* ``plan`` from the table (full pull: COPY ... TO STDOUT into DuckDB), then after 1% of the rows
  changed (incremental by ``cursor:``, plus the key scan for deletions);
* ``run`` on the embedded DuckDB store and on the shared Postgres store, first and again.

    python bench/bench_pg_store.py --n 200000
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pgserver import start_server  # noqa: E402


def fill(dsn: str, n: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    stages = ["lead", "mql", "sql", "customer"]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA analytics; CREATE TABLE analytics.contacts (contact_id "
                     "bigint PRIMARY KEY, email text, stage text, revenue numeric, optout "
                     "boolean, last_order date, updated_at timestamptz, tags text[])")
        with conn.cursor().copy("COPY analytics.contacts FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((i, f"u{i}@x.example", rnd.choice(stages),
                                round(rnd.random() * 1000, 2), rnd.random() < 0.05,
                                f"2026-{rnd.randint(1, 10):02d}-{rnd.randint(1, 28):02d}",
                                f"2026-10-{rnd.randint(1, 31):02d} {rnd.randint(0, 23):02d}:"
                                f"{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}+00",
                                ["a", "b"] if i % 3 else []))


def mapping(folder: Path, store: str | None) -> Path:
    m = {"version": 1, "name": "bench",
         "connections": {"wh": {"type": "postgres", "dsn": "${WAREHOUSE_DSN}"}},
         "sources": {"crm": {"connection": "wh", "table": "analytics.contacts",
                             "key": "contact_id", "cursor": "updated_at",
                             "identity": {"email": "email"}}},
         "segments": {"customers": {"where": {"all": [
             {"field": "stage", "eq": "customer"}, {"field": "revenue", "gte": 100}]}}},
         "suppressions": {"optout": {"where": {"field": "optout", "eq": True}}},
         "destinations": [{"name": "cust", "segment": "customers", "type": "csv",
                           "path": "out/cust.csv", "identifiers": ["email"]}]}
    if store:
        m["store"] = store
    path = folder / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    return path


def timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "crmsync.cli", *args], env={**os.environ, **env},
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{args} failed: {res.stderr[-1000:]}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    n = ap.parse_args().n
    server = start_server()
    try:
        wh = server.create_database("warehouse")
        store = server.create_database("store")
        fill(wh, n)
        env = {"WAREHOUSE_DSN": wh}
        with tempfile.TemporaryDirectory() as tmp:
            local, shared = Path(tmp) / "local", Path(tmp) / "shared"
            local.mkdir()
            shared.mkdir()
            m_local, m_shared = mapping(local, None), mapping(shared, store)
            print(f"{n:,} rows")
            # baseline, same run: the same rows as a CSV export with a csv source
            export = Path(tmp) / "contacts.csv"
            with psycopg.connect(wh) as conn, conn.cursor() as cur, export.open("wb") as fh, \
                    cur.copy("COPY analytics.contacts TO STDOUT (FORMAT csv, HEADER)") as cp:
                for block in cp:
                    fh.write(block)
            base = Path(tmp) / "csv"
            base.mkdir()
            m_csv = mapping(base, None)
            spec = yaml.safe_load(m_csv.read_text())
            spec["sources"]["crm"] = {"type": "csv", "path": str(export), "key": "contact_id",
                                      "schema": {"revenue": "number", "optout": "bool",
                                                 "last_order": "date", "updated_at": "datetime"},
                                      "identity": {"email": "email"}}
            del spec["connections"]
            m_csv.write_text(yaml.safe_dump(spec))
            print(f"baseline: plan of the same rows exported to CSV: "
                  f"{timed(['plan', '-c', str(m_csv)], env):.2f} s")
            print(f"plan, full pull from the table: {timed(['plan', '-c', str(m_local)], env):.2f} s")
            with psycopg.connect(wh) as conn:
                conn.execute("UPDATE analytics.contacts SET stage = 'customer', revenue = 500, "
                             "updated_at = '2026-11-02 00:00:00+00' WHERE contact_id % 100 = 0")
            print(f"plan, 1% changed (incremental + key scan): "
                  f"{timed(['plan', '-c', str(m_local)], env):.2f} s")
            fresh = Path(tmp) / "fresh"
            fresh.mkdir()
            m_fresh = mapping(fresh, None)
            for label, m in (("embedded DuckDB store", m_fresh), ("shared Postgres store", m_shared)):
                first = timed(["run", "-c", str(m)], env)
                again = timed(["run", "-c", str(m)], env)
                print(f"run on the {label}: first {first:.2f} s, again (no change) {again:.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
