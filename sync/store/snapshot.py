"""The snapshot: each source's contacts as last pulled, stored typed (one table per source,
``snap_<source>``), with its cursor, layout and warnings in ``sources``."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ...connectors.base import Pull, SourceState
from ..mapping.model import FieldType
from ..sql import lit, q

#: contact keys quoted in a warning about repeated keys (the rest are counted)
KEY_SAMPLE = 5


def snap(source: str) -> str:
    return q(f"snap_{source}")


#: identifier fields of these types keep their text beside their typed value, as ``t:<field>``
#: (a zip typed number is sent "02134"); a string is its own text, a date goes as YYYY-MM-DD
TEXT_KEPT = (FieldType.number, FieldType.bool, FieldType.datetime, FieldType.multi)


def layout(key_field: str, schema: dict[str, FieldType], identity: Iterable[str]) -> dict:
    """How a snapshot is stored: its key, its fields' types, the identifiers kept as text.
    A pull whose layout differs from the stored one is made full."""
    return {"key": key_field, "schema": {f: str(t) for f, t in schema.items()},
            "texts": sorted({f for f in identity
                             if f != key_field and schema.get(f) in TEXT_KEPT})}


def key_problems(con: Any, table: str, n: int, blank: int, keys: int) -> list[str]:
    """What is wrong with the keys of ``table`` (``_key``; ``n`` rows, ``blank`` without a
    key, ``keys`` distinct keys), as pull warnings (any SQL connection, DuckDB or
    Postgres)."""
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
    return problems


class Snapshots:
    """The snapshot part of ``Store`` (``con`` and ``transaction`` are the store's)."""

    con: duckdb.DuckDBPyConnection

    def transaction(self) -> Any: ...

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
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary AND "
            "schema_name = current_schema() AND database_name = current_database()",
            [f"snap_{source}"]
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
                src = f"read_json({lit(str(path))}, format='newline_delimited', columns={{{cols}}})"
            rows = _typed_rows(src, key_field, schema, shape["texts"])
            with self.transaction() as con:
                table = snap(source)
                deleted, gone = list(pull.deleted), 0
                if pull.full:  # the whole population: replace the table in one pass
                    n, problems = self._replace(table, rows)
                    warnings += [f"source '{source}': {w}" for w in problems]
                else:
                    if self.layout(source) not in (None, shape):
                        raise ValueError(f"incremental pull of '{source}' in another layout")
                    gone = self._upsert(source, f"SELECT DISTINCT ON (_key) * FROM ({rows}) "
                                        "WHERE _key <> ''", deleted, pull.present)
                    n = con.execute("SELECT count(*) FROM _incoming").fetchone()[0]
                # the version moves only when the snapshot did (a plan file stays valid
                # across pulls that found nothing new)
                changed = pull.full or n > 0 or bool(deleted) or gone > 0
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
        problems = key_problems(con, table, n, blank, keys)
        # the first row of each key, in the pull's order
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * EXCLUDE (_n) FROM "
                    f"(SELECT *, row_number() OVER () AS _n FROM ({rows})) WHERE _key <> '' "
                    f"QUALIFY _n = min(_n) OVER (PARTITION BY _key)")
        return keys, problems

    def _upsert(self, source: str, rows: str, deleted: list[str],
                present: str | None = None) -> int:
        """Incremental pull: replace the changed contacts, drop the deleted ones and, given
        ``present`` (a key scan), the stored ones not in it; returns how many it dropped so."""
        con, table = self.con, snap(source)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _incoming AS {rows}")
        if not self.has_snapshot(source):
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM _incoming LIMIT 0")
        con.execute(f"DELETE FROM {table} WHERE _key IN (SELECT _key FROM _incoming)")
        if deleted:
            con.execute(f"DELETE FROM {table} WHERE _key IN (SELECT unnest(?))", [deleted])
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
        if present is None:
            return 0
        from sqlglot import exp

        from ..sql.portable import Strip, render

        keys = render(Strip(this=exp.cast(exp.column("k"), exp.DataType.Type.VARCHAR)))
        return con.execute(f"DELETE FROM {table} WHERE _key NOT IN (SELECT {keys} FROM "
                           f"({present}) AS p(k) WHERE k IS NOT NULL)").fetchone()[0]

    def _last_full(self, source: str) -> datetime | None:
        row = self.con.execute("SELECT last_full_at FROM sources WHERE source = ?",
                               [source]).fetchone()
        return row[0] if row else None


def _typed_rows(src: str, key_field: str, schema: dict[str, FieldType],
                texts: list[str]) -> str:
    """SQL: the rows of ``src`` (text columns) as the snapshot stores them: ``_key``, each
    field typed, ``u:<field>`` and ``t:<field>`` (see ``Store.write_pull``)."""
    from ..sql.portable import Raw, render
    from .typed import typed_rows

    return render(typed_rows(Raw(this=src), key_field, schema, texts))


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
