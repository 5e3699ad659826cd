"""The local store: one embedded DuckDB file holding the snapshot, ledgers, caches, history.
This module opens it, locks it and migrates its schema.

Schema changes are an append-only list of named migrations recorded in the store. A sidecar
``.lock`` file (an OS lock, released if the process dies) keeps two runs from overlapping.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ..errors import LockHeld
from .history import History
from .identity_cache import IdentityCache
from .ledger import Ledger
from .lift_groups import LiftGroups
from .report import ReportHistory
from .snapshot import Snapshots

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
    # a resync asked for is a flag of its own, no longer a key inside the destination's state
    ("006_resync_flag", """
    ALTER TABLE dest_state ADD COLUMN resync BOOLEAN DEFAULT FALSE;
    UPDATE dest_state SET resync = coalesce(TRY_CAST(json_extract(state, '$.resync') AS BOOLEAN),
        FALSE), state = json_merge_patch(state, '{"resync": null}') WHERE state IS NOT NULL;
    """),
    # the report: contacts sent per segment and run, and per run the whole from -> to matrix
    # of each exclusive group ('' = in none of its segments: joined or left the group)
    ("007_report_history", """
    ALTER TABLE segment_sizes ADD COLUMN sent BIGINT;
    CREATE TABLE group_migrations (run_id BIGINT, grp VARCHAR, from_segment VARCHAR,
        to_segment VARCHAR, contacts BIGINT);
    """),
    # `crmsync lift`: each contact's group (sent / held_out) per segment, from the first run
    # that sent or held it out (store/lift_groups.py)
    ("008_lift_groups", """
    CREATE TABLE lift_groups (segment VARCHAR, key VARCHAR, grp VARCHAR, run_id BIGINT);
    """),
]


class Store(Snapshots, History, ReportHistory, LiftGroups):
    """Open with ``Store.open(path)``; use ``with store.lock():`` around anything that writes.
    Its parts: ``Snapshots`` (snapshot.py), ``History`` (history.py), ``ReportHistory``
    (report.py: what the HTML report reads), ``LiftGroups`` (lift_groups.py), ``ledger(dest)``."""

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

    def identity_cache(self, encoder: str) -> IdentityCache:
        """The identities encoded in Python by ``encoder``."""
        return IdentityCache(self.con, encoder)

    def ledger(self, dest: str) -> Ledger:
        """The ledger and remembered state of destination ``dest``."""
        return Ledger(self, dest)

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

