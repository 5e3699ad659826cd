"""The shared Postgres store against a real server (tests/pgserver.py): migrations, the lock
per mapping (exit 4 naming the holder), two mappings sharing one store, a runner killed
mid-push and re-run from another folder, and every command on the shared store. Also the
mapping-name keying of the embedded DuckDB store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psycopg
import pytest

from crmsync.sync.store.database import EMBEDDED_ONLY, MIGRATIONS, Store
from crmsync.sync.store.shared import PG_ONLY, PgStore

from conftest import read_csv_keys, write_csv, write_mapping


def mapping(folder: Path, *, store: str | None = "${STORE_URL}", segment_stage="customer",
            n_batch: int | None = None, contacts: Path | None = None,
            out: Path | str = "out/cust.csv", name: str | None = None) -> dict:
    m = {"version": 1}
    if name:
        m["name"] = name
    if store:
        m["store"] = store
    m.update({
        "sources": {"crm": {"type": "csv", "path": str(contacts or folder / "contacts.csv"),
                            "key": "id", "identity": {"email": "email"}}},
        "segments": {"s": {"description": "d", "owner": "o@x.example",
                           "where": {"field": "stage", "eq": segment_stage}}},
        "destinations": [{"name": "cust", "segment": "s", "type": "csv", "path": str(out),
                          "identifiers": ["email"],
                          **({"batch_size": n_batch} if n_batch else {})}],
    })
    return m


def contacts(path: Path, n: int, stage=lambda i: "customer" if i % 2 else "lead") -> Path:
    return write_csv(path, ["id", "email", "stage"],
                     [[f"k{i:05d}", f"u{i}@x.example", stage(i)] for i in range(n)])


def want(n: int, stage=lambda i: "customer" if i % 2 else "lead", seg="customer") -> set[str]:
    return {f"k{i:05d}" for i in range(n) if stage(i) == seg}


def crmsync(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "crmsync.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **env}, cwd=cwd)


def ledger(dsn: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with psycopg.connect(dsn) as conn:
        for m, k in conn.execute("SELECT mapping, key FROM crmsync.ledger WHERE state = "
                                 "'member'").fetchall():
            out.setdefault(m, set()).add(k)
    return out


def test_migrations_on_a_fresh_schema_and_again(pg_db):
    store = PgStore(pg_db, "acme")
    store.close()
    with psycopg.connect(pg_db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM crmsync._migrations ORDER BY "
                                             "applied_at, name")]
        pk = conn.execute(
            "SELECT array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum)) FROM "
            "pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = "
            "ANY(i.indkey) WHERE i.indrelid = 'crmsync.ledger'::regclass AND i.indisprimary"
        ).fetchone()[0]
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'crmsync' AND table_name = 'sources' ORDER BY ordinal_position")]
    assert sorted(names) == sorted([n for n, _ in MIGRATIONS if n not in EMBEDDED_ONLY]
                                   + [n for n, _ in PG_ONLY])
    assert pk == ["mapping", "dest", "key"]
    assert cols[0] == "mapping" and "layout" in cols and "warnings" in cols
    PgStore(pg_db, "acme").close()  # a second open migrates nothing
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SELECT count(*) FROM crmsync._migrations").fetchone()[0] == \
            len(names)


def test_every_command_on_the_shared_store(cli, tmp_path, pg_db):
    contacts(tmp_path / "contacts.csv", 40)
    m = write_mapping(tmp_path / "m.yaml", mapping(tmp_path))
    env = {"STORE_URL": pg_db}
    first = cli.json("run", "-c", m, env=env)
    assert first["exit_code"] == 0, first
    assert read_csv_keys(tmp_path / "out/cust.csv") == want(40)
    assert not (tmp_path / ".crmsync").exists()  # nothing local
    again = cli.json("run", "-c", m, env=env)["destinations"]["cust"]
    assert (again["add"], again["remove"]) == (0, 0)
    assert ledger(pg_db) == {"m": want(40)}

    hist = cli.json("history", "-c", m, env=env)
    assert [r["status"] for r in hist] == ["ok", "ok"]
    assert hist[1]["destinations"][0]["adds"] == len(want(40))
    seg = cli.json("segments", "-c", m, env=env)
    assert "s" in json.dumps(seg)
    res = cli("explain", "k00001", "-c", m, env=env)
    assert res.exit_code == 0 and "k00001" in res.stdout
    res = cli("report", "-c", m, "-o", tmp_path / "r.html", env=env)
    assert res.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 1000

    contacts(tmp_path / "contacts.csv", 40, stage=lambda i: "customer" if i % 4 == 1 else "x")
    assert cli("plan", "-c", m, "-o", tmp_path / "plan.json", env=env).exit_code == 0
    res = cli("apply", tmp_path / "plan.json", "-c", m, env=env)
    assert res.exit_code == 0, res.stderr
    assert read_csv_keys(tmp_path / "out/cust.csv") == {f"k{i:05d}" for i in range(40)
                                                         if i % 4 == 1}
    assert cli("resync", "cust", "-c", m, env=env).exit_code == 0
    assert ledger(pg_db) == {}
    assert cli.json("run", "-c", m, env=env)["exit_code"] == 0
    assert ledger(pg_db)["m"] == {f"k{i:05d}" for i in range(40) if i % 4 == 1}


def test_second_run_of_a_mapping_exits_4_naming_the_holder(cli, tmp_path, pg_db):
    contacts(tmp_path / "contacts.csv", 10)
    m = write_mapping(tmp_path / "m.yaml", mapping(tmp_path))
    env = {"STORE_URL": pg_db}
    holder = PgStore(pg_db, "m")
    holder.acquire()
    try:
        res = cli("run", "-c", m, env=env)
        assert res.exit_code == 4
        err = res.stderr
        assert "lock" in err and "'m'" in err and f"pid {os.getpid()}" in err, err
        assert "host " in err and "started 20" in err
        # another mapping on the same store is not blocked
        other = write_mapping(tmp_path / "other.yaml", mapping(tmp_path, out="out/o.csv"))
        assert cli("run", "-c", other, env=env).exit_code == 0
    finally:
        holder.close()
    assert cli("run", "-c", m, env=env).exit_code == 0


def test_a_killed_holder_releases_its_lock(tmp_path, pg_db):
    code = ("import sys, time; from crmsync.sync.store.shared import PgStore; "
            "s = PgStore(sys.argv[1], 'm'); s.acquire(); print('held', flush=True); "
            "time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, pg_db], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"held"
    other = PgStore(pg_db, "m")
    try:
        with pytest.raises(Exception, match="lock"):
            other.acquire()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        for _ in range(100):  # the server notices the dead session and frees its lock
            try:
                other.acquire()
                break
            except Exception:
                time.sleep(0.05)
        assert other._held
    finally:
        other.close()


def test_two_runs_started_at_the_same_moment(tmp_path, pg_db):
    n = 20000
    contacts(tmp_path / "contacts.csv", n)
    m = write_mapping(tmp_path / "m.yaml", mapping(tmp_path))
    env = {"STORE_URL": pg_db}
    procs = [crmsync("run", "-c", str(m), env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 4], [o[1].decode()[-500:] for o in outs]
    loser = next(o for p, o in zip(procs, outs, strict=True) if p.returncode == 4)
    assert b"lock" in loser[1] and b"pid " in loser[1]
    assert read_csv_keys(tmp_path / "out/cust.csv") == want(n)
    assert ledger(pg_db) == {"m": want(n)}
    p = crmsync("run", "-c", str(m), env=env)  # nothing corrupted: a clean no-op
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0 and b"+0 -0 ~0" in err, err.decode()


def test_two_mappings_on_one_store_run_concurrently_with_their_own_ledgers(tmp_path, pg_db):
    n = 5000
    contacts(tmp_path / "contacts.csv", n)
    a = write_mapping(tmp_path / "a.yaml", mapping(tmp_path, out="out/a.csv"))
    b = write_mapping(tmp_path / "b.yaml", mapping(tmp_path, out="out/b.csv",
                                                   segment_stage="lead"))
    env = {"STORE_URL": pg_db}
    procs = [crmsync("run", "-c", str(x), env=env) for x in (a, b)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-500:] for o in outs]
    # the same destination name 'cust' in both: two ledgers, never one row shared
    assert ledger(pg_db) == {"a": want(n), "b": want(n, seg="lead")}
    assert read_csv_keys(tmp_path / "out/a.csv") == want(n)
    assert read_csv_keys(tmp_path / "out/b.csv") == want(n, seg="lead")


def _rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except OSError:
        return 0


@pytest.mark.parametrize("kill_at", [1, 200])
def test_killed_mid_push_then_rerun_from_another_folder_converges(tmp_path, pg_db, kill_at):
    n = 1000
    data, out = tmp_path / "data" / "contacts.csv", tmp_path / "out" / "cust.csv"
    data.parent.mkdir()
    contacts(data, n)
    env = {"STORE_URL": pg_db}
    one, two = tmp_path / "runner1", tmp_path / "runner2"
    one.mkdir()
    two.mkdir()
    m1 = write_mapping(one / "acme.yaml", mapping(one, contacts=data, out=out, n_batch=20))
    m2 = write_mapping(two / "acme.yaml", mapping(two, contacts=data, out=out, n_batch=20))
    p = crmsync("run", "-c", str(m1), env=env, cwd=one)
    deadline = time.monotonic() + 120
    while p.poll() is None and _rows(out) < kill_at and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    assert kill_at <= _rows(out) < len(want(n))  # killed in the middle of the push
    q = crmsync("run", "-c", str(m2), env=env, cwd=two)
    o, e = q.communicate(timeout=300)
    assert q.returncode == 0, e.decode()[-800:]
    assert read_csv_keys(out) == want(n)
    assert ledger(pg_db) == {"acme": want(n)}
    q = crmsync("history", "-c", str(m2), "--json", env=env, cwd=two)
    o, _ = q.communicate(timeout=60)
    assert [r["status"] for r in json.loads(o)] == ["ok", "interrupted"]


# ---------------------------------------------------------------- the embedded store


def test_duckdb_store_keys_rows_by_mapping_name(cli, tmp_path):
    """Two mapping files in one folder share the default store: same destination name,
    separate ledgers, snapshots and history."""
    contacts(tmp_path / "contacts.csv", 30)
    a = write_mapping(tmp_path / "a.yaml", mapping(tmp_path, store=None, out="out/a.csv"))
    b = write_mapping(tmp_path / "b.yaml", mapping(tmp_path, store=None, out="out/b.csv",
                                                   segment_stage="lead"))
    assert cli("run", "-c", a).exit_code == 0
    assert cli("run", "-c", b).exit_code == 0
    assert cli.json("run", "-c", a)["destinations"]["cust"]["calls"] == 0
    assert cli.json("run", "-c", b)["destinations"]["cust"]["calls"] == 0
    assert read_csv_keys(tmp_path / "out/a.csv") == want(30)
    assert read_csv_keys(tmp_path / "out/b.csv") == want(30, seg="lead")
    con = duckdb.connect(str(tmp_path / ".crmsync/state.duckdb"), read_only=True)
    try:  # the first mapping owns main; the other has its own schema
        assert con.execute("SELECT name FROM main._mapping").fetchall() == [("a",)]
        got = {s: {k for (k,) in con.execute(f"SELECT key FROM {s}.ledger").fetchall()}
               for s in ("main", "b")}
        runs = {s: con.execute(f"SELECT count(*) FROM {s}.runs").fetchone()[0]
                for s in ("main", "b")}
    finally:
        con.close()
    assert got == {"main": want(30), "b": want(30, seg="lead")}
    assert runs == {"main": 2, "b": 2}
    assert len(cli.json("history", "-c", b)) == 2
    # name: overrides the file name
    c = write_mapping(tmp_path / "c.yaml", mapping(tmp_path, store=None, out="out/a.csv",
                                                   name="a"))
    assert cli.json("run", "-c", c)["destinations"]["cust"]["calls"] == 0


def test_an_older_duckdb_store_is_taken_by_its_mapping(cli, tmp_path):
    """A store written before mapping names keeps its ledger and history: its rows go to
    the first mapping that opens it; another mapping starts empty beside it."""
    contacts(tmp_path / "contacts.csv", 30)
    m = write_mapping(tmp_path / "m.yaml", mapping(tmp_path, store=None))
    assert cli("run", "-c", m).exit_code == 0
    path = tmp_path / ".crmsync/state.duckdb"
    con = duckdb.connect(str(path))  # as an older version left it: no owner recorded
    con.execute("DROP TABLE main._mapping")
    con.close()
    res = cli.json("run", "-c", m)
    assert res["destinations"]["cust"]["calls"] == 0
    other = write_mapping(tmp_path / "other.yaml", mapping(tmp_path, store=None,
                                                           out="out/o.csv"))
    assert cli.json("run", "-c", other)["destinations"]["cust"]["adds"] == len(want(30))
    s = Store.open(path, read_only=True)
    assert len(s.history()) == 2  # main: m's two runs
    s.close()
