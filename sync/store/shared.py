"""The shared store: a PostgreSQL database (``store: postgresql://...``) several runners use.

Layout, in schema ``crmsync`` (created and migrated by crmsync; no superuser, no extension):
the embedded store's tables, made by the same append-only ``MIGRATIONS`` translated by
``pg_ddl`` (the dialect differences, in one place), each with a leading ``mapping`` column
that starts every primary key, so two mappings never share a row; the snapshots as Parquet
(``snapshots``, one row per mapping and source, with its version); the lock holders
(``locks``) and a generation counter per mapping (``mappings``).

A run takes its mapping's lock (``pg_try_advisory_lock`` on a hash of the mapping's name,
held by its session, so the server releases it when a runner dies), then works on a private
DuckDB copy of its mapping's rows, loaded from Postgres, so the embedded engine's SQL runs
unchanged. Every commit point of the copy (a pull, each checkpoint of a push, each run
record) is written back to Postgres, as the rows that changed since the last one, in one
Postgres transaction, before the run goes on: a runner killed at any point leaves the shared
store as of its last commit point, exactly as the embedded store would be left.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LockHeld
from ..sql import lit, q
from .database import EMBEDDED_ONLY, MIGRATIONS, UNINDEXED_KEYS, Store

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgStore", "is_url", "lock_key", "migrate_pg", "open_store", "pg_ddl", "store_url"]

SCHEMA = "crmsync"
URL_PREFIXES = ("postgresql://", "postgres://")
#: the tables only the shared store has (not translated: they have no embedded twin)
PG_ONLY: list[tuple[str, str]] = [
    ("pg_001_shared", f"""
    CREATE TABLE {SCHEMA}.snapshots (mapping TEXT NOT NULL, source TEXT NOT NULL,
        version BIGINT, data BYTEA, PRIMARY KEY (mapping, source));
    CREATE TABLE {SCHEMA}.locks (mapping TEXT PRIMARY KEY, host TEXT, pid BIGINT,
        started_at TIMESTAMP, backend_pid INTEGER);
    CREATE TABLE {SCHEMA}.mappings (mapping TEXT PRIMARY KEY, generation BIGINT DEFAULT 0);
    """),
]
#: the tables an ``engine: postgres`` run loads on demand (``PgStore.need_rows``): the ledger
#: (diffed in the database), the identity cache (the changed rows are encoded again), the
#: lift groups (new ones are found in the database), the members history compares (compared
#: and replaced in the database)
LAZY = ("ledger", "identity_cache", "lift_groups", "memberships")
#: DuckDB type -> Postgres type (lists are kept as JSON text)
PG_TYPES = {"VARCHAR[]": "TEXT", "VARCHAR": "TEXT", "JSON": "TEXT", "DOUBLE": "DOUBLE PRECISION"}


def is_url(store: str) -> bool:
    return store.startswith(URL_PREFIXES)


def pg_ddl(sql: str) -> str:
    """One embedded migration as Postgres DDL in schema ``crmsync``, every table keyed by
    ``mapping`` first. The only dialect differences: type names, and the schema. A data
    move (UPDATE/INSERT/DELETE) rewrites rows of embedded stores written before the shared
    store existed, so it has no Postgres form (a later one that must move shared rows too
    adds its Postgres statement here)."""
    out = []
    for stmt in filter(None, (s.strip() for s in sql.split(";"))):
        if re.match(r"(UPDATE|INSERT|DELETE)\b", stmt):
            continue
        for duck, pg in PG_TYPES.items():
            stmt = re.sub(rf"\b{re.escape(duck)}(?![\w\[])", pg, stmt)
        if m := re.match(r"CREATE TABLE (\w+) \((.*)\)$", stmt, re.S):
            name, body = m.groups()
            items, keys = [], ["mapping"]
            for item in _split(body):
                if pk := re.match(r"PRIMARY KEY \((.*)\)$", item):
                    keys += [c.strip() for c in pk.group(1).split(",")]
                elif " PRIMARY KEY" in item:
                    keys.append(item.split()[0])
                    items.append(item.replace(" PRIMARY KEY", ""))
                else:
                    items.append(item)
            key = f", PRIMARY KEY ({', '.join(keys)})" if len(keys) > 1 else ""
            stmt = (f"CREATE TABLE {SCHEMA}.{name} (mapping TEXT NOT NULL, "
                    f"{', '.join(items)}{key})")
        else:
            stmt = re.sub(r"^(ALTER TABLE|CREATE SEQUENCE) (\w+)", rf"\1 {SCHEMA}.\2", stmt)
        out.append(stmt)
    return ";\n".join(out)


def _split(body: str) -> list[str]:
    """Top-level comma-separated items of a column list."""
    items, depth, cur = [], 0, ""
    for ch in body:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            items.append(" ".join(cur.split()))
            cur = ""
        else:
            cur += ch
    return [*items, " ".join(cur.split())] if cur.strip() else items


def lock_key(mapping: str) -> int:
    """The advisory lock key of a mapping: a signed 64-bit hash of its name."""
    return int.from_bytes(hashlib.sha256(f"crmsync:{mapping}".encode()).digest()[:8], "big",
                          signed=True)


def migrate_pg(conn: psycopg.Connection) -> None:
    """Create or migrate schema ``crmsync`` (one runner at a time)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("migrations")])
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}._migrations (name TEXT PRIMARY "
                     "KEY, applied_at TIMESTAMP DEFAULT (now() AT TIME ZONE 'UTC'))")
        done = {r[0] for r in conn.execute(f"SELECT name FROM {SCHEMA}._migrations")}
        for name, sql in [*((n, pg_ddl(s)) for n, s in MIGRATIONS if n not in EMBEDDED_ONLY),
                          *PG_ONLY]:
            if name not in done:
                for stmt in filter(None, (s.strip() for s in sql.split(";"))):
                    conn.execute(stmt)
                conn.execute(f"INSERT INTO {SCHEMA}._migrations (name) VALUES (%s)", [name])


class PgStore(Store):
    """A ``Store`` whose rows live in Postgres, keyed by mapping (see the module doc)."""

    def __init__(self, url: str, mapping: str, read_only: bool = False,
                 lazy: tuple[str, ...] = ()):
        """``lazy``: tables the working copy does not load, only the rows ``need_rows``
        asks for (``engine: postgres``, whose diffs read the ledger where it lives)."""
        from ...connectors.postgres import connect, describe_dsn

        self.url, self.where = url, describe_dsn(url)
        self._tmp = tempfile.TemporaryDirectory(prefix="crmsync-store-")
        self._held = False
        self.pg = connect(url, where="store", read_only=False, autocommit=True,
                          fix="check store: (postgresql://user:password@host:5432/db): "
                              "host, port, user, password and database")
        migrate_pg(self.pg)
        # the working copy lives in memory (DuckDB spills to its temp directory if need be)
        super().__init__(Path(":memory:"), read_only=False)
        self.con.execute(f"SET temp_directory = '{self._tmp.name}'")
        self.mapping, self.lazy = mapping, lazy
        self.loaded: dict[str, int] = {}  # table -> rows read from Postgres into the copy
        self._bulk: set[str] = set()  # tables a commit point wrote many rows to
        self._tables = self._layout()
        self._gen = -1
        self._load()

    def shared_table(self, table: str) -> str:
        """A FROM item: this mapping's rows of ``table`` as Postgres holds them, for SQL run
        in that database (``engine: postgres``); as of the last commit point."""
        mapping = lit(self.mapping)
        return f"(SELECT * FROM {SCHEMA}.{q(table)} WHERE mapping = {mapping})"

    @property
    def schema_version(self) -> str:
        return self.pg.execute(f"SELECT max(name) FROM {SCHEMA}._migrations "
                               "WHERE name NOT LIKE 'pg\\_%%'").fetchone()[0]

    # ------------------------------------------------------------ the working copy
    def _layout(self) -> dict[str, tuple[list[tuple[str, str]], list[str]]]:
        """table -> ([(column, DuckDB type)], primary key columns) of the working copy."""
        con, out = self.con, {}
        for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = "
                                "'main' AND NOT temporary AND table_name <> '_migrations' "
                                "ORDER BY 1").fetchall():
            cols = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE "
                               "schema_name = 'main' AND table_name = ? ORDER BY column_index",
                               [t]).fetchall()
            pk = con.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE "
                             "schema_name = 'main' AND table_name = ? AND constraint_type = "
                             "'PRIMARY KEY'", [t]).fetchone()
            out[t] = (cols, list(pk[0]) if pk else UNINDEXED_KEYS.get(t, []))
        return out

    def _generation(self) -> int:
        row = self.pg.execute(f"SELECT generation FROM {SCHEMA}.mappings WHERE mapping = %s",
                              [self.mapping]).fetchone()
        return int(row[0]) if row else 0

    def _load(self) -> None:
        """Replace the working copy with the mapping's rows in Postgres."""
        con, tmp = self.con, Path(self._tmp.name)
        with self.pg.transaction():
            self.pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self._gen = self._generation()
            con.execute("BEGIN")
            for t in self._tables:
                con.execute(f"DELETE FROM {q(t)}")
                if t not in self.lazy:
                    self._copy_in(t, "TRUE", self.pg, q(t))
            for snap_name in [r[0] for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                    "AND table_name LIKE 'snap\\_%' ESCAPE '\\'").fetchall()]:
                con.execute(f"DROP TABLE {q(snap_name)}")
            self._snaps: dict[str, int] = {}
            for source, version, data in self.pg.execute(
                    f"SELECT source, version, data FROM {SCHEMA}.snapshots WHERE mapping = %s",
                    [self.mapping]).fetchall():
                path = tmp / "load.parquet"
                path.write_bytes(data)
                con.execute(f"CREATE TABLE {q('snap_' + source)} AS SELECT * FROM "
                            f"read_parquet('{path}')")
                path.unlink()
                self._snaps[source] = int(version)
            top = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchone()[0]
            con.execute("DROP SEQUENCE run_ids")
            con.execute(f"CREATE SEQUENCE run_ids START {int(top)}")
            con.execute("COMMIT")
        con.execute("CREATE SCHEMA IF NOT EXISTS _shadow")
        for t in self._tables:  # what Postgres holds, to write back only what changed
            con.execute(f"CREATE OR REPLACE TABLE _shadow.{q(t)} AS SELECT * FROM {q(t)}")
        self._sig = self._signatures()

    def _copy_in(self, t: str, where: str, via: Any, into: str) -> None:
        """The mapping's rows of ``crmsync.t`` that ``where`` selects (read on connection
        ``via``), typed as the working copy's table, into its table ``into``."""
        cols = self._tables[t][0]
        path = Path(self._tmp.name) / f"load_{t}.csv"
        names = ", ".join(c for c, _ in cols)
        copy_out(via, f"SELECT {names} FROM {SCHEMA}.{t} WHERE mapping = "
                      f"{lit(self.mapping)} AND ({where})", path)
        casts = ", ".join(
            f"from_json(c{i}, '[\"VARCHAR\"]')" if ty == "VARCHAR[]" else
            f"CAST(c{i} AS {ty})" for i, (_c, ty) in enumerate(cols))
        (n,) = self.con.execute(f"INSERT INTO {into} SELECT {casts} FROM "
                                f"{read_copied(path, len(cols))}").fetchone()
        self.loaded[t] = self.loaded.get(t, 0) + int(n)
        path.unlink()

    def replace_shared(self, table: str, select: str, via: Any) -> None:
        """Make the mapping's rows of ``crmsync.table`` what ``select`` gives, in the
        database (on connection ``via``, where ``select``'s tables are), in one transaction:
        a ``lazy`` table's rows that never leave it (the members history compares)."""
        mapping = lit(self.mapping)
        with via.transaction():
            via.execute(f"DELETE FROM {SCHEMA}.{q(table)} WHERE mapping = {mapping}")
            via.execute(f"INSERT INTO {SCHEMA}.{q(table)} SELECT {mapping}, * FROM ({select}) "
                        f"AS _r")

    def need_rows(self, table: str, where: str, via: Any = None) -> None:
        """Load the rows of a ``lazy`` table that ``where`` selects (see ``Store``) into the
        working copy and what it compares with (``_shadow``), replacing any it held."""
        if table not in self.lazy:
            return
        con, (_cols, pk) = self.con, self._tables[table]
        con.execute(f"CREATE OR REPLACE TEMP TABLE _need AS SELECT * FROM {q(table)} LIMIT 0")
        self._copy_in(table, where, via or self.pg, "_need")
        same = " AND ".join(f"t.{c} = n.{c}" for c in pk)
        for schema in ("main", "_shadow"):
            con.execute(f"DELETE FROM {schema}.{q(table)} t WHERE EXISTS (SELECT 1 FROM _need "
                        f"n WHERE {same})")
            con.execute(f"INSERT INTO {schema}.{q(table)} SELECT * FROM _need")
        self._sig.update(self._signatures([table]))

    def _signatures(self, tables: list[str] | None = None) -> dict[str, tuple[int, int]]:
        """table -> (rows, sum of row hashes): a cheap test of whether a table changed."""
        parts = []
        tables = list(self._tables) if tables is None else tables
        for t, (cols, _pk) in ((t, self._tables[t]) for t in tables):
            c = ", ".join(q(x) for x, _ in cols)
            parts.append(f"(SELECT [count(*)::HUGEINT, coalesce(sum(hash({c})), 0)::HUGEINT] "
                         f"FROM {q(t)})")
        row = self.con.execute("SELECT " + ", ".join(parts)).fetchone()
        return {t: (int(v[0]), int(v[1])) for t, v in zip(tables, row, strict=True)}

    def _committed(self, touched: tuple[str, str, list[Any]] | None = None) -> None:
        """A commit point of the working copy: write what changed back to Postgres, in one
        Postgres transaction (only while this run holds the mapping's lock). ``touched``
        (table, SQL filter, params): the commit changed only those rows of that table (a
        push checkpoint), so only they are compared; otherwise every table whose
        signature moved is compared with what Postgres was last given (``_shadow``)."""
        if not self._held:
            return
        changed = False
        with self.pg.transaction():
            if touched is not None:
                t, where, params = touched
                changed = self._sync_rows(t, where, params)
            else:
                now = self._signatures()
                for t, sig in now.items():
                    if sig != self._sig.get(t):
                        changed = self._sync_table(t) or changed
                        self._sig[t] = sig
                changed = self._sync_snapshots() or changed
            if changed:
                self._gen = self.pg.execute(
                    f"INSERT INTO {SCHEMA}.mappings VALUES (%s, 1) ON CONFLICT (mapping) DO "
                    "UPDATE SET generation = mappings.generation + 1 RETURNING generation",
                    [self.mapping]).fetchone()[0]
        # planner statistics now for a table that took many rows (autovacuum would come a
        # minute later: a diff over a ledger the planner still thinks empty picks nested
        # loops, 300 s instead of seconds on a million rows)
        for t in sorted(self._bulk):
            self.pg.execute(f"ANALYZE {SCHEMA}.{t}")
        self._bulk.clear()

    def _sync_rows(self, t: str, where: str, params: list[Any]) -> bool:
        """Write back the rows of primary-key table ``t`` that ``where`` selects."""
        con, (cols, pk) = self.con, self._tables[t]
        keys = ", ".join(pk)
        sig = f"count(*), coalesce(sum(hash({', '.join(q(c) for c, _ in cols)})), 0)"
        con.execute(f"CREATE OR REPLACE TEMP TABLE _was AS SELECT * FROM _shadow.{q(t)} "
                    f"WHERE {where}", params)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _now AS SELECT * FROM main.{q(t)} "
                    f"WHERE {where}", params)
        before, after = con.execute(f"SELECT (SELECT [{sig}] FROM _was), "
                                    f"(SELECT [{sig}] FROM _now)").fetchone()
        if before == after:
            return False
        self._delete(t, pk, con.execute(f"SELECT {keys} FROM _was EXCEPT SELECT {keys} "
                                        "FROM _now").fetchall(), cols)
        self._upload(t, "SELECT * FROM _now EXCEPT SELECT * FROM _was", [], upsert=pk)
        con.execute(f"DELETE FROM _shadow.{q(t)} WHERE {where}", params)
        con.execute(f"INSERT INTO _shadow.{q(t)} SELECT * FROM _now")
        if t in self._sig:  # keep the table's signature current without a scan
            rows, total = self._sig[t]
            self._sig[t] = (rows - before[0] + after[0], total - int(before[1]) + int(after[1]))
        return True

    def _sync_table(self, t: str) -> bool:
        """Write back a table that changed: by primary key; history tables by run; any
        other (memberships) replaced whole."""
        con, (cols, pk) = self.con, self._tables[t]
        names = [c for c, _ in cols]
        if pk:
            keys = ", ".join(pk)
            gone = (f"SELECT {keys} FROM _shadow.{q(t)} EXCEPT SELECT {keys} FROM {q(t)}")
            self._delete(t, pk, con.execute(gone).fetchall(), cols)
            self._upload(t, f"SELECT * FROM {q(t)} EXCEPT SELECT * FROM _shadow.{q(t)}", [],
                         upsert=pk)
        elif "run_id" in names:  # appended per run: send again the runs whose rows differ
            per_run = ("SELECT run_id, count(*), sum(hash({})) FROM {} GROUP BY run_id"
                       .format(", ".join(q(c) for c in names), "{}"))
            runs = [r[0] for r in con.execute(
                f"SELECT run_id FROM ({per_run.format(q(t))} EXCEPT "
                f"{per_run.format('_shadow.' + q(t))}) UNION SELECT run_id FROM "
                f"({per_run.format('_shadow.' + q(t))} EXCEPT {per_run.format(q(t))})"
            ).fetchall()]
            self.pg.execute(f"DELETE FROM {SCHEMA}.{t} WHERE mapping = %s AND run_id = "
                            "ANY(%s)", [self.mapping, runs])
            self._upload(t, f"SELECT * FROM {q(t)} WHERE run_id IN (SELECT unnest(?))",
                         [runs], upsert=None)
        else:
            self.pg.execute(f"DELETE FROM {SCHEMA}.{t} WHERE mapping = %s", [self.mapping])
            self._upload(t, f"SELECT * FROM {q(t)}", [], upsert=None)
        con.execute(f"CREATE OR REPLACE TABLE _shadow.{q(t)} AS SELECT * FROM {q(t)}")
        return True

    def _sync_snapshots(self) -> bool:
        """Send each snapshot whose version moved, as Parquet."""
        con, tmp, sent = self.con, Path(self._tmp.name), False
        for source, version in con.execute("SELECT source, version FROM sources").fetchall():
            if self._snaps.get(source) != version and self.has_snapshot(source):
                path = tmp / "snap.parquet"
                con.execute(f"COPY {q('snap_' + source)} TO '{path}' (FORMAT parquet)")
                self.pg.execute(
                    f"INSERT INTO {SCHEMA}.snapshots VALUES (%s, %s, %s, %s) ON CONFLICT "
                    "(mapping, source) DO UPDATE SET version = excluded.version, "
                    "data = excluded.data", [self.mapping, source, version, path.read_bytes()])
                path.unlink()
                self._snaps[source] = version
                sent = True
        return sent

    def _delete(self, t: str, pk: list[str], keys: list[tuple], cols: list[tuple[str, str]]
                ) -> None:
        types = dict(cols)
        arrays = [[k[i] for k in keys] for i in range(len(pk))]
        casts = ", ".join(f"%s::{'bigint' if types[c] in ('BIGINT', 'INTEGER') else 'text'}[]"
                          for c in pk)
        self.pg.execute(f"DELETE FROM {SCHEMA}.{t} WHERE mapping = %s AND ({', '.join(pk)}) "
                        f"IN (SELECT * FROM unnest({casts}))", [self.mapping, *arrays])

    def _upload(self, t: str, select: str, params: list[Any], upsert: list[str] | None
                ) -> None:
        """Rows of ``select`` (over the working copy) into ``crmsync.t``, through COPY."""
        cols = self._tables[t][0]
        names = [c for c, _ in cols]
        path = Path(self._tmp.name) / f"up_{t}.csv"
        exprs = ", ".join(f"to_json({q(c)})::VARCHAR" if ty == "VARCHAR[]" else q(c)
                          for c, ty in cols)
        mapping = lit(self.mapping)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE _up AS SELECT {mapping}, {exprs} "
                         f"FROM ({select})", params or None)
        target = f"{SCHEMA}.{t}"
        if upsert:
            self.pg.execute(f"CREATE TEMP TABLE IF NOT EXISTS _up_{t} (LIKE {target}); "
                            f"TRUNCATE _up_{t}")
            target = f"_up_{t}"
        copy_sql = f"COPY {target} (mapping, {', '.join(names)}) FROM STDIN (FORMAT csv)"
        n = self.con.execute("SELECT count(*) FROM _up").fetchone()[0]
        if n == 0:
            return
        if n <= 5000:  # a checkpoint's batch: rows straight through, no file
            rows = self.con.execute("SELECT * FROM _up").fetchall()
            with self.pg.cursor() as cur, cur.copy(copy_sql.replace(" (FORMAT csv)", "")
                                                    ) as copy:
                for r in rows:
                    copy.write_row(r)
        else:
            self._bulk.add(t)
            self.con.execute(f"COPY _up TO '{path}' (FORMAT csv, HEADER false)")
            with self.pg.cursor() as cur, path.open("rb") as fh, cur.copy(copy_sql) as copy:
                while block := fh.read(1 << 20):
                    copy.write(block)
            path.unlink()
        if upsert:
            sets = ", ".join(f"{c} = excluded.{c}" for c in names if c not in upsert)
            self.pg.execute(f"INSERT INTO {SCHEMA}.{t} SELECT * FROM {target} ON CONFLICT "
                            f"(mapping, {', '.join(upsert)}) DO "
                            + (f"UPDATE SET {sets}" if sets else "NOTHING"))

    # ------------------------------------------------------------ the lock
    def acquire(self) -> None:
        """Take the mapping's lock (exit 4 naming the holder when another run has it), then
        reload the working copy if another runner committed since it was loaded."""
        got = self.pg.execute("SELECT pg_try_advisory_lock(%s)",
                              [lock_key(self.mapping)]).fetchone()[0]
        if not got:
            raise LockHeld(f"another crmsync run holds the lock of mapping '{self.mapping}' "
                           f"in the store {self.where}: {self._holder()}")
        self.pg.execute(
            f"INSERT INTO {SCHEMA}.locks VALUES (%s, %s, %s, %s, pg_backend_pid()) ON CONFLICT "
            "(mapping) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "started_at = excluded.started_at, backend_pid = excluded.backend_pid",
            [self.mapping, socket.gethostname(), os.getpid(),
             datetime.now(UTC).replace(tzinfo=None, microsecond=0)])
        self._held = True
        if self._generation() != self._gen:
            self._load()

    def _holder(self) -> str:
        """Who holds the lock, as its row says (the holder writes it just after taking it)."""
        for _ in range(20):
            row = self.pg.execute(
                f"SELECT l.host, l.pid, l.started_at FROM {SCHEMA}.locks l JOIN "
                "pg_stat_activity a ON a.pid = l.backend_pid WHERE l.mapping = %s",
                [self.mapping]).fetchone()
            if row:
                return (f"host {row[0]}, pid {row[1]}, started "
                        f"{row[2].strftime('%Y-%m-%dT%H:%M:%SZ')}")
            time.sleep(0.05)
        return "holder not recorded yet"

    def release(self) -> None:
        if self._held:
            self._held = False
            self.pg.execute(f"DELETE FROM {SCHEMA}.locks WHERE mapping = %s AND "
                            "backend_pid = pg_backend_pid()", [self.mapping])
            self.pg.execute("SELECT pg_advisory_unlock(%s)", [lock_key(self.mapping)])

    def close(self) -> None:
        try:
            self.release()
        finally:
            self.pg.close()
            self.con.close()
            self._tmp.cleanup()


def copy_out(pg: Any, select: str, path: Path) -> None:
    """The rows of Postgres ``select`` into file ``path``, as ``COPY ... TO STDOUT`` CSV."""
    with pg.cursor() as cur, path.open("wb") as fh, cur.copy(
            f"COPY ({select}) TO STDOUT (FORMAT csv)") as copy:
        for block in copy:
            fh.write(block)


def read_copied(path: Path, n: int) -> str:
    """A DuckDB FROM item reading a ``copy_out`` file of ``n`` columns as text ``c0``...,
    NULL and the empty text kept apart (Postgres quotes an empty text, never a NULL)."""
    types = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n))
    return (f"read_csv({lit(str(path))}, header=false, auto_detect=false, "
            f"columns={{{types}}}, quote='\"', escape='\"', allow_quoted_nulls=false)")


def open_store(project: Any, read_only: bool = False) -> Store:
    """The store of a loaded mapping (``Project``): its DuckDB file, scoped to the mapping's
    name, or the shared Postgres store its ``store:`` URL names."""
    url = store_url(project)
    if url:  # engine: postgres diffs in the database: its ledger is not loaded whole
        lazy = LAZY if getattr(project.mapping, "engine", "duckdb") == "postgres" else ()
        return PgStore(url, project.name, read_only, lazy)
    if read_only:
        return Store.open_for_reading(project.store_path, mapping=project.name)
    return Store.open(project.store_path, mapping=project.name)


def store_url(project: Any) -> str | None:
    """The Postgres URL of a mapping's store; with ``engine: postgres`` and no ``store:``,
    the source's own database. None: the embedded DuckDB file."""
    m = project.mapping
    if is_url(m.store):
        return m.store
    if getattr(m, "engine", "duckdb") == "postgres" and "store" not in m.model_fields_set:
        return warehouse_dsn(project)
    return None


def warehouse_dsn(project: Any) -> str | None:
    """The DSN of the first source on a postgres connection, if any."""
    for src in project.mapping.sources.values():
        conn = project.mapping.connections.get(src.connection or "")
        if conn is not None and conn.type == "postgres":
            dsn = (conn.model_extra or {}).get("dsn")
            return str(dsn) if dsn else None
    return None

