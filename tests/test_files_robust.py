"""File sources and the mapping checks under bad input: missing or malformed files, a key or a
schema column the file lacks, misspelt option keys, impossible unquoted dates.

Every unusable mapping stops `plan` / `run` with validate's own message and exit 2 before any
pull or push; every malformed row of a csv is counted and named by line, and never takes the
well-formed rows around it along."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from crmsync.connectors.base import Context, SourceState
from crmsync.connectors.files import CsvSource, FileOptions
from crmsync.sync.errors import ConfigError
from crmsync.sync.mapping.model import SourceConfig
from crmsync.sync.store.database import Store

from conftest import write_csv, write_mapping

HEADER = ["id", "email", "stage", "revenue"]
NOW = datetime(2026, 11, 1)


def rows(n: int) -> list[list[str]]:
    return [[f"k{i:04d}", f"u{i}@x.example", "customer" if i % 2 else "lead", str(i)]
            for i in range(1, n + 1)]


def mapping(**source) -> dict:
    return {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "schema": {"revenue": "number"}, "identity": {"email": "email"},
                            **source}},
        "segments": {"customers": {"description": "paying", "owner": "revops@x.example",
                                   "where": {"field": "stage", "eq": "customer"}}},
        "destinations": [{"name": "cust", "segment": "customers", "type": "csv",
                          "path": "out/cust.csv", "identifiers": ["email"]}],
    }


def setup(tmp_path: Path, n: int = 10, **source) -> Path:
    write_csv(tmp_path / "contacts.csv", HEADER, rows(n))
    return write_mapping(tmp_path / "m.yaml", mapping(**source))


def refused(cli, tmp_path: Path, m: Path, *needles: str) -> None:
    """validate, plan and run all exit 2 with ``needles`` on stderr; nothing was pulled or
    sent (no store, no output file)."""
    for cmd in ("validate", "plan", "run"):
        res = cli(cmd, "-c", m)
        assert res.exit_code == 2, (cmd, res.stdout, res.stderr)
        for needle in needles:
            assert needle in res.stderr, (cmd, needle, res.stderr)
        assert "Traceback" not in res.stderr
    assert not (tmp_path / ".crmsync").exists()
    assert not (tmp_path / "out").exists()


def source(path: Path, key: str = "id", **options) -> CsvSource:
    cfg = SourceConfig.model_validate({"type": "csv", "path": path.name, "key": key})
    return CsvSource("crm", cfg, FileOptions(path=path.name, **options), None,
                     Context(datetime(2026, 11, 1), path.parent))


def read(src: CsvSource, state: SourceState | None = None):
    """The pull the store takes and the keys its SQL yields, as a run does: the strict read
    first, its ``fallback`` when DuckDB refuses it (the SQL may then read a cleaned copy of
    the file that lives as long as ``src``)."""
    pull = src.pull(state or SourceState())
    if not pull.sql:
        return pull, []
    try:
        rows = duckdb.sql(pull.sql).fetchall()
    except duckdb.Error:
        assert pull.fallback is not None
        pull = pull.fallback()
        rows = duckdb.sql(pull.sql).fetchall()
    return pull, [r[0] for r in rows]


# ---------------------------------------------------------------- 1. unusable files and keys


def test_missing_source_file_stops_every_command(cli, tmp_path):
    m = setup(tmp_path, path="nope.csv")
    refused(cli, tmp_path, m, "m.yaml:", "sources.crm.path", "file nope.csv not found",
            "relative to the mapping file's folder")


def test_key_column_absent_from_the_file(cli, tmp_path):
    m = setup(tmp_path, key="ids")
    refused(cli, tmp_path, m, "sources.crm.key", "key column 'ids' is not a field of source "
            "'crm'", "did you mean 'id'?")


def test_default_key_id_absent_asks_for_key(cli, tmp_path):
    write_csv(tmp_path / "contacts.csv", ["contact_id", "email", "stage", "revenue"],
              [["c1", "a@x.example", "customer", "1"]])
    data = mapping()
    del data["sources"]["crm"]["key"]
    m = write_mapping(tmp_path / "m.yaml", data)
    refused(cli, tmp_path, m, "sources.crm:", "no key: given, so 'id' is expected",
            "add key: COLUMN")


def test_schema_column_absent_and_used_by_a_segment(cli, tmp_path):
    data = mapping(schema={"revenue": "number", "ltv": "number"})
    data["segments"]["customers"]["where"] = {"field": "ltv", "gt": 10}
    write_csv(tmp_path / "contacts.csv", HEADER, rows(3))
    m = write_mapping(tmp_path / "m.yaml", data)
    refused(cli, tmp_path, m, "segments.customers.where.field", "unknown field 'ltv'")
    res = cli("validate", "-c", m)
    assert "warning: " in res.stderr and "sources.crm.schema.ltv: column 'ltv' of schema: " \
        "is not in the file" in res.stderr


def test_missing_suppression_file_stops_plan_and_run(cli, tmp_path):
    data = mapping()
    data["suppressions"] = {"blocked": {"file": "blocklist.csv"}}
    write_csv(tmp_path / "contacts.csv", HEADER, rows(3))
    m = write_mapping(tmp_path / "m.yaml", data)
    refused(cli, tmp_path, m, "suppressions.blocked.file", "blocklist.csv not found")


@pytest.mark.parametrize(("content", "needle", "fix"), [
    (b"", "contacts.csv is empty", "a csv file starts with a header row"),
    (b"id,email,\xff\xfe\n", "is not UTF-8 text", "save the file as UTF-8"),
    (b"id;email;stage;revenue\nk1;a@x.example;lead;1\n", "seems to use ';'",
     "set delimiter: ';'"),
    (b"id,email,email,stage\n", "column 'email' appears twice", "rename one of them"),
    (b"id,email,stage,revenue,\n", "column 5 of the header", "trailing delimiter"),
])
def test_unusable_header_is_a_config_error(cli, tmp_path, content, needle, fix):
    m = setup(tmp_path)
    (tmp_path / "contacts.csv").write_bytes(content)
    refused(cli, tmp_path, m, "sources.crm.", needle, fix)


def test_header_problems_are_config_errors_at_pull_time_too(tmp_path):
    """If the file changes between `load`'s checks and the pull, the source still names the
    problem (never a FileNotFoundError or a DuckDB binder error)."""
    write_csv(tmp_path / "c.csv", HEADER, rows(3))
    with pytest.raises(ConfigError, match=r"sources\.crm\.key: .*has no column 'ident'"):
        source(tmp_path / "c.csv", key="ident").pull(SourceState())
    with pytest.raises(ConfigError, match=r"sources\.crm\.path: file gone\.csv not found"):
        source(tmp_path / "gone.csv").pull(SourceState())


def test_delimiter_must_be_one_character(cli, tmp_path):
    m = setup(tmp_path, delimiter=";;")
    res = cli("validate", "-c", m)
    assert res.exit_code == 2 and "sources.crm.delimiter" in res.stderr


def test_malformed_small_file_is_read_not_refused(cli, tmp_path):
    """A short row and a long one near the top used to fail DuckDB's dialect sniffing."""
    m = setup(tmp_path)
    (tmp_path / "contacts.csv").write_text(
        "id,email,stage,revenue\nk1,a@x.example,customer\nk2,b@x.example,customer,2,9\n"
        "k3,c@x.example,customer,3\nk4,\"d@x.example,customer,4\nk5,e@x.example,customer,5\n",
        encoding="utf-8")
    plan = cli.json("plan", "-c", m)
    assert plan["segments"]["customers"]["matched"] == 3  # k1 (padded), k3 and k5


# ---------------------------------------------------------------- 2. malformed rows


def dirty_file(path: Path, n: int = 3000) -> dict[int, str]:
    """``n`` rows, some broken; returns line number -> what is wrong with it."""
    data = rows(n)
    lines = [",".join(HEADER)] + [",".join(r) for r in data]
    broken = {
        2501: 'k2500,u2500@x.example,"customer,2500',  # quote never closed ...
        2511: 'k2510,u2510@x.example,"customer",2510',  # ... until this row's quotes
        1001: "k1000,u1000@x.example,customer,1000,extra",
        1501: "k1500,u1500@x.example,customer",  # short: padded
    }
    broken = {line: text for line, text in broken.items() if line <= n}
    for line, text in broken.items():
        lines[line - 1] = text
    raw = "\n".join(lines).encode() + b"\n"
    raw = raw.replace(b"u2000@x.example", b"u2000@x.ex\xffample")  # line 2001: not UTF-8
    path.write_bytes(raw)
    return broken


def test_unterminated_quote_loses_only_its_own_row(tmp_path):
    dirty_file(tmp_path / "c.csv")
    src = source(tmp_path / "c.csv")
    pull, keys = read(src)
    lost = {"k1000", "k2000", "k2500"}
    assert sorted(keys) == sorted({f"k{i:04d}" for i in range(1, 3001)} - lost)
    assert len(keys) == len(set(keys))
    bad, short = pull.warnings
    assert bad.startswith("source 'crm': ") and "3 malformed row(s) not read" in bad
    for text in ("line 1001: 5 fields, the header has 4", "line 2001: not UTF-8 text",
                 "line 2501: a quoted value is not closed"):
        assert text in bad
    assert "1 row(s) have fewer fields than the header (line 1501)" in short
    assert "@" not in bad + short  # line numbers, never values
    row = duckdb.sql(f"SELECT * FROM ({pull.sql}) WHERE id = 'k1500'").fetchall()
    assert row == [("k1500", "u1500@x.example", "customer", None)]
    row = duckdb.sql(f"SELECT * FROM ({pull.sql}) WHERE id = 'k2510'").fetchall()
    assert row == [("k2510", "u2510@x.example", "customer", "2510")]


def test_warnings_repeat_while_the_file_is_unchanged(tmp_path):
    store = Store.open(tmp_path / "state.duckdb")

    def pull_into() -> tuple[bool, int, list[str]]:
        src = source(tmp_path / "c.csv")
        pull = src.pull(store.source_state("crm"))
        try:
            n, warnings = store.write_pull("crm", "id", src.schema(), pull, NOW)
        except duckdb.Error:
            pull = pull.fallback()
            n, warnings = store.write_pull("crm", "id", src.schema(), pull, NOW)
        return pull.full, n, warnings

    dirty_file(tmp_path / "c.csv", 1200)
    full, n, first = pull_into()
    assert full and n == 1199 and len(first) == 1 and "line 1001" in first[0]
    assert pull_into() == (False, 0, first)  # not read again, the same warnings
    write_csv(tmp_path / "c.csv", HEADER, rows(1200))  # fixed: read in full, no warnings
    assert pull_into() == (True, 1200, [])
    assert pull_into() == (False, 0, [])
    store.close()


def test_keys_are_trimmed_and_missing_or_repeated_keys_reported(tmp_path):
    """A blank key or a repeated one is counted and named (keys only) in the warnings; the
    first row of a repeated key is the one kept."""
    write_csv(tmp_path / "c.csv", HEADER, [["k1", "a@x.example", "lead", "1"],
                                           ["", "b@x.example", "lead", "2"],
                                           [" k1\t", "c@x.example", "customer", "3"],
                                           ["k2", "d@x.example", "lead", "4"],
                                           ["k2", "e@x.example", "lead", "5"]])
    store = Store.open(tmp_path / "state.duckdb")
    src = source(tmp_path / "c.csv")
    n, warnings = store.write_pull("crm", "id", src.schema(), src.pull(SourceState()), NOW)
    assert n == 2
    assert warnings == [
        "source 'crm': 1 row(s) have no key and were not read; give every row a key",
        "source 'crm': 2 row(s) repeat the key of an earlier row (keys k1, k2); only the "
        "first row of each key was read"]
    rows = store.con.execute('SELECT _key, email FROM snap_crm ORDER BY 1').fetchall()
    assert rows == [("k1", "a@x.example"), ("k2", "d@x.example")]
    store.close()


def test_well_formed_quoting_is_read_as_written(tmp_path):
    path = tmp_path / "c.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerow(["k1", "a@x.example", "line one\nline two", "1"])
        w.writerow(["k2", "b@x.example", 'say "hi", then go', "2"])
        w.writerow(["k3", "c@x.example", "Dwayne \"The Rock\" Johnson", "3"])
    with path.open("a", encoding="utf-8") as fh:
        fh.write('k4,d@x.example,Dwayne "The Rock" Johnson,4\n\n')  # bare quotes; blank line
    src = source(path)
    pull, _ = read(src)
    assert pull.warnings == []
    assert duckdb.sql(f"SELECT stage FROM ({pull.sql}) ORDER BY id").fetchall() == [
        ("line one\nline two",), ('say "hi", then go',), ('Dwayne "The Rock" Johnson',),
        ('Dwayne "The Rock" Johnson',)]


def test_mixed_line_endings_and_a_bad_row(tmp_path):
    """DuckDB refuses a file whose lines end differently (CRLF here, LF there); the
    line-by-line scan reads it all the same."""
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,email,stage,revenue\r\nk1,a@x.example,lead,1\nk2,b@x.example,"
                     b"\"multi\r\nline\",2\r\nk3,c@x.example,lead,3,3\rk4,d@x.example,lead,4")
    src = source(path)
    pull, keys = read(src)
    assert keys == ["k1", "k2", "k4"]
    assert pull.warnings == ["source 'crm': c.csv: 1 malformed row(s) not read (line 5: 5 "
                             "fields, the header has 4); fix them in the file and the next "
                             "run reads them"]
    assert duckdb.sql(f"SELECT stage FROM ({pull.sql}) WHERE id = 'k2'").fetchall() == [
        ("multi\nline",)]


def test_semicolon_file_with_a_bad_row(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id;email;stage;revenue\nk1;a@x.example;lead;1\nk2;\"b;lead;2\n"
                    "k3;c@x.example;lead;3\n", encoding="utf-8")
    pull, keys = read(source(path, delimiter=";"))
    assert sorted(keys) == ["k1", "k3"]
    assert "line 3: a quoted value is not closed" in pull.warnings[0]


def test_malformed_rows_through_the_cli_keep_every_good_row(cli, tmp_path):
    m = setup(tmp_path)
    dirty_file(tmp_path / "contacts.csv")
    plan = cli.json("plan", "-c", m)
    # odd keys are customers (1500); the broken rows are even: k1000, k2000 and k2500 are
    # lost, k1500 (padded) and k2510 say customer
    assert plan["segments"]["customers"]["matched"] == 1502


def test_malformed_rows_are_plan_warnings(cli, tmp_path):
    m = setup(tmp_path)
    dirty_file(tmp_path / "contacts.csv")
    plan = cli.json("plan", "-c", m)
    assert any("3 malformed row(s) not read" in w and "line 2501" in w
               for w in plan["warnings"])


# ---------------------------------------------------------------- 3. unknown option keys


def test_misspelt_destination_key_suggests_the_config_field(cli, tmp_path):
    data = mapping()
    dest = data["destinations"][0]
    dest["identifers"] = dest.pop("identifiers")
    data["destinations"].append({"name": "other", "segment": "customers", "type": "csv",
                                 "path": "out/o.csv", "colour": "red"})
    write_csv(tmp_path / "contacts.csv", HEADER, rows(3))
    m = write_mapping(tmp_path / "m.yaml", data)
    refused(cli, tmp_path, m, "destinations[0].identifers: unknown key 'identifers'; "
            "did you mean 'identifiers'?")
    res = cli("validate", "-c", m)
    line = next(x for x in res.stderr.splitlines() if "colour" in x)
    allowed = line.split("allowed here: ")[1].split(", ")
    assert {"name", "segment", "identifiers", "mode", "path"} <= set(allowed)


def test_misspelt_source_key_suggests_key(cli, tmp_path):
    m = setup(tmp_path, keyy="id")
    refused(cli, tmp_path, m, "sources.crm.keyy: unknown key 'keyy'; did you mean 'key'?")


# ---------------------------------------------------------------- 4. impossible dates


@pytest.mark.parametrize("date", ["2026-13-45", "2026-02-30", "2026-02-30T10:00:00Z"])
def test_unquoted_impossible_date_names_its_path(cli, tmp_path, date):
    setup(tmp_path)
    m = tmp_path / "m.yaml"
    for quoted in (date, f'"{date}"'):
        text = write_mapping(m, mapping(schema={"revenue": "date"})).read_text().replace(
            "    where:\n      field: stage\n      eq: customer\n",
            f"    where:\n      all:\n      - field: revenue\n        after: {quoted}\n")
        m.write_text(text)
        line = text.splitlines().index(f"        after: {quoted}") + 1
        refused(cli, tmp_path, m, f"m.yaml:{line}: segments.customers.where.all[0].after: ",
                f"bad date '{date}' for 'after'")


def test_a_clean_file_is_read_once_strictly_and_a_dirty_one_falls_back(tmp_path):
    write_csv(tmp_path / "c.csv", HEADER, rows(50))
    pull = source(tmp_path / "c.csv").pull(SourceState())
    assert str(tmp_path / "c.csv") in pull.sql and pull.fallback and not pull.warnings
    assert len(duckdb.sql(pull.sql).fetchall()) == 50
    dirty_file(tmp_path / "d.csv", 1200)
    pull = source(tmp_path / "d.csv").pull(SourceState())
    with pytest.raises(duckdb.Error):  # the strict read refuses it ...
        duckdb.sql(pull.sql).fetchall()
    careful = pull.fallback()  # ... and the careful one reads it
    assert "malformed row(s) not read" in careful.warnings[0]
