"""engine: postgres over a table with typed columns: the same members as its text twin."""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

psycopg = pytest.importorskip("psycopg")

from crmsync.sync.mapping.loader import load  # noqa: E402
from crmsync.sync.mapping.model import FieldType  # noqa: E402
from crmsync.sync.segments import warehouse  # noqa: E402

NOW = datetime(2026, 3, 10, 12, 0, 0)
SCHEMA = {"id": FieldType.string, "n": FieldType.number, "price": FieldType.number,
          "flag": FieldType.bool, "d": FieldType.date, "ts": FieldType.datetime,
          "stage": FieldType.string}
WHERE = {
    "n5": {"field": "n", "gte": 5},
    "price": {"field": "price", "between": [1.5, 10]},
    "flag": {"field": "flag", "eq": True},
    "recent_day": {"field": "d", "within_last": "7d"},
    "after": {"field": "ts", "after": "2026-03-09T22:00:00Z"},
    "customer": {"field": "stage", "eq": "Customer"},
    "no_ts": {"field": "ts", "is_known": False},
}
ROWS = [  # id, n, price, flag, d, ts (with its offset), stage
    ("a", 5, "1.50", True, "2026-03-05", "2026-03-10 01:00:00+02", " CUSTOMER"),
    ("b", 4, "10.01", False, "2026-03-02", "2026-03-09 23:30:00+00", "lead"),
    ("c", None, None, None, None, None, None),
    ("d", 12, "10", True, "2026-03-10", "2026-03-09 20:00:00-05", "customer "),
]


def _members(conn, project, table: str) -> dict[str, set[str]]:
    rel = warehouse.table_relation(warehouse.table_name(table), "id", SCHEMA, [], conn=conn,
                                   name=table)
    warehouse.evaluate(project, conn, {"crm": rel}, NOW)
    flags = ", ".join(f'"m:{s}"' for s in WHERE)
    rows = conn.execute(f"SELECT _key, {flags} FROM eval_crm").fetchall()
    return {s: {r[0] for r in rows if r[i + 1]} for i, s in enumerate(WHERE)}


def test_typed_columns_equal_their_text(tmp_path, pg_db):
    mapping = {"version": 1, "engine": "postgres",
               "sources": {"crm": {"type": "csv", "path": "unused.csv", "key": "id"}},
               "segments": {s: {"where": w} for s, w in WHERE.items()}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping), encoding="utf-8")
    project = load(tmp_path / "m.yaml")
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'America/New_York'")  # the engine must not depend on it
        conn.execute("CREATE TABLE typed (id text, n integer, price numeric(8, 2), "
                     "flag boolean, d date, ts timestamptz, stage varchar(20))")
        conn.execute("CREATE TABLE texts (id text, n text, price text, flag text, d text, "
                     "ts text, stage text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO typed VALUES (%s, %s, %s, %s, %s, %s, %s)", ROWS)
            cur.executemany("INSERT INTO texts VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            [tuple(None if v is None else str(v).replace(" ", "T", 1)
                                   if i == 5 else str(v).lower() if i == 3 else v
                                   for i, v in enumerate(r)) for r in ROWS])
        typed = _members(conn, project, "typed")
        assert typed == _members(conn, project, "texts")
    assert typed == {"n5": {"a", "d"}, "price": {"a", "d"}, "flag": {"a", "d"},
                     "recent_day": {"a", "d"}, "after": {"a", "b", "d"}, "customer": {"a", "d"},
                     "no_ts": {"c"}}
