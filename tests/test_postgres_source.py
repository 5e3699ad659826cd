"""The `postgres` source against a real PostgreSQL server (tests/pgserver.py): typing by column
type, cursor incrementals with equal timestamps at the boundary, deletions by key scan, a
read-only `query:`, and bad input (one line, exit 2, the password never printed)."""

from __future__ import annotations

import duckdb
import psycopg
import pytest

from crmsync.sync.store.database import Store
from crmsync.sync.store.snapshot import snap

from conftest import read_csv_keys, write_mapping

TABLE = """
CREATE SCHEMA analytics;
CREATE TABLE analytics.contacts (
    contact_id   bigint,
    email        text,
    name         varchar(80),
    code         char(6),
    employees    integer,
    revenue      numeric(12, 2),
    score        real,
    ratio        double precision,
    fee          money,
    active       boolean,
    signup       date,
    seen_at      timestamp,
    updated_at   timestamptz,
    tags         text[],
    zip          text,
    stage        text
);
"""


def insert(dsn: str, rows: list[tuple], sql: str | None = None) -> None:
    with psycopg.connect(dsn) as conn:
        if sql:
            conn.execute(sql)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO analytics.contacts (contact_id, email, name, code, employees, "
                "revenue, score, ratio, fee, active, signup, seen_at, updated_at, tags, zip, "
                "stage) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows)


def row(i: int, updated: str = "2026-11-01 10:00:00+00", stage: str = "customer") -> tuple:
    return (i, f"u{i}@x.example", f"Name {i}", f"C{i:05d}", 10 * i, f"{i}.50", 1.25 * i,
            0.5, f"{i}.10", i % 2 == 0, "2026-01-15", "2026-03-01 12:30:00",
            updated, ["Gold", "vip"] if i % 3 == 0 else [], f"0{i:04d}", stage)


def mapping(dsn_var: str = "WAREHOUSE_DSN", **source) -> dict:
    src = {"connection": "warehouse", "table": "analytics.contacts", "key": "contact_id",
           "identity": {"email": "email"}, **source}
    return {
        "version": 1,
        "connections": {"warehouse": {"type": "postgres", "dsn": "${" + dsn_var + "}"}},
        "sources": {"crm": src},
        "segments": {"customers": {"description": "paying", "owner": "revops@x.example",
                                   "where": {"field": "stage", "eq": "customer"}}},
        "destinations": [{"name": "cust", "segment": "customers", "type": "csv",
                          "path": "out/cust.csv", "identifiers": ["email"]}],
    }


@pytest.fixture
def wh(pg_db):
    with psycopg.connect(pg_db) as conn:
        conn.execute(TABLE)
    return pg_db


def snapshot(tmp_path) -> dict[str, dict]:
    store = Store.open(tmp_path / ".crmsync/state.duckdb", read_only=True)
    try:
        cur = store.con.execute(f"SELECT * FROM {snap('crm')} ORDER BY _key")
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    finally:
        store.close()


def test_columns_are_typed_by_their_postgres_types(cli, tmp_path, wh):
    insert(wh, [row(1), row(2), row(3)])
    # NULLs in every column but the key
    insert(wh, [(4, *([None] * 15))])
    m = write_mapping(tmp_path / "m.yaml", mapping(schema={"zip": "number"}))
    env = {"WAREHOUSE_DSN": wh}
    res = cli("plan", "-c", m, env=env)
    assert res.exit_code == 0, res.output
    store = Store.open(tmp_path / ".crmsync/state.duckdb", read_only=True)
    try:
        _, schema = store.schema("crm")
    finally:
        store.close()
    assert {k: str(v) for k, v in schema.items()} == {
        "contact_id": "string", "email": "string", "name": "string", "code": "string",
        "employees": "number", "revenue": "number", "score": "number", "ratio": "number",
        "fee": "number", "active": "bool", "signup": "date", "seen_at": "datetime",
        "updated_at": "datetime", "tags": "multi", "zip": "number", "stage": "string"}
    snap_rows = snapshot(tmp_path)
    r3 = snap_rows["3"]
    assert (r3["employees"], r3["revenue"], r3["score"], r3["fee"]) == (30, 3.5, 3.75, 3.1)
    assert r3["active"] is False and snap_rows["2"]["active"] is True
    assert str(r3["signup"]) == "2026-01-15 00:00:00"
    assert str(r3["seen_at"]) == "2026-03-01 12:30:00"
    assert str(r3["updated_at"]) == "2026-11-01 10:00:00"
    assert r3["tags"] == ["gold", "vip"] and snap_rows["1"]["tags"] is None
    assert r3["code"] == "C00003"  # char(n) padding is not part of the value
    assert r3["zip"] == 3.0 and r3["t:zip"] if "t:zip" in r3 else True
    assert all(v in (None, False) for k, v in snap_rows["4"].items()
               if k != "_key" and not k.startswith("u:"))
    assert res.exit_code == 0


def test_timestamp_without_offset_is_utc_whatever_the_server_time_zone(cli, tmp_path, wh, pg):
    name = wh.rsplit("/", 1)[1]
    pg.sql(f"ALTER DATABASE \"{name}\" SET timezone TO 'America/New_York'")
    insert(wh, [row(1, updated="2026-11-01 10:00:00-05")])
    m = write_mapping(tmp_path / "m.yaml", mapping())
    assert cli("plan", "-c", m, env={"WAREHOUSE_DSN": wh}).exit_code == 0
    r = snapshot(tmp_path)["1"]
    assert str(r["seen_at"]) == "2026-03-01 12:30:00"  # as written: UTC
    assert str(r["updated_at"]) == "2026-11-01 15:00:00"  # the instant, in UTC


def test_cursor_incremental_equal_timestamps_at_the_boundary_and_deletions(cli, tmp_path, wh):
    t1, t2 = "2026-11-01 10:00:00+00", "2026-11-01 11:00:00+00"
    insert(wh, [row(i, updated=t1) for i in range(1, 5)])
    m = write_mapping(tmp_path / "m.yaml", mapping(cursor="updated_at"))
    env = {"WAREHOUSE_DSN": wh}
    first = cli.json("run", "-c", m, env=env)
    assert first["exit_code"] == 0
    assert read_csv_keys(tmp_path / "out/cust.csv") == {"1", "2", "3", "4"}
    store = Store.open(tmp_path / ".crmsync/state.duckdb", read_only=True)
    v1 = store.snapshot_version()
    store.close()

    # nothing changed: the boundary rows (same key, same content) are not read again
    again = cli.json("run", "-c", m, env=env)
    assert again["destinations"]["cust"]["calls"] == 0
    store = Store.open(tmp_path / ".crmsync/state.duckdb", read_only=True)
    assert store.snapshot_version() == v1  # a plan file made before stays valid
    store.close()

    # a row committed late at the same timestamp as the last seen one, another row updated
    # at that timestamp, a newer row, and a deletion
    with psycopg.connect(wh) as conn:
        conn.execute("UPDATE analytics.contacts SET stage = 'lead' WHERE contact_id = 2")
        conn.execute("DELETE FROM analytics.contacts WHERE contact_id = 3")
    insert(wh, [row(5, updated=t1), row(6, updated=t2)])
    res = cli.json("run", "-c", m, env=env)
    d = res["destinations"]["cust"]
    assert (d["adds"], d["removes"]) == (2, 2), d
    assert read_csv_keys(tmp_path / "out/cust.csv") == {"1", "4", "5", "6"}


def test_full_pull_at_least_daily_catches_rows_committed_late(cli, tmp_path, wh):
    insert(wh, [row(1, updated="2026-11-01 10:00:00+00")])
    m = write_mapping(tmp_path / "m.yaml", mapping(cursor="updated_at"))
    env = {"WAREHOUSE_DSN": wh}
    cli("run", "-c", m, "--as-of", "2026-11-02T00:00:00Z", env=env)
    insert(wh, [row(2, updated="2026-10-01 00:00:00+00")])  # older than the cursor
    cli("run", "-c", m, "--as-of", "2026-11-02T06:00:00Z", env=env)
    assert read_csv_keys(tmp_path / "out/cust.csv") == {"1"}  # incremental: not seen yet
    cli("run", "-c", m, "--as-of", "2026-11-03T00:00:00Z", env=env)
    assert read_csv_keys(tmp_path / "out/cust.csv") == {"1", "2"}  # the daily full pull


def test_read_only_query(cli, tmp_path, wh):
    insert(wh, [row(1), row(2, stage="lead"), row(3)])
    q = ("SELECT contact_id AS id, lower(email) AS email, stage FROM analytics.contacts "
         "WHERE contact_id <> 3;")
    m = write_mapping(tmp_path / "m.yaml", mapping(table=None, query=q, key="id"))
    res = cli.json("run", "-c", m, env={"WAREHOUSE_DSN": wh})
    assert res["exit_code"] == 0
    assert read_csv_keys(tmp_path / "out/cust.csv") == {"1"}


@pytest.mark.parametrize("query", [
    "DELETE FROM analytics.contacts RETURNING contact_id AS id, email, stage",
    "WITH d AS (DELETE FROM analytics.contacts RETURNING *) "
    "SELECT contact_id AS id, email, stage FROM d",
    "SELECT nextval('analytics.s')::text AS id, 'a' AS email, 'customer' AS stage",
    "SELECT 1 AS id, 'a' AS email, 'customer' AS stage; DELETE FROM analytics.contacts",
])
def test_a_query_that_writes_is_refused(cli, tmp_path, wh, query):
    with psycopg.connect(wh) as conn:
        conn.execute("CREATE SEQUENCE analytics.s")
    insert(wh, [row(1)])
    m = write_mapping(tmp_path / "m.yaml", mapping(table=None, query=query, key="id"))
    res = cli("run", "-c", m, env={"WAREHOUSE_DSN": wh})
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "read-only" in err or "one read-only SELECT" in err, err
    with psycopg.connect(wh) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.contacts").fetchone()[0] == 1
        assert conn.execute("SELECT last_value FROM analytics.s").fetchone()[0] == 1


def one_error(res) -> str:
    print("ERR", res.stderr.strip())
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_clear_line_and_never_the_password(cli, tmp_path, wh, pg):
    insert(wh, [row(1)])
    m = write_mapping(tmp_path / "m.yaml", mapping())
    name = wh.rsplit("/", 1)[1]
    wrong = pg.dsn_with(password="Sup3r-Secret-Pw", database=name)
    err = one_error(cli("plan", "-c", m, env={"WAREHOUSE_DSN": wrong}))
    assert "password authentication failed" in err and "Sup3r-Secret-Pw" not in err
    assert "connections.warehouse.dsn" in err and "WAREHOUSE_DSN" in err

    closed = pg.dsn_with(password="Sup3r-Secret-Pw", database=name, port=1)
    err = one_error(cli("plan", "-c", m, env={"WAREHOUSE_DSN": closed}))
    assert "cannot connect" in err and "Sup3r-Secret-Pw" not in err

    env = {"WAREHOUSE_DSN": wh}
    m = write_mapping(tmp_path / "m.yaml", mapping(table="analytics.nope"))
    assert "does not exist" in one_error(cli("plan", "-c", m, env=env))
    m = write_mapping(tmp_path / "m.yaml", mapping(key="contact"))
    err = one_error(cli("plan", "-c", m, env=env))
    assert "sources.crm.key" in err and "contact_id" in err
    m = write_mapping(tmp_path / "m.yaml", mapping(cursor="updated"))
    err = one_error(cli("plan", "-c", m, env=env))
    assert "sources.crm.cursor" in err and "updated_at" in err
    assert pg.password not in err


def test_validate_stays_offline_but_checks_the_options(cli, tmp_path):
    m = write_mapping(tmp_path / "m.yaml", mapping(key=None))
    env = {"WAREHOUSE_DSN": "postgresql://u:pw@127.0.0.1:1/db"}  # nothing listens there
    res = cli("validate", "-c", m, env=env)
    assert res.exit_code == 2 and "needs key:" in res.output
    m = write_mapping(tmp_path / "m.yaml", mapping(query="SELECT 1"))
    res = cli("validate", "-c", m, env=env)
    assert res.exit_code == 2 and "exactly one of table:" in res.output
    m = write_mapping(tmp_path / "m.yaml", mapping())
    assert cli("validate", "-c", m, env=env).exit_code == 0


def test_duplicate_and_null_keys_are_counted_warnings(cli, tmp_path, wh):
    insert(wh, [row(1), row(1), row(2), (None, "n@x.example", *([None] * 13), "customer")])
    m = write_mapping(tmp_path / "m.yaml", mapping())
    res = cli.json("plan", "-c", m, env={"WAREHOUSE_DSN": wh})
    text = " ".join(res["warnings"])
    assert "1 row(s) have no key" in text and "1 row(s) repeat the key" in text, text
    assert res["segments"]["customers"]["matched"] == 2


def test_copy_output_is_read_by_duckdb_with_quotes_and_newlines(cli, tmp_path, wh):
    odd = 'He said "hi",\nthen; left'
    insert(wh, [(1, "a@x.example", odd, *([None] * 12), "customer")])
    m = write_mapping(tmp_path / "m.yaml", mapping())
    assert cli("plan", "-c", m, env={"WAREHOUSE_DSN": wh}).exit_code == 0
    assert snapshot(tmp_path)["1"]["name"] == odd
    assert duckdb.__version__
