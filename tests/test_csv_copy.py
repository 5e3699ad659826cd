"""The csv destination's whole-file write: DuckDB's COPY from the store, byte for byte what
Python's csv.writer wrote; no write-ahead marks; a run stopped between the file's replacement
and the ledger's checkpoint converges on the next run."""

from __future__ import annotations

import json
import stat
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from crmsync.connectors.base import Context, Membership, Op
from crmsync.connectors.files import CsvDestination, CsvOptions
from crmsync.sync.mapping.model import DestinationConfig
from crmsync.sync.store.ledger import Ledger

from conftest import read_csv_keys, write_csv, write_mapping

AWKWARD = ["plain", "a,b", 'say "hi"', '"', "line\nbreak", "cr\rlf\r\n", "tab\there",
           " spaced ", "", None, "#hash", "=1+1", "+cmd", "-@x", "émile", "日本語", "😀 astral",
           "\u2028sep", "\ufeffbom", "semi;colon", "back\\slash", "'quote'", "NULL", "\x01"]
KEYS = ["k1", "a,b", 'k"q', "k\nline", "é", "😀", "Z", "a", "B", "k 2", "#k", "ab", "aa",
        "\u00ff", "\u0100", "z" * 300]


def _dest(tmp: Path, identifiers: list[str]) -> CsvDestination:
    cfg = DestinationConfig(name="d", type="csv", segment="s", identifiers=identifiers)
    return CsvDestination(cfg, CsvOptions(path="out/d.csv"), None,
                          Context(now=datetime(2026, 11, 1), base_dir=tmp))


def _members(n_ids: int) -> list[tuple[str, list[str | None]]]:
    """Every key with a run of awkward values (rotating, so each value meets each column)."""
    return [(k, [AWKWARD[(i * 3 + j) % len(AWKWARD)] for j in range(n_ids)])
            for i, k in enumerate(KEYS)]


@pytest.mark.parametrize("identifiers", [["email", "phone", "first_name"], ["email"], []])
def test_copy_writes_what_csv_writer_writes(tmp_path, identifiers):
    members = _members(len(identifiers))
    dest = _dest(tmp_path, identifiers)
    dest._write({k: [v or "" for v in vals] for k, vals in members})
    expected = dest.path.read_bytes()

    con = duckdb.connect()
    con.execute("CREATE TABLE m (key VARCHAR, ident VARCHAR[])")
    con.executemany("INSERT INTO m VALUES (?, ?)", [[k, v] for k, v in members])
    # the value as the core makes it (encode_sql over the identifier columns)
    value = dest.encode_sql({n: f"ident[{i + 1}]" for i, n in enumerate(identifiers)})
    con.execute(f"CREATE TABLE ledger_like AS SELECT key, {value} AS value FROM m")
    dest.path.unlink()
    dest.stage(Membership(con, "SELECT key, value FROM ledger_like"))
    dest.write(Op.ADD, [])
    got = dest.path.read_bytes()
    assert got == expected
    assert got.count(b"\r\n") >= len(KEYS) + 1  # csv.writer's line ending
    assert stat.S_IMODE(dest.path.stat().st_mode) == 0o600
    assert not list(dest.path.parent.glob(".d.csv*"))  # the temp file was renamed


def test_member_values_read_back_equal_the_stored_values(tmp_path):
    """A resync of the file DuckDB wrote finds every member with the value the ledger
    holds, so nothing is updated."""
    ids = ["email", "phone"]
    dest = _dest(tmp_path, ids)
    con = duckdb.connect()
    con.execute("CREATE TABLE m (key VARCHAR, ident VARCHAR[])")
    con.executemany("INSERT INTO m VALUES (?, ?)", [[k, v] for k, v in _members(2)])
    value = dest.encode_sql({"email": "ident[1]", "phone": "ident[2]"})
    stored = dict(con.execute(f"SELECT key, {value} FROM m").fetchall())
    dest.stage(Membership(con, f"SELECT key, {value} AS value FROM m"))
    dest.write(Op.ADD, [])
    assert dest.member_values() == stored


def test_staged_write_then_python_write_agree(tmp_path):
    """With nothing staged, ``write`` applies its changes to the file in Python, as before:
    the conformance battery's path."""
    from crmsync.connectors.base import Change

    dest = _dest(tmp_path, ["email"])
    con = duckdb.connect()
    dest.stage(Membership(con, "SELECT * FROM (VALUES ('b', '[\"x,y\"]'), ('a', '[\"\"]')) "
                               "t(key, value)"))
    dest.write(Op.ADD, [])
    dest.stage(None)
    dest.write(Op.ADD, [Change("c", value=json.dumps(["c@x"]))])
    dest.write(Op.REMOVE, [Change("b")])
    assert dest.path.read_bytes() == b"key,email\r\na,\r\nc,c@x\r\n"
    dest.write(Op.REPLACE, [Change("d", value=json.dumps(["d@x"]))])  # the whole membership
    assert dest.path.read_bytes() == b"key,email\r\nd,d@x\r\n"


def _project(tmp: Path, members: range, batch: int | None = None) -> Path:
    write_csv(tmp / "contacts.csv", ["id", "email", "stage"],
              [[f"k{i:03d}", f"u{i}@x.example", "in" if i in members else "out"]
               for i in range(40)])
    dest = {"name": "d", "segment": "s", "type": "csv", "path": "out.csv",
            "identifiers": ["email"]}
    if batch:
        dest["batch_size"] = batch
    return write_mapping(tmp / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "identity": {"email": "email"}}},
        "segments": {"s": {"where": {"field": "stage", "eq": "in"}}},
        "destinations": [dest],
    })


def _ledger(tmp: Path) -> dict[str, str]:
    con = duckdb.connect(str(tmp / ".crmsync" / "state.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT key, state FROM ledger WHERE dest = 'd'").fetchall())
    finally:
        con.close()


def test_batches_write_the_whole_file_each_and_leave_no_marks(cli, tmp_path, monkeypatch):
    m = _project(tmp_path, range(0, 23), batch=5)
    seen: list[tuple[str, int]] = []  # (op, members in the file) after each batch
    checkpoint = Ledger.checkpoint

    def spy(self, op, *args, **kwargs):
        assert "pending" not in _states(self) and "removing" not in _states(self)
        seen.append((op.value, len(read_csv_keys(tmp_path / "out.csv"))))
        return checkpoint(self, op, *args, **kwargs)

    def _states(ledger: Ledger) -> set[str]:
        return {s for (s,) in ledger.con.execute(
            "SELECT DISTINCT state FROM ledger WHERE dest = 'd'").fetchall()}

    monkeypatch.setattr(Ledger, "checkpoint", spy)
    assert cli("run", "-c", m).exit_code == 0
    assert seen == [("replace", n) for n in (5, 10, 15, 20, 23)]
    m = _project(tmp_path, range(10, 35), batch=5)  # 10 leave, 12 join
    seen.clear()
    run = cli.json("run", "-c", m)["destinations"]["d"]
    assert (run["adds"], run["removes"]) == (12, 10)
    # batches by key range, whatever their ops: k000-k009 leave, then k023-k034 join
    assert seen == [("replace", n) for n in (18, 13, 18, 23, 25)]
    runs = json.loads(cli("history", "-c", m, "--json").stdout)
    assert (runs[0]["destinations"][0]["adds"], runs[0]["destinations"][0]["removes"]) == \
        (12, 10)
    assert read_csv_keys(tmp_path / "out.csv") == {f"k{i:03d}" for i in range(10, 35)}
    assert set(_ledger(tmp_path).values()) == {"member"}


def test_stopped_after_the_file_was_replaced_converges(cli, tmp_path, monkeypatch):
    """The new file landed but the checkpoint did not (the run died there): the next run
    sees a file that is not the one its store remembers, takes the ledger from it, and
    has nothing left to send."""
    m = _project(tmp_path, range(0, 20))
    assert cli("run", "-c", m).exit_code == 0
    m = _project(tmp_path, range(5, 30))

    def dies(self, *args, **kwargs):
        raise RuntimeError("killed before the checkpoint")

    with monkeypatch.context() as mp:
        mp.setattr(Ledger, "checkpoint", dies)
        assert cli("run", "-c", m).exit_code == 1
    want = {f"k{i:03d}" for i in range(5, 30)}
    assert read_csv_keys(tmp_path / "out.csv") == want  # the file landed...
    assert len(_ledger(tmp_path)) == 20  # ...the ledger is the first run's
    run = cli.json("run", "-c", m)["destinations"]["d"]
    assert (run["adds"], run["removes"], run["updates"]) == (0, 0, 0)  # nothing sent twice
    assert set(_ledger(tmp_path)) == want
    assert read_csv_keys(tmp_path / "out.csv") == want


def test_checksum_is_saved_with_the_checkpoint(cli, tmp_path, monkeypatch):
    """Stopped after the checkpoint, before the run saved the destination's state: the
    store already has the new file's checksum, so the next run needs no reconcile."""
    from crmsync.sync.pipeline.push import DestinationSync

    m = _project(tmp_path, range(0, 20))

    def resync(self):
        raise AssertionError("the file was reconciled")

    save = Ledger.save

    def stop(self, state, synced_at=None):
        if synced_at is not None:  # the run's save after the push (open's has none)
            raise RuntimeError("stopped after the push")
        return save(self, state, synced_at)

    with monkeypatch.context() as mp:
        mp.setattr(Ledger, "save", stop)
        assert cli("run", "-c", m).exit_code == 1
    assert len(_ledger(tmp_path)) == 20
    monkeypatch.setattr(DestinationSync, "resync_from_remote", resync)
    run = cli.json("run", "-c", m)["destinations"]["d"]
    assert run["status"] == "ok" and (run["adds"], run["removes"]) == (0, 0)
