"""The local store: one embedded DuckDB file holding the snapshot, ledgers, caches, history.
This module opens it, locks it and migrates its schema.

Schema changes are an append-only list of named migrations recorded in the store. A sidecar
``.lock`` file (an OS lock, released if the process dies) keeps two runs from overlapping; it
holds who took it (pid, host, start time), named when another run finds it taken, and is
emptied on release: a lock file still naming a holder was left by a run that died.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ..errors import ConfigError, LockHeld, Problem
from ..sql import lit, q
from .history import History
from .identity_cache import IdentityCache
from .ledger import Ledger
from .lift_groups import LiftGroups
from .report import ReportHistory
from .snapshot import Snapshots

log = logging.getLogger("crmsync")
MEMORY_VAR = "CRMSYNC_MEMORY_LIMIT"

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
    # the ledger without its primary-key index: maintaining it was most of a large write
    # (1,000,000 members: insert 1.18 s + commit 0.81 s, against 0.44 s + 0.03 s), and no
    # query reads through it (batches join by key range); the ledger's writes keep one row
    # per (dest, key) themselves (Ledger: update in place, insert the others, delete first)
    ("009_ledger_unindexed", """
    CREATE TABLE ledger_unindexed (dest VARCHAR, key VARCHAR, fp VARCHAR, value VARCHAR,
        state VARCHAR DEFAULT 'member', synced_at TIMESTAMP);
    INSERT INTO ledger_unindexed SELECT * FROM ledger ORDER BY dest, key;
    DROP TABLE ledger;
    ALTER TABLE ledger_unindexed RENAME TO ledger;
    """),
]
#: migrations of the embedded store only: the shared store's Postgres tables keep their keys
#: (its upserts need them)
EMBEDDED_ONLY = frozenset({"009_ledger_unindexed"})
#: tables keyed by their writes rather than by an index: table -> key columns
UNINDEXED_KEYS = {"ledger": ["dest", "key"]}


class Store(Snapshots, History, ReportHistory, LiftGroups):
    """Open with ``Store.open(path)``; use ``with store.lock():`` around anything that writes.
    Its parts: ``Snapshots`` (snapshot.py), ``History`` (history.py), ``ReportHistory``
    (report.py: what the HTML report reads), ``LiftGroups`` (lift_groups.py), ``ledger(dest)``."""

    def __init__(self, path: Path, read_only: bool = False, mapping: str | None = None):
        self.path = Path(path)
        private(self.path)
        self._lock_fd: int | None = None
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise LockHeld(self._held_message()) from exc
            raise
        self.con.execute("SET TimeZone = 'UTC'")
        self._limit_memory()
        # an automatic checkpoint compresses the temp tables of an evaluation mid-run for
        # nothing (~0.3 s per 1M rows); the store checkpoints when it is closed instead
        self.con.execute("SET checkpoint_threshold = '1GB'")
        self.mapping = self._scope(mapping, read_only)
        if not read_only:
            self.migrate()
            # the store opens for writing only when no other process has it open: a run
            # still 'running' died (killed) and will never record its end
            self.mark_interrupted()

    @classmethod
    def open(cls, path: Path | str, read_only: bool = False, mapping: str | None = None
             ) -> Store:
        """``mapping``: the mapping whose rows to use (its name, see ``Project.name``); None
        takes the store's only mapping (tools, tests), else the unnamed default."""
        return cls(Path(path), read_only, mapping)

    # ------------------------------------------------------------ one schema per mapping
    def _scope(self, mapping: str | None, read_only: bool) -> str | None:
        """Mappings that share a store never share a row: the first mapping that opens the
        file owns its ``main`` schema (its name kept in ``main._mapping``; a store written
        before mappings had names, its rows included, goes to the first mapping that opens
        it), and every other mapping has its tables in a schema named after it. ``None``
        (tools, tests): ``main``."""
        if mapping is None:
            return None
        con = self.con
        has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
                          "AND table_name = '_mapping'").fetchone()[0]
        owner = con.execute("SELECT min(name) FROM main._mapping").fetchone()[0] if has else None
        if owner is None and not read_only:
            con.execute("CREATE TABLE IF NOT EXISTS main._mapping (name VARCHAR)")
            con.execute("INSERT INTO main._mapping VALUES (?)", [mapping])
            owner = mapping
        if owner in (None, mapping):
            return mapping
        if not read_only:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(mapping)}")
        if con.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = ? AND "
                       "database_name = current_database()", [mapping]).fetchone()[0]:
            con.execute(f"USE {q(mapping)}")
        return mapping

    _copy: tempfile.TemporaryDirectory | None = None

    @classmethod
    def open_for_reading(cls, path: Path | str, mapping: str | None = None) -> Store:
        """For commands that only read (``history``, ``report``, offline ``segments`` and
        ``explain``): the store, or, while another process holds it (a run), a private copy
        of its database and write-ahead log. DuckDB lets no other process open a file that
        one holds for writing, not even read-only; the copy shows what the run committed."""
        try:
            return cls(Path(path), mapping=mapping)
        except LockHeld:
            return cls._copy_of(Path(path), mapping)

    @classmethod
    def _copy_of(cls, path: Path, mapping: str | None) -> Store:
        tmp = tempfile.TemporaryDirectory(prefix="crmsync-read-")  # 0700
        copy = Path(tmp.name) / path.name
        try:
            shutil.copyfile(path, copy)
            if Path(f"{path}.wal").exists():
                shutil.copyfile(f"{path}.wal", f"{copy}.wal")
            store = cls(copy, mapping=mapping)
        except (OSError, duckdb.Error) as exc:  # caught mid-checkpoint
            tmp.cleanup()
            raise LockHeld(f"a run is writing the store {path}; try again in a moment "
                           f"({type(exc).__name__})") from None
        store._copy = tmp
        return store

    def close(self) -> None:
        self.con.close()
        self.release()
        if self._copy is not None:
            self._copy.cleanup()
            self._copy = None

    # ------------------------------------------------------------ lock & schema
    @property
    def lock_path(self) -> Path:
        return Path(str(self.path) + ".lock")

    def holder(self) -> dict[str, Any]:
        """Who the lock file names (pid, host, started_at), or {} when it names no one."""
        try:
            data = json.loads(self.lock_path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _held_message(self) -> str:
        h = self.holder()
        who = (f": pid {h.get('pid')} on {h.get('host')}, started {h.get('started_at')}"
               if h else "")
        return (f"another crmsync run holds the lock {self.lock_path} on the store "
                f"{self.path}{who}; wait for it to finish (a killed run's lock is released "
                f"with it, and the next run takes it over)")

    def acquire(self) -> None:
        """Take the run lock or raise LockHeld (exit 4) naming its holder; a private copy
        needs none. A lock file still naming a holder is one a killed run left (the OS
        released its lock): taken over."""
        if self._copy is not None:
            return
        fd = os.open(str(self.lock_path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self._held_message()) from None
        if (old := self.holder()) and old.get("pid") != os.getpid():
            log.warning("taking over the lock %s left by a run that did not finish (pid %s on "
                        "%s, started %s)", self.lock_path, old.get("pid"), old.get("host"),
                        old.get("started_at"))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # names no one: a clean release
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

    def _limit_memory(self) -> None:
        """``CRMSYNC_MEMORY_LIMIT`` (e.g. ``512MB``): the most memory the store's engine
        holds; beyond it, it spills to a temp folder beside the store (default: DuckDB's,
        80% of the machine's memory)."""
        limit = os.environ.get(MEMORY_VAR, "").strip()
        if not limit:
            return
        try:
            self.con.execute(f"SET memory_limit = {lit(limit)}")
        except duckdb.Error:
            self.con.close()
            raise ConfigError([Problem(MEMORY_VAR, f"{limit!r} is not a memory size",
                                       "write e.g. 512MB or 2GB, or unset it",
                                       file="environment")]) from None

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
    def transaction(self, touched: tuple[str, str, list[Any]] | None = None
                    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction, then a commit point. ``touched`` = (table, SQL filter, params):
        the transaction changed only the rows of that table the filter selects (a push
        checkpoint); the shared store then compares only those."""
        self.con.execute("BEGIN")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")
        self._committed(touched)

    def _committed(self, touched: tuple[str, str, list[Any]] | None = None) -> None:
        """A commit point (a transaction, or a write of run history or destination state):
        the shared store (``store.shared``) writes it through to Postgres here."""

    def need_rows(self, table: str, where: str, via: Any = None) -> None:
        """Make sure the store's connection holds the rows of ``table`` that ``where`` (SQL
        of the database holding them, run on connection ``via``) selects: a shared store
        for ``engine: postgres`` loads its largest tables on demand. The embedded store
        holds every row: nothing to do."""


def private(path: Path) -> None:
    """The store holds raw contact data: its folder is made 0700, and its files (the
    database, its write-ahead log, the lock) are 0600. DuckDB creates the log later, with
    the process's umask, so from here on this process creates files private to its user
    (csv outputs and plan files hold contacts too)."""
    os.umask(os.umask(0o077) | 0o077)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for f in (path, Path(f"{path}.wal"), Path(f"{path}.lock")):
        try:
            if f.stat().st_mode & 0o077:
                f.chmod(0o600)  # a store made by an earlier version
        except OSError:
            pass
