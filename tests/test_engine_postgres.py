"""`engine: postgres` through the command line, against a real PostgreSQL server
(tests/pgserver.py): the same answers as the embedded engine on the same table (figures and
files, first run and after changes), `plan -o` / `apply`, `explain`, `segments`, `history`,
`resync`, a Meta audience (identifiers hashed in Python after the fetch), only the changed
rows fetched, and the bad input that must stop before any call.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

psycopg = pytest.importorskip("psycopg")

from conftest import read_csv_keys, write_mapping  # noqa: E402

TABLE = """
CREATE SCHEMA analytics;
CREATE TABLE analytics.contacts (
    id text, email text, stage text, employees integer, orders integer, revenue numeric(10, 2),
    last_order date, consent boolean, optout text, tags text[]
);
"""
NOW = "2026-11-01T12:00:00Z"


def rows(n: int) -> list[tuple]:
    out = []
    for i in range(1, n + 1):
        out.append((f"c{i:04d}", f"User{i}@Example.com" if i % 23 else None,
                    ["customer", "lead", " Customer ", "mql"][i % 4], (i * 37) % 900,
                    i % 9, f"{(i * 53) % 1000}.25", f"2026-{1 + i % 10:02d}-{1 + i % 27:02d}",
                    None if i % 11 == 0 else i % 5 != 0, "yes" if i % 13 == 0 else "no",
                    ["vip", "beta"] if i % 3 == 0 else ["beta"]))
    return out


def load(dsn: str, data: list[tuple]) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE analytics.contacts")
        cur.executemany("INSERT INTO analytics.contacts VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", data)


def mapping(folder: Path, engine: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "blocklist.csv").write_text("email\nuser8@example.com\nc0010\n", encoding="utf-8")
    m = {
        "version": 1, "name": f"acme-{engine}",
        "connections": {"warehouse": {"type": "postgres", "dsn": "${WAREHOUSE_DSN}"}},
        "sources": {"crm": {"connection": "warehouse", "table": "analytics.contacts",
                            "key": "id", "schema": {"optout": "bool"},
                            "identity": {"email": "email"}}},
        "scores": {"rfm": {"type": "rfm", "recency": "last_order", "frequency": "orders",
                           "monetary": "revenue"}},
        "segments": {
            "champions": {"description": "best", "owner": "revops@x.example",
                          "where": {"field": "rfm.segment", "in": ["Champions", "Loyal"]}},
            "customers": {"description": "paying", "owner": "revops@x.example",
                          "where": {"all": [{"field": "stage", "eq": "customer"},
                                            {"field": "tags", "has_any": ["vip", "beta"]}]},
                          "holdout": "10%"},
            "big": {"description": "large", "owner": "revops@x.example",
                    "where": {"field": "employees", "gte": 300}}},
        "groups": {"tiers": {"exclusive": True, "segments": ["champions", "customers"]}},
        "suppressions": {"optout": {"where": {"field": "optout", "eq": True}},
                         "blocklist": {"file": "blocklist.csv"}},
        "destinations": [
            {"name": "champs", "segment": "champions", "type": "csv", "path": "out/champs.csv",
             "identifiers": ["email"], "mode": "mirror", "consent": "consent"},
            {"name": "tiers", "group": "tiers", "type": "csv", "path": "out/tiers.csv",
             "identifiers": ["email"]},
            {"name": "big", "segment": "big", "type": "csv", "path": "out/big.csv",
             "identifiers": ["email"], "mode": "add_only"}],
    }
    if engine == "postgres":
        m["engine"] = "postgres"
    return write_mapping(folder / "acme.yaml", m)


FIGURES = ("desired", "add", "remove", "update", "unchanged", "suppressed",
           "no_consent", "no_identifier")


def figures(plan: dict) -> dict:
    return {n: {k: d[k] for k in FIGURES} for n, d in plan["destinations"].items()}


@pytest.fixture
def wh(pg_db):
    with psycopg.connect(pg_db) as conn:
        conn.execute(TABLE)
    load(pg_db, rows(240))
    return pg_db


def test_same_answers_as_the_embedded_engine(cli, tmp_path, wh):
    env = {"WAREHOUSE_DSN": wh}
    pg, duck = mapping(tmp_path / "pg", "postgres"), mapping(tmp_path / "duck", "duckdb")

    def both(*args: str) -> tuple[dict, dict]:
        a = cli.json(*args, "-c", pg, "--as-of", NOW, env=env)
        b = cli.json(*args, "-c", duck, "--as-of", NOW, env=env)
        return a, b

    def same_files() -> None:
        for name in ("champs", "tiers", "big"):
            a = (tmp_path / "pg/out" / f"{name}.csv").read_bytes()
            assert a == (tmp_path / "duck/out" / f"{name}.csv").read_bytes(), name

    a, b = both("plan")
    assert a["segments"] == b["segments"] and figures(a) == figures(b)
    assert a["segments"]["customers"]["held_out"] > 0
    assert all(d["add"] > 0 for d in a["destinations"].values())
    a, b = both("run")
    assert a["exit_code"] == b["exit_code"] == 0, a
    same_files()
    a, b = both("plan")
    assert all(d["add"] == d["remove"] == d["update"] == 0 for d in a["destinations"].values())
    assert figures(a) == figures(b)
    # changes: members leave and join, an email changes (an update), rows go, rows come
    data = rows(240)
    data = [r for r in data if r[0] not in ("c0003", "c0004")] + [
        (f"c9{i:03d}", f"new{i}@example.com", "customer", 500, 8, "999.00", "2026-10-30",
         True, "no", ["vip"]) for i in range(5)]
    data = [(r[0], "Changed@Example.com", *r[2:]) if r[0] == "c0006" else
            (r[0], r[1], "lead", *r[3:]) if r[0] in ("c0012", "c0015") else r for r in data]
    load(wh, data)
    a, b = both("plan")
    assert figures(a) == figures(b)
    assert sum(d["add"] + d["remove"] + d["update"] for d in a["destinations"].values()) > 0
    assert a["destinations"]["big"]["remove"] == 0  # add_only
    a, b = both("run")
    assert a["exit_code"] == b["exit_code"] == 0
    same_files()
    assert [r["exit_code"] for r in cli.json("history", "-c", pg, env=env)] == [0, 0]
    seg_a = cli.json("segments", "-c", pg, env=env)
    seg_b = cli.json("segments", "-c", duck, env=env)
    assert seg_a["segments"] == seg_b["segments"] and seg_a["overlap"] == seg_b["overlap"]
    ex_a = cli("explain", "c0009", "-c", pg, "--as-of", NOW, env=env)
    ex_b = cli("explain", "c0009", "-c", duck, "--as-of", NOW, env=env)
    assert ex_a.exit_code == 0 and ex_a.stdout == ex_b.stdout
    assert "segment champions" in ex_a.stdout and "destination champs" in ex_a.stdout
    for outcome in ("consent", "revenue"):  # lift: the groups, the outcomes read in place
        lift_a = cli.json("lift", "customers", "--outcome", outcome, "-c", pg, env=env)
        lift_b = cli.json("lift", "customers", "--outcome", outcome, "-c", duck, env=env)
        assert lift_a == lift_b and lift_a["held_out"]["n"] > 0, (lift_a, lift_b)
    res = cli("report", "-c", pg, "-o", tmp_path / "r.html", "--outcome", "consent", env=env)
    assert res.exit_code == 0, res.output


def test_plan_file_apply_and_resync(cli, tmp_path, wh):
    env = {"WAREHOUSE_DSN": wh}
    m = mapping(tmp_path / "pg", "postgres")
    plan = tmp_path / "plan.json"
    assert cli("plan", "-c", m, "--as-of", NOW, "-o", plan, env=env).exit_code == 0
    changes = json.loads(plan.read_text())["changes"]
    res = cli("apply", plan, "-c", m, env=env)
    assert res.exit_code == 0, res.output
    keys = {r[1] for r in changes["champs"] if r[0] == "add"}
    champs = (tmp_path / "pg/out/champs.csv").read_text().splitlines()[1:]
    assert {line.split(",")[0] for line in champs} == keys
    stale = cli("apply", plan, "-c", m, env=env)  # synced since: the changes differ now
    assert stale.exit_code == 2 and "stale plan" in stale.output
    # resync: the ledger is dropped and rebuilt from the file; nothing to send after it
    assert cli("resync", "champs", "-c", m, env=env).exit_code == 0
    again = cli.json("run", "-c", m, "--as-of", NOW, env=env)["destinations"]["champs"]
    assert (again["adds"], again["removes"]) == (0, 0) and again["unchanged"] == len(keys)


def test_only_changed_rows_leave_the_database(tmp_path, wh, caplog):
    from crmsync.sync.mapping.loader import load as load_mapping
    from crmsync.sync.pipeline.runner import Runner
    from crmsync.sync.pipeline.warehouse import WarehouseSync

    m = mapping(tmp_path / "pg", "postgres")
    fetched: list[int] = []
    plan = WarehouseSync.plan

    def counting(self, *a, **kw):
        out = plan(self, *a, **kw)
        fetched.append(self.fetched)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(WarehouseSync, "plan", counting)
    mp.setenv("WAREHOUSE_DSN", wh)
    try:
        with Runner(load_mapping(m)) as r:
            first = r.run()
        assert first.exit_code == 0
        sent = sum(d.adds for d in first.destinations)
        assert sum(fetched) == sent  # the first fill: every add, and nothing else
        fetched.clear()
        with psycopg.connect(wh) as conn:  # one contact joins a segment
            conn.execute("UPDATE analytics.contacts SET employees = 800 WHERE id = 'c0001'")
        with Runner(load_mapping(m)) as r:
            res = r.plan()
            loaded = dict(r.store.loaded)
        changed = sum(d.add + d.remove + d.update for d in res.destinations)
        assert changed == 1 and sum(fetched) == changed
        # nor does the store load the ledger, identity cache, lift groups or members whole
        assert loaded.get("ledger", 0) == 0 and loaded.get("memberships", 0) == 0, loaded
        assert not loaded.get("lift_groups") and not loaded.get("identity_cache")
    finally:
        mp.undo()


def test_meta_audience_hashes_the_fetched_rows(cli, tmp_path, wh):
    pytest.importorskip("facebook_business")
    from tests.fakes.meta import FakeGraph, sha

    def setup(folder: Path, engine: str, fake: FakeGraph) -> Path:
        folder.mkdir()
        m = {"version": 1, "name": f"ads-{engine}",
             "connections": {
                 "warehouse": {"type": "postgres", "dsn": "${WAREHOUSE_DSN}"},
                 "meta": {"type": "meta", "access_token": "${META_ACCESS_TOKEN}",
                          "ad_account_id": "act_1234", "base_url": fake.url}},
             "sources": {"crm": {"connection": "warehouse", "table": "analytics.contacts",
                                 "key": "id", "identity": {"email": "email"}}},
             "segments": {"big": {"description": "large", "owner": "revops@x.example",
                                  "where": {"field": "employees", "gte": 600}}},
             "destinations": [{"name": "big-meta", "segment": "big",
                               "type": "meta_custom_audience", "connection": "meta",
                               "audience": "Big (crmsync)", "mode": "mirror",
                               "identifiers": ["email"], "consent": "consent"}]}
        if engine == "postgres":
            m["engine"] = "postgres"
        return write_mapping(folder / "ads.yaml", m)

    env = {"WAREHOUSE_DSN": wh, "META_ACCESS_TOKEN": "EAAtest-secret"}
    data = rows(240)
    data[1] = (data[1][0], "not-an-email", *data[1][2:])  # employees 74: not big
    with FakeGraph(account="act_1234") as fa, FakeGraph(account="act_1234") as fb:
        pg, duck = setup(tmp_path / "pg", "postgres", fa), setup(tmp_path / "duck", "duckdb", fb)
        results = []
        for step in range(2):
            if step:  # a member's email changes; a big contact's email becomes unusable
                big = [r for r in data if r[3] >= 600 and r[1] and r[7]]
                data = [(r[0], "moved@example.com", *r[2:]) if r[0] == big[0][0] else
                        (r[0], "broken", *r[2:]) if r[0] == big[1][0] else r for r in data]
            load(wh, data)
            a = cli.json("run", "-c", pg, "--as-of", NOW, env=env)
            b = cli.json("run", "-c", duck, "--as-of", NOW, env=env)
            assert figures(a) == figures(b), (a, b)
            results.append(a["destinations"]["big-meta"])
        members_a = fa.by_name("Big (crmsync)").members
        assert members_a == fb.by_name("Big (crmsync)").members
        assert (("EMAIL", sha("moved@example.com")),) in members_a
        assert results[1]["no_identifier"] >= 1 and results[1]["removes"] + \
            results[1]["updates"] >= 1


def test_bad_input_stops_before_any_call(cli, tmp_path, wh):
    env = {"WAREHOUSE_DSN": wh}
    m = yaml.safe_load(mapping(tmp_path / "pg", "postgres").read_text())
    csv_src = {**m, "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id"}}}
    path = write_mapping(tmp_path / "pg/csv.yaml", csv_src)
    res = cli("plan", "-c", path, env=env)
    assert res.exit_code == 2 and "sources.crm" in res.output and "engine" in res.output
    clv = {**m, "scores": {**m["scores"], "value": {
        "type": "clv", "first_purchase": "last_order", "last_purchase": "last_order",
        "purchases": "orders", "revenue": "revenue"}}}
    res = cli("plan", "-c", write_mapping(tmp_path / "pg/clv.yaml", clv), env=env)
    assert res.exit_code == 2 and "scores.value" in res.output
    wrong = cli("plan", "-c", tmp_path / "pg/acme.yaml",
                env={"WAREHOUSE_DSN": wh.replace("crmsync-test-pw", "nope")})
    assert wrong.exit_code == 2 and "nope" not in wrong.output
    port = wh.rsplit(":", 1)[1].split("/")[0]
    down = cli("plan", "-c", tmp_path / "pg/acme.yaml",
               env={"WAREHOUSE_DSN": wh.replace(f":{port}/", ":1/")})
    assert down.exit_code == 2 and "crmsync-test-pw" not in down.output
    for name, src in {"missing": {"table": "analytics.nope"},
                      "column": {"key": "nope"},
                      "writes": {"table": None, "query": "DELETE FROM analytics.contacts "
                                                        "RETURNING *"}}.items():
        bad = {**m, "sources": {"crm": {k: v for k, v in {**m["sources"]["crm"], **src}.items()
                                        if v is not None}}}
        res = cli("plan", "-c", write_mapping(tmp_path / f"pg/{name}.yaml", bad), env=env)
        assert res.exit_code == 2 and "sources.crm" in res.output, (name, res.output)
        assert len(res.output.strip().splitlines()) <= 3, res.output  # one clear error
    with psycopg.connect(wh) as conn:  # the writing query was refused, not run
        assert conn.execute("SELECT count(*) FROM analytics.contacts").fetchone()[0] == 240
    # keys without a value or repeated: counted as warnings, one row per key kept
    data = rows(20) + [(None, "x@example.com", *rows(1)[0][2:]),
                       ("c0002", "dup@example.com", *rows(2)[1][2:])]
    load(wh, data)
    plan = cli.json("plan", "-c", tmp_path / "pg/acme.yaml", "--as-of", NOW, env=env)
    text = " ".join(plan["warnings"])
    assert "1 row(s) have no key" in text and "repeat the key" in text and "c0002" in text


def test_runs_log_no_raw_email(cli, tmp_path, wh, caplog):
    caplog.set_level(logging.DEBUG)
    env = {"WAREHOUSE_DSN": wh}
    m = mapping(tmp_path / "pg", "postgres")
    assert cli("run", "-c", m, "--as-of", NOW, env=env).exit_code == 0
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "@example.com" not in logs.lower() and "crmsync-test-pw" not in logs


def test_hubspot_list_refusal_and_kill_converge(cli, tmp_path, pg_db):
    """A list destination (not a whole file): its ledger rows are loaded on demand. A batch
    refused before it was applied (an expired token) goes back as it was; someone else adds
    one of its contacts meanwhile, which the next run learns was already there and never
    removes; a run killed before a checkpoint, re-run from another folder, converges."""
    pytest.importorskip("hubspot")
    import os
    import subprocess
    import sys

    from fakes.hubspot import FakeHubSpot, _error

    killpoint = Path(__file__).with_name("killpoint.py")
    with FakeHubSpot(token="pat-1", rate_limit=1000) as hs:
        keys = sorted(hs.add_contact({"email": f"c{i}@x.example"}) for i in range(30))
        hs.lists["1"] = {"listId": "1", "name": "PG (crmsync)", "objectTypeId": "0-1",
                         "processingType": "MANUAL", "members": {}}
        hs._next_list = 2
        with psycopg.connect(pg_db) as conn:
            conn.execute("CREATE TABLE people (id text, email text, stage text)")

        def table(members: set[str]) -> None:
            with psycopg.connect(pg_db) as conn, conn.cursor() as cur:
                cur.execute("TRUNCATE people")
                cur.executemany("INSERT INTO people VALUES (%s, %s, %s)",
                                [(k, f"{k}@x.example", "in" if k in members else "out")
                                 for k in keys])

        def mapping_in(folder: Path) -> Path:
            folder.mkdir(exist_ok=True)
            return write_mapping(folder / "lists.yaml", {
                "version": 1, "engine": "postgres",
                "connections": {
                    "wh": {"type": "postgres", "dsn": "${WAREHOUSE_DSN}"},
                    "hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}",
                                "base_url": hs.url, "rate_limit": 1000, "backoff": 0.01}},
                "sources": {"crm": {"connection": "wh", "table": "people", "key": "id",
                                    "identity": {"email": "email"}}},
                "segments": {"s": {"where": {"field": "stage", "eq": "in"}}},
                "destinations": [{"name": "d", "segment": "s", "type": "hubspot_list",
                                  "connection": "hubspot", "list": "PG (crmsync)",
                                  "identifiers": ["email"], "batch_size": 5}]})

        def ledger() -> dict[str, str]:
            with psycopg.connect(pg_db) as conn:
                return dict(conn.execute("SELECT key, state FROM crmsync.ledger WHERE "
                                         "mapping = 'lists' AND dest = 'd'").fetchall())

        one, two = mapping_in(tmp_path / "one"), mapping_in(tmp_path / "two")
        env = {"WAREHOUSE_DSN": pg_db, "HUBSPOT_TOKEN": "pat-1"}
        first = set(keys[:20])
        table(first)
        hs.fail_next(1, path=r"/memberships/add-and-remove$", skip=2, status=401,
                     body=_error(401, "The OAuth token used to make this call expired.",
                                 "EXPIRED_AUTHENTICATION").body)
        assert cli("run", "-c", one, env=env).exit_code == 1
        assert set(ledger()) == set(keys[:10]) and set(ledger().values()) == {"member"}
        hs.lists["1"]["members"][keys[10]] = "2026-01-02T00:00:00.000Z"  # someone else's
        run = cli.json("run", "-c", one, env=env)
        assert run["exit_code"] == 0 and hs.members("PG (crmsync)") == first
        assert ledger()[keys[10]] == "preexisting"
        # churn, killed before the second checkpoint, then re-run from another folder
        second = set(keys[5:25]) - {keys[10]}
        table(second)
        p = subprocess.run([sys.executable, str(killpoint), "before:checkpoint:2", "--",
                            "run", "-c", str(one)], env={**os.environ, **env},
                           capture_output=True, timeout=120)
        assert p.returncode == -9, p.stderr.decode()[-500:]
        assert {"pending", "removing"} & set(ledger().values())  # marks in flight
        again = cli.json("run", "-c", two, env=env)
        assert again["exit_code"] == 0, again
        assert hs.members("PG (crmsync)") == second | {keys[10]}  # someone else's stays
        assert {k for k, s in ledger().items() if s == "member"} == second
        assert cli.json("plan", "-c", two, env=env)["destinations"]["d"]["add"] == 0


def test_a_query_source_evaluates_like_its_table(cli, tmp_path, wh):
    env = {"WAREHOUSE_DSN": wh}
    table = mapping(tmp_path / "table", "postgres")
    m = yaml.safe_load(table.read_text())
    m["name"] = "acme-query"
    m["sources"]["crm"] = {**{k: v for k, v in m["sources"]["crm"].items() if k != "table"},
                           "query": "SELECT c.*, upper(c.email) AS shout "
                                    "FROM analytics.contacts c ORDER BY c.id DESC"}
    (tmp_path / "query").mkdir()
    query = write_mapping(tmp_path / "query/acme.yaml", m)
    (tmp_path / "query/blocklist.csv").write_bytes((tmp_path / "table/blocklist.csv").read_bytes())
    a = cli.json("run", "-c", table, "--as-of", NOW, env=env)
    b = cli.json("run", "-c", query, "--as-of", NOW, env=env)
    assert a["exit_code"] == b["exit_code"] == 0, b
    for name in ("champs", "tiers", "big"):
        out = f"out/{name}.csv"
        assert (tmp_path / "query" / out).read_bytes() == (tmp_path / "table" / out).read_bytes()
        assert read_csv_keys(tmp_path / "table" / out), name
