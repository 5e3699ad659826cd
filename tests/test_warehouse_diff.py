"""engine: postgres — the diff against a ledger in the same database fetches only changes.

A real Postgres server (tests/pgserver.py); the contacts table and a ledger table (dest, key,
value, state) are made by the test, as a Postgres store would hold them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml

psycopg = pytest.importorskip("psycopg")

from crmsync.sync.mapping.loader import load  # noqa: E402
from crmsync.sync.mapping.model import FieldType  # noqa: E402
from crmsync.sync.pipeline.warehouse import Diff, diff  # noqa: E402
from crmsync.sync.segments import warehouse  # noqa: E402

NOW = datetime(2026, 3, 10, 12, 0, 0)
SCHEMA = {"id": FieldType.string, "email": FieldType.string, "score": FieldType.number,
          "ok": FieldType.bool}


def _project(tmp: Path, mode: str = "mirror"):
    mapping = {
        "version": 1, "engine": "postgres",
        "sources": {"crm": {"type": "csv", "path": "unused.csv", "key": "id",
                            "schema": {"score": "number", "ok": "bool"},
                            "identity": {"email": "email"}}},
        "segments": {"high": {"where": {"field": "score", "gte": 50}, "holdout": "10%"}},
        "suppressions": {"optout": {"where": {"field": "ok", "eq": False}}},
        "destinations": [{"name": "high-file", "segment": "high", "type": "csv",
                          "path": "out/high.csv", "identifiers": ["email"], "mode": mode}],
    }
    path = tmp / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return load(path)


def _setup(conn, n: int = 400) -> None:
    conn.execute("CREATE TABLE contacts (id text, email text, score text, ok text)")
    conn.execute(
        "INSERT INTO contacts SELECT 'c' || lpad(i::text, 4, '0'), 'u' || i || '@x.example', "
        "(i %% 100)::text, CASE WHEN i %% 17 = 0 THEN 'no' ELSE 'yes' END "
        "FROM generate_series(1, %s) i", [n])
    conn.execute("CREATE TABLE ledger (dest text, key text, value text, state text, "
                 "PRIMARY KEY (dest, key))")


def _plan(project, conn):
    rel = warehouse.table_relation(warehouse.table_name("contacts"), "id", SCHEMA, [], conn=conn)
    ev = warehouse.evaluate(project, conn, {"crm": rel}, NOW)
    return ev, diff(ev, project.mapping.destinations[0], "ledger")


def _sync(conn, d: Diff) -> None:
    """What a push that succeeded records: adds become members, removes leave."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ledger VALUES ('high-file', %s, '', 'member')",
                        [(a[0],) for a in d.adds])
        cur.executemany("DELETE FROM ledger WHERE dest = 'high-file' AND key = %s",
                        [(r[0],) for r in d.removes])


def _expected(conn) -> set[str]:
    rows = conn.execute("SELECT id, score::float, ok FROM contacts").fetchall()
    import hashlib

    def held(k: str) -> bool:
        return int(hashlib.md5(f"high:{k}".encode()).hexdigest()[:8], 16) < 0.1 * 2**32

    return {k for k, s, ok in rows if s >= 50 and ok != "no" and not held(k)}


def test_diff_fetches_only_changes(tmp_path, pg_db):
    project = _project(tmp_path)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        _setup(conn)
        _, first = _plan(project, conn)
        want = _expected(conn)
        assert {a[0] for a in first.adds} == want and first.removes == []
        assert first.desired == len(want) and first.unchanged == 0
        assert all(a[2].endswith("@x.example") for a in first.adds)  # identifiers fetched
        _sync(conn, first)
        _, again = _plan(project, conn)
        assert (again.adds, again.removes, again.unchanged) == ([], [], len(want))
        # 1% of the rows change: some leave the segment, some join it
        conn.execute("UPDATE contacts SET score = '0' WHERE id IN ('c0051', 'c0052', 'c0060')")
        conn.execute("UPDATE contacts SET score = '99' WHERE id = 'c0010'")
        _, churn = _plan(project, conn)
        now_want = _expected(conn)
        assert {a[0] for a in churn.adds} == now_want - want
        assert {r[0] for r in churn.removes} == want - now_want
        assert len(churn.adds) + len(churn.removes) <= 4
        assert churn.unchanged == len(want & now_want)


def test_diff_resends_unacknowledged_and_keeps_add_only(tmp_path, pg_db):
    with psycopg.connect(pg_db, autocommit=True) as conn:
        _setup(conn)
        project = _project(tmp_path)
        _, first = _plan(project, conn)
        keys = sorted(a[0] for a in first.adds)
        # a batch sent but never acknowledged (a crash), and a member not desired any more
        conn.execute("INSERT INTO ledger VALUES ('high-file', %s, '', 'pending')", [keys[0]])
        conn.execute("INSERT INTO ledger VALUES ('high-file', 'gone', '', 'member')")
        conn.execute("INSERT INTO ledger VALUES ('other-dest', 'gone2', '', 'member')")
        _, d = _plan(project, conn)
        assert keys[0] in {a[0] for a in d.adds}
        assert [r[0] for r in d.removes] == ["gone"]  # another destination's rows untouched
        (tmp_path / "add_only").mkdir()
        _, kept = _plan(_project(tmp_path / "add_only", mode="add_only"), conn)
        assert kept.removes == []
