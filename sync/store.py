"""The local store: one embedded DuckDB file holding the snapshot, ledgers, caches, history.

Schema changes are an append-only list of named migrations recorded in the store. A sidecar
``.lock`` file (an OS lock, released if the process dies) keeps two runs from overlapping.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ..connectors.base import Pull, SourceState
from .errors import LockHeld
from .logs import one_line, redact
from .model import FieldType
from .values import q, strip_sql, typed_sql

MIGRATIONS: list[tuple[str, str]] = [
    ("001_core", """
    CREATE TABLE sources (source VARCHAR PRIMARY KEY, key_field VARCHAR, schema JSON,
        cursor JSON, last_full_at TIMESTAMP, pulled_at TIMESTAMP, version BIGINT DEFAULT 0);
    CREATE TABLE ledger (dest VARCHAR, key VARCHAR, fp VARCHAR, value VARCHAR,
        state VARCHAR DEFAULT 'member', synced_at TIMESTAMP, PRIMARY KEY (dest, key));
    CREATE TABLE dest_state (dest VARCHAR PRIMARY KEY, state JSON, last_synced_at TIMESTAMP,
        version BIGINT DEFAULT 0);
    CREATE SEQUENCE run_ids START 1;
    CREATE TABLE runs (run_id BIGINT PRIMARY KEY, command VARCHAR, started_at TIMESTAMP,
        finished_at TIMESTAMP, as_of TIMESTAMP, status VARCHAR, exit_code INTEGER);
    CREATE TABLE run_destinations (run_id BIGINT, dest VARCHAR, status VARCHAR,
        segment VARCHAR, desired BIGINT, adds BIGINT, removes BIGINT, updates BIGINT,
        rejected BIGINT, deferred BIGINT, unchanged BIGINT, calls BIGINT, retries BIGINT,
        duration_s DOUBLE, message VARCHAR, readback JSON);
    CREATE TABLE rejects (run_id BIGINT, dest VARCHAR, key VARCHAR, reason VARCHAR);
    CREATE TABLE segment_sizes (run_id BIGINT, segment VARCHAR, matched BIGINT,
        held_out BIGINT);
    CREATE TABLE memberships (segment VARCHAR, key VARCHAR);
    CREATE TABLE identity_cache (encoder VARCHAR, fp VARCHAR, value VARCHAR, reason VARCHAR,
        PRIMARY KEY (encoder, fp));
    """),
    ("002_transitions", """
    CREATE TABLE transitions (run_id BIGINT, from_segment VARCHAR, to_segment VARCHAR,
        contacts BIGINT, sample VARCHAR[]);
    """),
    ("003_no_identifier", """
    ALTER TABLE run_destinations ADD COLUMN no_identifier BIGINT;
    """),
    ("004_source_warnings", """
    ALTER TABLE sources ADD COLUMN warnings JSON;
    """),
    # snapshots are stored typed (see Store.write_pull): a snapshot of raw text has no
    # layout, and the next pull of its source is full
    ("005_typed_snapshot", """
    ALTER TABLE sources ADD COLUMN layout JSON;
    """),
]
#: contact keys quoted per reject reason in history, or in a warning about repeated keys
#: (the rest are counted)
KEY_SAMPLE = 5


def snap(source: str) -> str:
    return q(f"snap_{source}")


#: identifier fields of these types keep their text beside their typed value, as ``t:<field>``
#: (a zip typed number is sent "02134"); a string is its own text, a date goes as YYYY-MM-DD
TEXT_KEPT = (FieldType.number, FieldType.bool, FieldType.datetime, FieldType.multi)
#: fields whose values can fail to parse, flagged ``u:<field>`` (any text is a multi)
CHECKED = (FieldType.number, FieldType.bool, FieldType.date, FieldType.datetime)


def layout(key_field: str, schema: dict[str, FieldType], identity: Iterable[str]) -> dict:
    """How a snapshot is stored: its key, its fields' types, the identifiers kept as text.
    A pull whose layout differs from the stored one is made full."""
    return {"key": key_field, "schema": {f: str(t) for f, t in schema.items()},
            "texts": sorted({f for f in identity
                             if f != key_field and schema.get(f) in TEXT_KEPT})}


class Store:
    """Open with ``Store.open(path)``; use ``with store.lock():`` around anything that writes."""

    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise LockHeld(f"another crmsync process holds the store {self.path}") from exc
            raise
        self.con.execute("SET TimeZone = 'UTC'")
        # an automatic checkpoint compresses the temp tables of an evaluation mid-run for
        # nothing (~0.3 s per 1M rows); the store checkpoints when it is closed instead
        self.con.execute("SET checkpoint_threshold = '1GB'")
        if not read_only:
            self.migrate()

    @classmethod
    def open(cls, path: Path | str, read_only: bool = False) -> Store:
        return cls(Path(path), read_only)

    def close(self) -> None:
        self.con.close()
        self.release()

    # ------------------------------------------------------------ lock & schema
    def acquire(self) -> None:
        """Take the run lock or raise LockHeld (exit 4)."""
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(f"another crmsync run holds {self.path}.lock") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def migrate(self) -> None:
        self.con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, "
                         "applied_at TIMESTAMP DEFAULT current_timestamp)")
        done = {r[0] for r in self.con.execute("SELECT name FROM _migrations").fetchall()}
        for name, sql in MIGRATIONS:
            if name not in done:
                self.con.execute("BEGIN")
                self.con.execute(sql)
                self.con.execute("INSERT INTO _migrations (name) VALUES (?)", [name])
                self.con.execute("COMMIT")

    def record_memberships(self, run_id: int, current: str,
                           pairs: list[tuple[str, str]]) -> list[tuple[str, str, int, list]]:
        """Compare this run's memberships (temp table ``current``: segment, key) with the last
        run's; record moves for ``pairs`` (from, to); keep the current ones for next time."""
        moves = []
        con = self.con
        for a, b in pairs:
            row = con.execute(
                f"""SELECT count(*), list(key ORDER BY key)[1:5] FROM (
                    SELECT key FROM memberships WHERE segment = ?
                    EXCEPT SELECT key FROM memberships WHERE segment = ?)
                  JOIN (SELECT key FROM {current} WHERE segment = ?
                    EXCEPT SELECT key FROM {current} WHERE segment = ?) USING (key)""",
                [a, b, b, a]).fetchone()
            if row[0]:
                moves.append((a, b, int(row[0]), list(row[1])))
                con.execute("INSERT INTO transitions VALUES (?, ?, ?, ?, ?)",
                            [run_id, a, b, int(row[0]), list(row[1])])
        with self.transaction():
            con.execute("DELETE FROM memberships")
            con.execute(f"INSERT INTO memberships SELECT segment, key FROM {current}")
        return moves

    @property
    def schema_version(self) -> str:
        return self.con.execute("SELECT max(name) FROM _migrations").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # ------------------------------------------------------------ snapshot
    def source_state(self, source: str) -> SourceState:
        row = self.con.execute("SELECT cursor, last_full_at FROM sources WHERE source = ?",
                               [source]).fetchone()
        if not row:
            return SourceState()
        n = self.con.execute(f"SELECT count(*) FROM {snap(source)}").fetchone()[0] \
            if self.has_snapshot(source) else 0
        return SourceState(json.loads(row[0]) if row[0] else None, row[1], n)

    def has_snapshot(self, source: str) -> bool:
        return bool(self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [f"snap_{source}"]
        ).fetchone()[0])

    def schema(self, source: str) -> tuple[str, dict[str, FieldType]] | None:
        row = self.con.execute("SELECT key_field, schema FROM sources WHERE source = ?",
                               [source]).fetchone()
        if not row or not self.has_snapshot(source):
            return None
        return row[0], {k: FieldType(v) for k, v in json.loads(row[1]).items()}

    def snapshot_version(self) -> int:
        return int(self.con.execute("SELECT coalesce(sum(version), 0) FROM sources").fetchone()[0])

    def layout(self, source: str) -> dict | None:
        """The layout of the stored snapshot (None: none, or raw text from an older version)."""
        row = self.con.execute("SELECT layout FROM sources WHERE source = ?",
                               [source]).fetchone()
        return json.loads(row[0]) if row and row[0] and self.has_snapshot(source) else None

    def write_pull(self, source: str, key_field: str, schema: dict[str, FieldType], pull: Pull,
                   now: datetime, identity: Iterable[str] = ()) -> tuple[int, list[str]]:
        """Commit one pull to the snapshot (and its cursor, in the same transaction).

        The snapshot is stored typed, by SPEC's value rules, once per pull: per field its
        typed value, ``u:<field>`` for a value present but unparseable, and ``t:<field>``
        for the identifier fields (``identity``) whose text ``layout`` keeps. An incremental
        pull must have the stored layout (the runner makes it full otherwise).

        Returns the contacts written and the snapshot's warnings: the pull's own and, for a
        full pull, rows without a key or repeating one (a key is trimmed like any value;
        the first row of a repeated key is kept). A pull that changed nothing repeats the
        warnings of the one that made the snapshot."""
        fields = [f for f in schema if f != key_field]
        shape = layout(key_field, schema, identity)
        warnings = list(pull.warnings)
        with tempfile.TemporaryDirectory() as tmp:
            if pull.sql is not None:
                src = f"({pull.sql})"
            else:
                path = Path(tmp) / "rows.jsonl"
                _write_jsonl(path, pull.rows, [key_field, *fields])
                cols = ", ".join(f"{q(c)}: 'VARCHAR'" for c in [key_field, *fields])
                src = f"read_json({_lit(str(path))}, format='newline_delimited', columns={{{cols}}})"
            rows = _typed_rows(src, key_field, schema, shape["texts"])
            with self.transaction() as con:
                table = snap(source)
                deleted = list(pull.deleted)
                if pull.full:  # the whole population: replace the table in one pass
                    n, problems = self._replace(table, rows)
                    warnings += [f"source '{source}': {w}" for w in problems]
                else:
                    if self.layout(source) not in (None, shape):
                        raise ValueError(f"incremental pull of '{source}' in another layout")
                    self._upsert(source, f"SELECT DISTINCT ON (_key) * FROM ({rows}) "
                                 "WHERE _key <> ''", deleted)
                    n = con.execute("SELECT count(*) FROM _incoming").fetchone()[0]
                # the version moves only when the snapshot did (a plan file stays valid
                # across pulls that found nothing new)
                changed = pull.full or n > 0 or bool(deleted)
                if not changed:
                    row = con.execute("SELECT warnings FROM sources WHERE source = ?",
                                      [source]).fetchone()
                    warnings = json.loads(row[0]) if row and row[0] else warnings
                con.execute(
                    "INSERT OR REPLACE INTO sources (source, key_field, schema, cursor, "
                    "last_full_at, pulled_at, version, warnings, layout) VALUES (?, ?, ?, ?, "
                    "?, ?, coalesce((SELECT version FROM sources WHERE source = ?), 0) + ?, ?, "
                    "?)",
                    [source, key_field, json.dumps(shape["schema"]),
                     json.dumps(pull.cursor) if pull.cursor is not None else None,
                     now if pull.full else self._last_full(source), now, source, int(changed),
                     json.dumps(warnings), json.dumps(shape)])
        return n, warnings

    def _replace(self, table: str, rows: str) -> tuple[int, list[str]]:
        """Replace ``table`` with ``rows``, one row per non-empty key; returns the number of
        contacts and what was wrong with the keys. The snapshot's row order carries no
        meaning, so the write need not keep it (but for the rare pull with bad keys)."""
        con = self.con
        con.execute("SET preserve_insertion_order = false")
        try:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS {rows}")
        finally:
            con.execute("RESET preserve_insertion_order")
        n, blank, keys = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE coalesce(_key, '') = ''), "
            f"count(DISTINCT NULLIF(_key, '')) FROM {table}").fetchone()
        if n == keys:
            return n, []
        problems = []
        if blank:
            problems.append(f"{blank} row(s) have no key and were not read; give every row "
                            "a key")
        if n - blank > keys:
            dup = [r[0] for r in con.execute(
                f"SELECT _key FROM {table} WHERE _key <> '' GROUP BY _key HAVING count(*) > 1 "
                f"ORDER BY _key LIMIT {KEY_SAMPLE + 1}").fetchall()]
            listed = ", ".join(dup[:KEY_SAMPLE]) + (", ..." if len(dup) > KEY_SAMPLE else "")
            problems.append(f"{n - blank - keys} row(s) repeat the key of an earlier row "
                            f"(keys {listed}); only the first row of each key was read")
        # the first row of each key, in the pull's order
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE (_n) FROM "
                    f"(SELECT *, row_number() OVER () AS _n FROM ({rows})) WHERE _key <> '' "
                    f"QUALIFY _n = min(_n) OVER (PARTITION BY _key)")
        return keys, problems

    def _upsert(self, source: str, rows: str, deleted: list[str]) -> None:
        """Incremental pull: replace the changed contacts, drop the deleted ones."""
        con, table = self.con, snap(source)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _incoming AS {rows}")
        if not self.has_snapshot(source):
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM _incoming LIMIT 0")
        con.execute(f"DELETE FROM {table} WHERE _key IN (SELECT _key FROM _incoming)")
        if deleted:
            con.execute(f"DELETE FROM {table} WHERE _key IN (SELECT unnest(?))", [deleted])
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")

    def _last_full(self, source: str) -> datetime | None:
        row = self.con.execute("SELECT last_full_at FROM sources WHERE source = ?",
                               [source]).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------ destination state
    def dest_state(self, dest: str) -> tuple[dict[str, Any], datetime | None]:
        row = self.con.execute("SELECT state, last_synced_at FROM dest_state WHERE dest = ?",
                               [dest]).fetchone()
        return (json.loads(row[0]) if row and row[0] else {}), (row[1] if row else None)

    def save_dest_state(self, dest: str, state: dict[str, Any],
                        synced_at: datetime | None = None) -> None:
        self.con.execute(
            "INSERT INTO dest_state VALUES (?, ?, ?, 1) ON CONFLICT (dest) DO UPDATE SET "
            "state = excluded.state, last_synced_at = coalesce(excluded.last_synced_at, "
            "dest_state.last_synced_at), version = dest_state.version + 1",
            [dest, json.dumps(state), synced_at])

    def forget(self, dest: str) -> int:
        """``resync``: drop a destination's ledger and state so the next run reconciles it."""
        with self.transaction() as con:
            n = con.execute("SELECT count(*) FROM ledger WHERE dest = ?", [dest]).fetchone()[0]
            con.execute("DELETE FROM ledger WHERE dest = ?", [dest])
            con.execute("UPDATE dest_state SET last_synced_at = NULL, version = version + 1, "
                        "state = json_merge_patch(coalesce(state, '{}'), '{\"resync\": true}') "
                        "WHERE dest = ?", [dest])
        return int(n)

    # ------------------------------------------------------------ runs
    def begin_run(self, command: str, started: datetime, as_of: datetime) -> int:
        """Record a run's start (under the lock: a run still 'running' died, e.g. killed; what
        it pushed is in the ledger, checkpointed, and the next run goes on from there)."""
        self.con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
        run_id = self.con.execute("SELECT nextval('run_ids')").fetchone()[0]
        self.con.execute("INSERT INTO runs VALUES (?, ?, ?, NULL, ?, 'running', NULL)",
                         [run_id, command, started, as_of])
        return int(run_id)

    def end_run(self, run_id: int, finished: datetime, status: str, exit_code: int) -> None:
        self.con.execute("UPDATE runs SET finished_at = ?, status = ?, exit_code = ? "
                         "WHERE run_id = ?", [finished, status, exit_code, run_id])

    def record_destination(self, run_id: int, row: dict[str, Any],
                           rejects: Iterable[tuple[str, str]] = ()) -> None:
        cols = ["run_id", "dest", "status", "segment", "desired", "adds", "removes", "updates",
                "rejected", "deferred", "unchanged", "calls", "retries", "duration_s", "message",
                "readback", "no_identifier"]
        vals = [run_id, *(row.get(c) for c in cols[1:])]
        if vals[14]:  # a platform's error text may quote a value
            vals[14] = redact(vals[14])
        if vals[15] is not None:
            vals[15] = json.dumps(vals[15])
        self.con.execute(f"INSERT INTO run_destinations ({', '.join(cols)}) "
                         f"VALUES ({', '.join('?' * len(cols))})", vals)
        rejects = list(rejects)
        if rejects:
            keys, reasons = zip(*rejects, strict=True)
            self.con.execute("INSERT INTO rejects SELECT ?, ?, unnest(?), unnest(?)",
                             [run_id, row["dest"], list(keys), [one_line(r) for r in reasons]])

    def last_readback(self, dest: str) -> dict[str, Any] | None:
        """The platform's own figures (size, match rate) from the last run that had them."""
        row = self.con.execute(
            "SELECT readback FROM run_destinations WHERE dest = ? AND readback IS NOT NULL "
            "ORDER BY run_id DESC LIMIT 1", [dest]).fetchone()
        return json.loads(row[0]) if row else None

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        runs = self.con.execute(
            "SELECT run_id, command, started_at, finished_at, as_of, status, exit_code FROM runs "
            "ORDER BY run_id DESC LIMIT ?", [limit]).fetchall()
        out = []
        for r in runs:
            dests = self.con.execute(
                "SELECT * FROM run_destinations WHERE run_id = ? ORDER BY dest", [r[0]])
            names = [d[0] for d in dests.description]
            rows = [{k: (json.loads(v) if k == "readback" and v else v)
                     for k, v in zip(names, d, strict=True) if k != "run_id"}
                    for d in dests.fetchall()]
            for d in rows:
                d["reject_reasons"] = self.reject_reasons(r[0], d["dest"])
            out.append({
                "run_id": r[0], "command": r[1], "started_at": _iso(r[2]),
                "finished_at": _iso(r[3]), "as_of": _iso(r[4]), "status": r[5],
                "exit_code": r[6], "destinations": rows,
            })
        return out

    def reject_reasons(self, run_id: int, dest: str) -> list[dict[str, Any]]:
        """A run's rejected and unsendable contacts of one destination, per reason: how many,
        and the first few contact keys."""
        rows = self.con.execute(
            f"SELECT reason, count(*), list(key ORDER BY key)[1:{KEY_SAMPLE}] FROM rejects "
            f"WHERE run_id = ? AND dest = ? GROUP BY reason ORDER BY count(*) DESC, reason",
            [run_id, dest]).fetchall()
        return [{"reason": r, "count": int(n), "keys": list(k)} for r, n, k in rows]


def _iso(v: datetime | None) -> str | None:
    return v.strftime("%Y-%m-%dT%H:%M:%SZ") if v else None


def _typed_rows(src: str, key_field: str, schema: dict[str, FieldType],
                texts: list[str]) -> str:
    """SQL: the rows of ``src`` (text columns) as the snapshot stores them: ``_key``, each
    field typed, ``u:<field>`` and ``t:<field>`` (see ``Store.write_pull``). In layers:
    each value is stripped once (``x:<field>``), then typed once."""
    fields = [f for f in schema if f != key_field]
    x = {f: q("x:" + f) for f in fields}
    stripped = ", ".join([f"{strip_sql(f'CAST({q(key_field)} AS VARCHAR)')} AS _key",
                          *(f"{strip_sql(f'CAST({q(f)} AS VARCHAR)')} AS {x[f]}"
                            for f in fields)])
    typed = ", ".join(["_key", *x.values(), *(f"{typed_sql(x[f], schema[f], stripped=True)} "
                                              f"AS {q(f)}" for f in fields)])
    out = ["_key", *(q(f) for f in fields)]
    out += [f"({x[f]} <> '' AND {q(f)} IS NULL) AS {q('u:' + f)}"
            for f in fields if schema[f] in CHECKED]
    out += [f"NULLIF({x[f]}, '') AS {q('t:' + f)}" for f in texts]
    return (f"SELECT {', '.join(out)} FROM (SELECT {typed} FROM "
            f"(SELECT {stripped} FROM {src}))")


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _write_jsonl(path: Path, rows: Iterable[Any], columns: list[str]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            out = {}
            for c in columns:
                v = row.get(c)
                if isinstance(v, list | tuple):
                    v = ";".join(str(x) for x in v)
                elif isinstance(v, bool):
                    v = "true" if v else "false"
                elif v is not None:
                    v = str(v)
                out[c] = v
            fh.write(json.dumps(out) + "\n")
