"""End to end on local files: run, re-run, diff, safeguards, lock, plan/apply, resync."""

from __future__ import annotations

import json

import yaml

from crmsync.sync.store.database import Store

from conftest import read_csv_keys, write_csv, write_mapping

HEADER = ["id", "email", "phone", "country", "stage", "revenue", "optout", "consent"]


def rows(n: int, stage=lambda i: "customer" if i % 2 else "lead"):
    return [[f"k{i:04d}", f"u{i}@x.example", "", "US", stage(i), str(i * 10),
             "true" if i % 7 == 0 else "false", "true" if i % 5 else "false"]
            for i in range(1, n + 1)]


def mapping(tmp, **dest_extra):
    return {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "schema": {"revenue": "number", "optout": "bool", "consent": "bool"},
                            "identity": {"email": "email", "phone": "phone",
                                         "country": "country"}}},
        "segments": {"customers": {"description": "paying", "owner": "revops@x.example",
                                   "where": {"field": "stage", "eq": "customer"}}},
        "suppressions": {"unsub": {"where": {"field": "optout", "eq": True}}},
        "destinations": [{"name": "cust", "segment": "customers", "type": "csv",
                          "path": "out/cust.csv", "identifiers": ["email"], **dest_extra}],
    }


def setup(tmp_path, n=40, **extra):
    write_csv(tmp_path / "contacts.csv", HEADER, rows(n))
    return write_mapping(tmp_path / "m.yaml", mapping(tmp_path, **extra))


def expected(n, consent=False):
    return {f"k{i:04d}" for i in range(1, n + 1)
            if i % 2 and i % 7 and (not consent or i % 5)}


def test_run_twice_second_is_a_no_op(cli, tmp_path):
    m = setup(tmp_path)
    first = cli.json("run", "-c", m)
    assert first["exit_code"] == 0
    d = first["destinations"]["cust"]
    assert d["adds"] == len(expected(40)) and d["calls"] == 1
    assert read_csv_keys(tmp_path / "out/cust.csv") == expected(40)
    second = cli.json("run", "-c", m)["destinations"]["cust"]
    assert (second["add"], second["remove"], second["calls"]) == (0, 0, 0)
    assert second["unchanged"] == len(expected(40))


def test_plan_figures_match_spec_shape(cli, tmp_path):
    m = setup(tmp_path, consent="consent")
    plan = cli.json("plan", "-c", m, "--as-of", "2026-11-23T00:00:00Z")
    assert plan["as_of"] == "2026-11-23T00:00:00Z"
    assert plan["segments"]["customers"] == {"matched": 20, "held_out": 0}
    d = plan["destinations"]["cust"]
    assert d["segment"] == "customers"
    assert d["suppressed"] == 3  # 7, 21, 35
    assert d["desired"] == len(expected(40, consent=True))
    assert d["no_consent"] == 20 - 3 - d["desired"]
    assert d["add"] == d["desired"] and d["remove"] == 0
    assert not (tmp_path / "out/cust.csv").exists()  # plan writes nothing but the snapshot


def test_changes_are_diffed_and_mirror_removes(cli, tmp_path):
    m = setup(tmp_path)
    cli("run", "-c", m)
    new = rows(40, stage=lambda i: "customer" if i % 2 or i == 2 else "lead")
    new = [r for r in new if r[0] != "k0001"]
    write_csv(tmp_path / "contacts.csv", HEADER, new)
    d = cli.json("run", "-c", m)["destinations"]["cust"]
    assert (d["adds"], d["removes"]) == (1, 1)
    assert read_csv_keys(tmp_path / "out/cust.csv") == (expected(40) - {"k0001"}) | {"k0002"}


def test_add_only_never_removes(cli, tmp_path):
    m = setup(tmp_path, mode="add_only")
    cli("run", "-c", m)
    write_csv(tmp_path / "contacts.csv", HEADER, rows(40, stage=lambda i: "lead"))
    d = cli.json("run", "-c", m)["destinations"]["cust"]
    assert (d["adds"], d["removes"], d["remove"]) == (0, 0, 0)
    assert read_csv_keys(tmp_path / "out/cust.csv") == expected(40)


def test_safeguard_trips_exit_3_and_force_overrides(cli, tmp_path):
    m = setup(tmp_path, max_remove_fraction=0.25)
    cli("run", "-c", m)
    write_csv(tmp_path / "contacts.csv", HEADER, rows(40, stage=lambda i: "lead"))
    res = cli("run", "-c", m)
    assert res.exit_code == 3
    assert "--force" in res.stdout
    assert read_csv_keys(tmp_path / "out/cust.csv") == expected(40)  # nothing removed
    assert cli("run", "-c", m, "--force").exit_code == 0
    assert read_csv_keys(tmp_path / "out/cust.csv") == set()


def test_plan_warns_when_a_run_would_trip_the_safeguard(cli, tmp_path):
    m = setup(tmp_path, max_remove_fraction=0.25)
    cli("run", "-c", m)
    write_csv(tmp_path / "contacts.csv", HEADER, rows(40, stage=lambda i: "lead"))
    plan = cli.json("plan", "-c", m)
    assert plan["destinations"]["cust"]["remove"] == len(expected(40))
    assert any(w.startswith("cust: a run would stop here") for w in plan["warnings"])
    res = cli("run", "-c", m, "--dry-run")
    assert res.exit_code == 3 and "--force" in res.stdout


def test_dry_run_reports_what_it_would_send_and_sends_nothing(cli, tmp_path):
    m = setup(tmp_path)
    res = cli("run", "-c", m, "--dry-run")
    assert res.exit_code == 0
    n = len(expected(40))
    assert res.stdout.startswith(f"cust: planned +{n} -0 ~0 =0 ")
    assert not (tmp_path / "out/cust.csv").exists()
    runs = cli.json("history", "-c", m)
    assert runs[0]["command"] == "run --dry-run" and runs[0]["destinations"] == []


def test_second_run_exits_4_while_lock_held(cli, tmp_path):
    m = setup(tmp_path)
    cli("run", "-c", m)
    store = Store.open(tmp_path / ".crmsync/state.duckdb")
    store.acquire()
    try:
        store.con.close()  # keep the OS lock, release the database file
        res = cli("run", "-c", m)
        assert res.exit_code == 4
    finally:
        store.release()


def test_plan_file_apply_and_stale_refusal(cli, tmp_path):
    m = setup(tmp_path)
    assert cli("plan", "-c", m, "-o", tmp_path / "plan.json").exit_code == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert len(plan["changes"]["cust"]) == len(expected(40))
    res = cli("apply", tmp_path / "plan.json", "-c", m)
    assert res.exit_code == 0, res.stderr
    assert read_csv_keys(tmp_path / "out/cust.csv") == expected(40)
    # the ledger moved on: the same plan is now stale
    res = cli("apply", tmp_path / "plan.json", "-c", m)
    assert res.exit_code == 2 and "stale plan" in res.stderr


def test_apply_refuses_an_edited_plan_a_changed_source_or_another_mapping(cli, tmp_path):
    m = setup(tmp_path)
    assert cli("plan", "-c", m, "-o", tmp_path / "plan.json").exit_code == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["changes"]["cust"].append(["add", "k0002", "customers", '["evil@x.example"]', None, "x"])
    (tmp_path / "edited.json").write_text(json.dumps(plan))
    res = cli("apply", tmp_path / "edited.json", "-c", m)
    assert res.exit_code == 2 and "stale plan: the changes for cust" in res.stderr
    other = mapping(tmp_path)
    other["segments"]["customers"]["where"] = {"field": "stage", "eq": "lead"}
    res = cli("apply", tmp_path / "plan.json", "-c", write_mapping(tmp_path / "o.yaml", other))
    assert res.exit_code == 2 and "another mapping" in res.stderr
    write_csv(tmp_path / "contacts.csv", HEADER, rows(41))  # the export moved on
    res = cli("apply", tmp_path / "plan.json", "-c", m)
    assert res.exit_code == 2 and "the snapshot changed" in res.stderr
    assert not (tmp_path / "out/cust.csv").exists()


def test_apply_force_after_a_tripped_safeguard(cli, tmp_path):
    m = setup(tmp_path, max_remove_fraction=0.1)
    assert cli("run", "-c", m).exit_code == 0
    write_csv(tmp_path / "contacts.csv", HEADER, rows(40, stage=lambda i: "lead"))
    assert cli("plan", "-c", m, "-o", tmp_path / "plan.json").exit_code == 0
    assert cli("apply", tmp_path / "plan.json", "-c", m).exit_code == 3  # nothing sent
    res = cli("apply", tmp_path / "plan.json", "-c", m, "--force")
    assert res.exit_code == 0, res.stderr
    assert read_csv_keys(tmp_path / "out/cust.csv") == set()


def test_apply_refuses_what_is_not_a_plan_file(cli, tmp_path):
    m = setup(tmp_path)
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    (tmp_path / "text.json").write_text("plan: no")
    for path, why in (("junk.json", "not a crmsync plan file"), ("text.json", "not JSON"),
                      ("missing.json", "cannot read the plan file")):
        res = cli("apply", tmp_path / path, "-c", m)
        assert res.exit_code == 2 and why in res.stderr, res.stderr
    assert not (tmp_path / "out/cust.csv").exists()


def test_log_format_json_also_carries_errors(cli, tmp_path):
    m = setup(tmp_path)
    bad = mapping(tmp_path)
    bad["segments"]["customers"]["where"] = {"field": "stage", "eq_": "customer"}
    b = write_mapping(tmp_path / "bad.yaml", bad)
    res = cli("run", "-c", b, "--log-format", "json")
    assert res.exit_code == 2
    lines = [json.loads(x) for x in res.stderr.splitlines() if x.strip()]
    assert lines and all(x["level"] == "error" for x in lines)
    assert "eq_" in lines[0]["msg"]
    assert cli("run", "-c", m, "--log-format", "xml").exit_code == 2
    # a command's own exit code is kept under json logs (here: the safeguard, 3)
    mp = mapping(tmp_path, max_remove_fraction=0.25)
    g = write_mapping(tmp_path / "g.yaml", mp)
    cli("run", "-c", g)
    write_csv(tmp_path / "contacts.csv", HEADER, rows(40, stage=lambda i: "lead"))
    res = cli("run", "-c", g, "--log-format", "json")
    assert res.exit_code == 3 and "unexpected error" not in res.stderr


def test_unchanged_file_is_not_pulled_again_but_a_same_size_rewrite_is(cli, tmp_path):
    m = setup(tmp_path)
    assert cli("plan", "-c", m, "-o", tmp_path / "plan.json").exit_code == 0
    store = tmp_path / ".crmsync" / "state.duckdb"
    assert store.exists()
    version = Store.open(store, read_only=True)
    before = version.snapshot_version()
    version.close()
    assert before > 0
    assert cli("plan", "-c", m).exit_code == 0  # the file is unchanged: nothing new
    version = Store.open(store, read_only=True)
    assert version.snapshot_version() == before
    version.close()
    res = cli("apply", tmp_path / "plan.json", "-c", m)  # so the plan is still current
    assert res.exit_code == 0, res.stderr
    # the same size, one value changed in place: k0001 (a customer) opts out
    new = rows(40)
    new[0][6] = "true "
    write_csv(tmp_path / "contacts.csv", HEADER, new)
    d = cli.json("run", "-c", m)["destinations"]["cust"]
    assert (d["adds"], d["removes"]) == (0, 1)
    assert read_csv_keys(tmp_path / "out/cust.csv") == expected(40) - {"k0001"}


def test_resync_reconciles_from_the_file(cli, tmp_path):
    m = setup(tmp_path)
    cli("run", "-c", m)
    (tmp_path / "out/cust.csv").unlink()
    assert cli("resync", "cust", "-c", m).exit_code == 0
    d = cli.json("run", "-c", m)["destinations"]["cust"]
    assert d["adds"] == len(expected(40))
    assert read_csv_keys(tmp_path / "out/cust.csv") == expected(40)


def test_history_records_per_destination_figures(cli, tmp_path):
    m = setup(tmp_path)
    cli("run", "-c", m)
    cli("run", "-c", m)
    runs = cli.json("history", "-c", m)
    assert [r["run_id"] for r in runs] == [2, 1]
    d = runs[1]["destinations"][0]
    assert d["dest"] == "cust" and d["adds"] == len(expected(40)) and d["calls"] == 1
    assert runs[0]["destinations"][0]["adds"] == 0


def test_exclusive_group_moves_are_recorded(cli, tmp_path):
    write_csv(tmp_path / "contacts.csv", HEADER, rows(10))
    mp = mapping(tmp_path)
    mp["segments"]["leads"] = {"where": {"field": "stage", "eq": "lead"}}
    mp["groups"] = {"life": {"segments": ["customers", "leads"]}}
    m = write_mapping(tmp_path / "m.yaml", mp)
    cli("run", "-c", m)
    write_csv(tmp_path / "contacts.csv", HEADER, rows(10, stage=lambda i: "customer"))
    cli("run", "-c", m)
    store = Store.open(tmp_path / ".crmsync/state.duckdb")
    got = store.con.execute("SELECT from_segment, to_segment, contacts FROM transitions "
                            "WHERE run_id = 2").fetchall()
    store.close()
    assert got == [("leads", "customers", 5)]


def test_cadence_skips_until_due(cli, tmp_path):
    write_csv(tmp_path / "contacts.csv", HEADER, rows(10))
    mp = mapping(tmp_path)
    mp["segments"]["customers"]["cadence"] = "1h"
    m = write_mapping(tmp_path / "m.yaml", mp)
    assert cli.json("run", "-c", m)["destinations"]["cust"]["status"] == "ok"
    assert cli.json("run", "-c", m)["destinations"]["cust"]["status"] == "skipped"


def test_cadence_is_measured_from_as_of(cli, tmp_path):
    write_csv(tmp_path / "contacts.csv", HEADER, rows(10))
    mp = mapping(tmp_path)
    mp["segments"]["customers"]["cadence"] = "1h"
    m = write_mapping(tmp_path / "m.yaml", mp)

    def status(at: str) -> str:
        return cli.json("run", "-c", m, "--as-of", at)["destinations"]["cust"]["status"]

    assert status("2026-03-01T10:00:00Z") == "ok"
    assert status("2026-03-01T10:59:00Z") == "skipped"
    assert status("2026-03-01T11:00:00Z") == "ok"


def test_history_keeps_contacts_without_identifier_apart_from_rejects(cli, tmp_path):
    data = rows(10)
    data[0][1] = " "  # k0001, a customer, has no email
    write_csv(tmp_path / "contacts.csv", HEADER, data)
    m = write_mapping(tmp_path / "m.yaml", mapping(tmp_path))
    res = cli("run", "-c", m)
    assert " rejected 0 " in res.stdout
    d = cli.json("history", "-c", m)[0]["destinations"][0]
    assert (d["rejected"], d["no_identifier"]) == (0, 1)
    assert d["reject_reasons"] == [{"reason": "no_identifier: no value for email", "count": 1,
                                    "keys": ["k0001"]}]
    assert "no identifier 1" in cli("history", "-c", m).stdout


def test_jsonl_source_with_lists(cli, tmp_path):
    lines = [{"id": 1, "email": "a@x.example", "tags": ["Gold", "vip"], "n": 5},
             {"id": 2, "email": "b@x.example", "tags": "silver", "n": "1,000"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    m = write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "jsonl", "path": "c.jsonl", "key": "id",
                            "schema": {"tags": "multi", "n": "number"},
                            "identity": {"email": "email"}}},
        "segments": {"gold": {"where": {"field": "tags", "has_any": ["gold"]}},
                     "big": {"where": {"field": "n", "gte": 1}}},
        "destinations": [{"name": "g", "segment": "gold", "type": "csv", "path": "g.csv",
                          "identifiers": ["email"]}]})
    plan = cli.json("plan", "-c", m)
    assert plan["segments"]["gold"]["matched"] == 1
    assert plan["segments"]["big"]["matched"] == 1
    assert any("crm.n: 1 value" in w for w in plan["warnings"])
    # a key only a later line has is a field too; a broken line is reported, not a failure
    with (tmp_path / "c.jsonl").open("a") as fh:
        fh.write("\n" + json.dumps({"id": 3, "late": "x"}))
    mapping = yaml.safe_load(m.read_text())
    mapping["segments"]["late"] = {"where": {"field": "late", "eq": "X"}}
    write_mapping(m, mapping)
    assert cli("validate", "-c", m).exit_code == 0
    assert cli.json("plan", "-c", m)["segments"]["late"]["matched"] == 1
    with (tmp_path / "c.jsonl").open("a") as fh:
        fh.write("\n{not json\n[1, 2]\n" + json.dumps({"id": 4, "late": "x"}))
    plan = cli.json("plan", "-c", m)
    assert plan["segments"]["late"]["matched"] == 2  # the lines after the broken ones too
    assert any("2 malformed row(s) not read (line 4: not valid JSON; line 5: not a JSON "
               "object)" in w for w in plan["warnings"]), plan["warnings"]


def test_store_schema_is_versioned_and_migrates_once(tmp_path):
    from crmsync.sync.store import database as store_mod

    first = store_mod.MIGRATIONS[:1]
    s = Store.open(tmp_path / "s.duckdb")
    s.close()
    # an old store (only the first migration) migrates forward, keeping its data
    import duckdb

    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("CREATE TABLE _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    con.execute(first[0][1])
    con.execute("INSERT INTO _migrations VALUES (?, now())", [first[0][0]])
    con.execute("INSERT INTO ledger VALUES ('d', 'k1', '', '', 'member', now())")
    con.close()
    s = Store.open(tmp_path / "old.duckdb")
    assert s.schema_version == store_mod.MIGRATIONS[-1][0]
    assert s.con.execute("SELECT * EXCLUDE (synced_at) FROM ledger").fetchall() == [
        ("d", "k1", "", "", "member")]
    # 009: the ledger without its primary-key index, its columns and default as they were
    assert not s.con.execute("SELECT * FROM duckdb_constraints() WHERE table_name = 'ledger' "
                             "AND constraint_type = 'PRIMARY KEY'").fetchall()
    s.con.execute("INSERT INTO ledger (dest, key) VALUES ('d', 'k2')")
    assert s.con.execute("SELECT state FROM ledger WHERE key = 'k2'").fetchone() == ("member",)
    s.close()
    s = Store.open(tmp_path / "old.duckdb")
    n = s.con.execute("SELECT count(*) FROM _migrations").fetchone()[0]
    assert n == len(store_mod.MIGRATIONS)
    s.close()


def test_memory_limit_from_the_environment(cli, tmp_path, monkeypatch):
    """CRMSYNC_MEMORY_LIMIT bounds the store's engine; a value that is no size stops every
    command with exit 2 naming the variable, before anything is read or sent."""
    m = setup(tmp_path)
    res = cli("run", "-c", m, env={"CRMSYNC_MEMORY_LIMIT": "lots"})
    assert res.exit_code == 2 and "CRMSYNC_MEMORY_LIMIT" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()
    res = cli.json("run", "-c", m, env={"CRMSYNC_MEMORY_LIMIT": "256MB"})
    assert res["exit_code"] == 0
    monkeypatch.setenv("CRMSYNC_MEMORY_LIMIT", "256MB")
    s = Store.open(tmp_path / "s.duckdb")
    try:
        (limit,) = s.con.execute("SELECT current_setting('memory_limit')").fetchone()
    finally:
        s.close()
    assert limit.startswith("244") and limit.endswith("MiB"), limit  # 256 MB in MiB


def test_alerts_post_failures_safeguards_and_moves(cli, tmp_path):
    import httpx
    import respx

    write_csv(tmp_path / "contacts.csv", HEADER, rows(10))
    mp = mapping(tmp_path, max_remove_fraction=0.1)
    mp["segments"]["leads"] = {"where": {"field": "stage", "eq": "lead"}}
    mp["alerts"] = [{"url": "https://hooks.example/T/B/secret",
                     "on": ["safeguard", "transition"],
                     "transitions": [{"from": "leads", "to": "customers"}]}]
    m = write_mapping(tmp_path / "m.yaml", mp)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post("https://hooks.example/T/B/secret").mock(
            return_value=httpx.Response(200))
        cli("run", "-c", m)
        assert route.call_count == 0  # nothing to say on a first run
        write_csv(tmp_path / "contacts.csv", HEADER,
                  rows(10, stage=lambda i: "lead" if i % 2 else "customer"))
        assert cli("run", "-c", m).exit_code == 3
        assert route.call_count == 1
        text = json.loads(route.calls[0].request.content)["text"]
        assert "cust" in text and "leads" in text and "customers" in text
        assert "@" not in text


def test_unreachable_webhook_never_fails_the_run(cli, tmp_path):
    import httpx
    import respx

    write_csv(tmp_path / "contacts.csv", HEADER, rows(10))
    mp = mapping(tmp_path)
    mp["destinations"][0]["path"] = "missing-dir-is-a-file/x.csv"
    (tmp_path / "missing-dir-is-a-file").write_text("not a folder")
    mp["alerts"] = [{"url": "https://hooks.example/x", "on": ["failure"]}]
    m = write_mapping(tmp_path / "m.yaml", mp)
    with respx.mock() as mock:
        mock.post("https://hooks.example/x").mock(side_effect=httpx.ConnectError("down"))
        res = cli("run", "-c", m)
    assert res.exit_code == 1  # the destination failed; the webhook's failure changed nothing


def test_conditions_may_name_the_key_field(cli, tmp_path):
    write_csv(tmp_path / "contacts.csv", HEADER, rows(10))
    mp = mapping(tmp_path)
    mp["segments"]["some"] = {"where": {"field": "id", "in": ["k0001", "K0002 "]}}
    mp["segments"]["all_known"] = {"where": {"field": "stage", "is_known": True,
                                             "or_unknown": True}}
    m = write_mapping(tmp_path / "m.yaml", mp)
    plan = cli.json("plan", "-c", m)
    assert plan["segments"]["some"]["matched"] == 2
    assert plan["segments"]["all_known"]["matched"] == 10


def test_offline_commands_need_neither_the_source_file_nor_secrets(cli, tmp_path):
    m = setup(tmp_path)
    mp = yaml.safe_load(m.read_text())
    mp["alerts"] = [{"url": "${HOOK_URL}", "on": ["failure"]}]  # a secret nobody set
    write_mapping(m, mp)
    env = {"HOOK_URL": "http://127.0.0.1:9/hook"}
    assert cli("run", "-c", m, env=env).exit_code == 0
    (tmp_path / "contacts.csv").unlink()
    res = cli("plan", "-c", m, env=env)  # a pull needs the file: exit 2, named
    assert res.exit_code == 2 and "contacts.csv not found" in res.stderr
    for args in (["plan", "--offline"], ["explain", "k0001"], ["segments"], ["history"]):
        res = cli(*args, "-c", m)
        assert res.exit_code == 0, (args, res.stderr)
    assert cli("explain", "k0001", "-c", m, "--pull").exit_code == 2


def test_csv_identifiers_are_raw_explain_consent_and_a_bom_blocklist(cli, tmp_path):
    """The csv destination writes identifiers as the source wrote them (a zip typed number
    keeps its zero, without surrounding whitespace); explain reads a text consent field as push does; a blocklist saved
    with a UTF-8 BOM (Excel) still suppresses its first line."""
    write_csv(tmp_path / "contacts.csv", ["id", "email", "zip", "optin"],
              [["k1", " Ann@X.example ", "02134", "yes"], ["k2", "b@x.example", "1e3", "no"],
               ["k3", "c@x.example", "", "yes"], ["k4", "d@x.example", "7", "yes"]])
    (tmp_path / "block.txt").write_text("\ufeffk4\r\n", encoding="utf-8")
    m = write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "schema": {"zip": "number"},
                            "identity": {"email": "email", "zip": "zip"}}},
        "segments": {"all": {"description": "d", "owner": "o",
                             "where": {"field": "email", "is_known": True}}},
        "suppressions": {"blocked": {"file": "block.txt"}},
        "destinations": [{"name": "f", "segment": "all", "type": "csv", "path": "out/f.csv",
                          "identifiers": ["email", "zip"], "consent": "optin"}]})
    assert cli.json("run", "-c", m)["exit_code"] == 0
    lines = (tmp_path / "out/f.csv").read_text(encoding="utf-8").splitlines()
    assert lines == ["key,email,zip", "k1,Ann@X.example,02134", "k3,c@x.example,"]  # trimmed
    out = cli("explain", "k2", "-c", m).stdout
    assert "not sent: no consent" in out and "sent as a member" not in out


def test_two_destinations_on_one_file_and_an_unwritable_output_are_refused(cli, tmp_path):
    m = setup(tmp_path)
    assert cli("plan", "-c", m, "-o", tmp_path / "new/dir/plan.json").exit_code == 0
    (tmp_path / "taken").write_text("a file, not a folder")
    res = cli("plan", "-c", m, "-o", tmp_path / "taken/plan.json")
    assert res.exit_code == 2 and "cannot write this file" in res.stderr
    data = mapping(tmp_path)
    data["destinations"].append({**data["destinations"][0], "name": "again",
                                 "path": "./out/../out/cust.csv"})
    res = cli("validate", "-c", write_mapping(tmp_path / "two.yaml", data))
    assert res.exit_code == 2 and "writes to the same place as destinations[0]" in res.stderr


def test_a_type_changed_in_the_mapping_reads_the_unchanged_file_again(cli, tmp_path):
    """The snapshot is stored typed: a field's new type takes effect at once, although the
    file did not change (its pull would otherwise be skipped)."""
    m = setup(tmp_path)
    spec = mapping(tmp_path)
    del spec["sources"]["crm"]["schema"]["revenue"]  # a string first
    write_mapping(m, spec)
    assert cli.json("run", "-c", m)["exit_code"] == 0
    spec["sources"]["crm"]["schema"]["revenue"] = "number"
    spec["segments"]["big"] = {"description": "d", "owner": "o",
                               "where": {"field": "revenue", "gte": 300}}
    write_mapping(m, spec)
    plan = cli.json("plan", "-c", m)
    assert plan["segments"]["big"]["matched"] == 40 - 29, plan  # k0030..k0040


def test_a_snapshot_from_an_older_version_is_pulled_again(cli, tmp_path):
    m = setup(tmp_path)
    assert cli.json("run", "-c", m)["exit_code"] == 0
    store = Store.open(tmp_path / ".crmsync/state.duckdb")
    store.con.execute("UPDATE sources SET layout = NULL")  # as migration 005 leaves it
    store.close()
    res = cli("plan", "-c", m, "--offline")
    assert res.exit_code == 2 and "older crmsync" in res.stderr + res.stdout
    plan = cli.json("plan", "-c", m)
    assert plan["destinations"]["cust"]["desired"] == len(expected(40))
    assert (plan["destinations"]["cust"]["add"], plan["destinations"]["cust"]["remove"]) == (0, 0)


def test_apply_diffs_each_destination_once(cli, tmp_path, monkeypatch):
    """apply checks the plan file against the diff and pushes that same diff: one
    ``Ledger.diff`` per destination, not one for the check and one for the push."""
    from crmsync.sync.store.ledger import Ledger

    m = setup(tmp_path)
    assert cli("run", "-c", m).exit_code == 0
    write_csv(tmp_path / "contacts.csv", HEADER, rows(50))  # 5 more customers
    assert cli("plan", "-c", m, "-o", tmp_path / "plan.json").exit_code == 0
    calls = []
    real = Ledger.diff

    def counted(self, *args, **kw):
        calls.append(self.dest)
        return real(self, *args, **kw)

    monkeypatch.setattr(Ledger, "diff", counted)
    res = cli("apply", tmp_path / "plan.json", "-c", m)
    assert res.exit_code == 0, res.stderr
    assert calls == ["cust"]
    assert read_csv_keys(tmp_path / "out/cust.csv") == expected(50)
