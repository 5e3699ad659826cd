"""The embedded default: CSV / JSONL sources and the CSV destination (no network)."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..sync.errors import CrmsyncError
from ..sync.model import FieldType
from ..sync.values import q
from .base import BatchResult, Change, Destination, Op, Pull, Source, SourceState


def _sql_path(p: Path) -> str:
    return "'" + str(p).replace("'", "''") + "'"


class FileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    delimiter: str = ","


class _FileSource(Source):
    """A file that is the whole population. A pull whose file has not changed since the
    last one (same size, modification and change times, inode, key and options: rsync's quick
    check) changes nothing."""

    Options = FileOptions

    @property
    def path(self) -> Path:
        return self.ctx.resolve(self.options.path)

    _columns: list[str] | None = None

    def columns(self) -> list[str]:
        """The file's column names, read once per source object (``schema`` and ``select``
        both need them in one pull)."""
        if self._columns is None:
            self._columns = self.read_columns()
        return self._columns

    @abstractmethod
    def read_columns(self) -> list[str]:
        """The file's column names, from the file."""

    def declared_fields(self) -> list[str]:
        return self.columns()

    def schema(self) -> dict[str, FieldType]:
        return {c: self.config.schema_.get(c, FieldType.string) for c in self.columns()}

    def fingerprint(self) -> dict[str, Any]:
        st = self.path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                "inode": st.st_ino, "key": self.key, "options": self.options.model_dump()}

    def pull(self, state: SourceState) -> Pull:
        fp = self.fingerprint()
        if state.rows and state.cursor == fp:
            return Pull(full=False, cursor=fp)  # unchanged: nothing to upsert or delete
        return Pull(full=True, sql=self.select(), cursor=fp)

    @abstractmethod
    def select(self) -> str:
        """A DuckDB SELECT of every column of the file, as text."""


class CsvSource(_FileSource):
    """``type: csv`` with ``path:``, ``key:`` and ``schema:`` (columns not listed are strings)."""

    def read_columns(self) -> list[str]:
        with self.path.open(newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh, delimiter=self.options.delimiter), [])

    def select(self) -> str:
        cols = ", ".join(f"{q(c)}: 'VARCHAR'" for c in self.columns())
        return (f"SELECT * FROM read_csv({_sql_path(self.path)}, header=true, "
                f"delim={_sql_path(Path(self.options.delimiter))}, columns={{{cols}}}, "
                f"quote='\"', escape='\"', strict_mode=false, null_padding=true)")


class JsonlSource(_FileSource):
    """``type: jsonl``: one JSON object per line; lists become multi-select values."""

    def read_columns(self) -> list[str]:
        """The first object's keys in order, then any other key in the file, sorted (the
        scan is DuckDB's: a large file is not parsed line by line in Python)."""
        import duckdb

        with self.path.open(encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "")
        try:
            rest = duckdb.connect().execute(
                f"SELECT DISTINCT unnest(json_keys(json)) AS k FROM "
                f"read_ndjson_objects({_sql_path(self.path)}) ORDER BY k").fetchall()
            keys = json.loads(first) if first else {}
        except (duckdb.Error, ValueError) as exc:
            raise CrmsyncError(f"{self.path}: not one JSON object per line ({exc})") from None
        return list(dict.fromkeys([*keys, *(k for (k,) in rest)]))

    def select(self) -> str:
        def col(c: str) -> str:
            # a JSON path with a quoted member name: $."name"
            p = "'$.\"" + c.replace("'", "''").replace('"', '\\"') + "\"'"
            return (f"CASE WHEN json_type(json, {p}) = 'ARRAY' THEN array_to_string("
                    f"CAST(json_extract(json, {p}) AS VARCHAR[]), ';') "
                    f"ELSE json_extract_string(json, {p}) END AS {q(c)}")

        sel = ", ".join(col(c) for c in self.columns())
        return f"SELECT {sel} FROM read_ndjson_objects({_sql_path(self.path)})"


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


class CsvDestination(Destination):
    """Writes the current members to ``path``, replaced atomically: a header, then one row per
    member, columns ``key`` and then the destination's ``identifiers`` (raw values)."""

    Options = CsvOptions
    value = "identity"
    max_batch = 1 << 62  # the whole diff in one write

    @property
    def path(self) -> Path:
        return self.ctx.resolve(self.options.path)

    def encode_sql(self, columns: Mapping[str, str]) -> str:
        vals = ", ".join(f"coalesce(CAST({columns[i]} AS VARCHAR), '')" if i in columns else "''"
                         for i in self.config.identifiers)
        return f"to_json([{vals}]::VARCHAR[])" if vals else "'[]'"

    def encode(self, identity: Mapping[str, str | None]) -> str:
        return json.dumps([identity.get(i) or "" for i in self.config.identifiers])

    def needs_open(self, state: dict[str, Any]) -> bool:
        return True  # a free check that the file is still there

    def open(self, state: dict[str, Any]) -> dict[str, Any]:
        if not self.path.exists():
            self._write({})
            return {**state, "resync": True}  # the file is gone: reconcile from what it holds
        return state

    def members(self) -> Iterator[str]:
        return iter(self._read())

    def _read(self) -> dict[str, list[str]]:
        if not self.path.exists():
            return {}
        with self.path.open(newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh)
            next(rows, None)
            return {r[0]: r[1:] for r in rows if r}

    def _write(self, rows: dict[str, list[str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["key", *self.config.identifiers])
            w.writerows([k, *v] for k, v in sorted(rows.items()))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        rows = self._read()
        for c in changes:
            if op is Op.REMOVE:
                rows.pop(c.key, None)
            else:
                rows[c.key] = json.loads(c.value or "[]")
        self._write(rows)
        self.ctx.meter.calls += 1
        return BatchResult.all_done(changes)
