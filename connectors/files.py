"""The embedded default: CSV / JSONL sources and the CSV destination (no network)."""

from __future__ import annotations

import bisect
import codecs
import csv
import hashlib
import io
import json
import os
import re
import stat
import tempfile
from abc import abstractmethod
from array import array
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from ..sync.errors import ConfigError, CrmsyncError, DestinationStopped, Problem
from ..sync.mapping.model import FieldType
from ..sync.sql import lit, q
from .base import (
    BatchResult,
    Change,
    Destination,
    Membership,
    Op,
    Pull,
    RemoteState,
    Source,
    SourceState,
)


def _sql_path(p: Path) -> str:
    return lit(str(p))


#: malformed rows quoted by line number in a warning (the rest are counted)
_FIRST = 5
#: headers already read, by file fingerprint (a jsonl header is a scan of the whole file, and
#: `load` checks the header before the pull reads it again)
_HEADERS: dict[str, list[str]] = {}


class FileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    delimiter: str = Field(",", min_length=1, max_length=1)


class _FileSource(Source):
    """A file that is the whole population. A pull whose file has not changed since the
    last one (same size, modification and change times, inode, key and options: rsync's quick
    check) changes nothing (and the store repeats the warnings of the pull that read it)."""

    Options = FileOptions

    @property
    def path(self) -> Path:
        return self.ctx.resolve(self.options.path)

    _columns: list[str] | None = None

    def problem(self, key: str, message: str, fix: str) -> ConfigError:
        """A ConfigError about this source's ``key:`` in the mapping (file:line added by
        ``sync.pipeline.checks``)."""
        return ConfigError([Problem(f"sources.{self.name}.{key}", message, fix)])

    def columns(self) -> list[str]:
        """The file's column names, read once per file version (``load``'s checks, ``schema``
        and the read all need them)."""
        if self._columns is None:
            fp = json.dumps(self.fingerprint(), sort_keys=True)
            if fp not in _HEADERS:
                if len(_HEADERS) > 64:
                    _HEADERS.clear()
                _HEADERS[fp] = self._header()
            self._columns = _HEADERS[fp]
        return self._columns

    def _header(self) -> list[str]:
        where = f"{self.options.path} (looked in {self.path})"
        try:
            cols = self.read_columns()
        except UnicodeDecodeError:
            raise self.problem("path", f"{self.options.path} is not UTF-8 text",
                               "save the file as UTF-8 (CSV UTF-8 in Excel)") from None
        except OSError as exc:
            raise self.problem("path", f"cannot read {where}: {exc.strerror}",
                               "check the file's permissions") from None
        if not cols:
            raise self.problem("path", f"{self.options.path} is empty",
                               "export the contacts into it (a csv file starts with a "
                               "header row naming the columns)")
        blank = [i + 1 for i, c in enumerate(cols) if not c.strip()]
        dup = next((c for i, c in enumerate(cols) if c in cols[:i]), None)
        if blank:
            raise self.problem("path", f"column {blank[0]} of the header of "
                               f"{self.options.path} has no name",
                               "name every column in the first line (or remove a "
                               "trailing delimiter)")
        if dup is not None:
            raise self.problem("path", f"column '{dup}' appears twice in the header of "
                               f"{self.options.path}", "rename one of them")
        return cols

    @abstractmethod
    def read_columns(self) -> list[str]:
        """The file's column names, from the file."""

    def declared_fields(self) -> list[str]:
        return self.columns()

    def schema(self) -> dict[str, FieldType]:
        return {c: self.config.schema_.get(c, FieldType.string) for c in self.columns()}

    def fingerprint(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise self.problem("path", f"file {self.options.path} not found (looked in "
                               f"{self.path})", "paths are relative to the mapping file's "
                               "folder: fix path:, or create the file") from None
        except OSError as exc:
            raise self.problem("path", f"cannot read {self.options.path}: {exc.strerror}",
                               "check the path and the file's permissions") from None
        if not stat.S_ISREG(st.st_mode):
            raise self.problem("path", f"{self.options.path} is not a file",
                               "point path: at the exported file")
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                "inode": st.st_ino, "key": self.key, "options": self.options.model_dump()}

    def pull(self, state: SourceState) -> Pull:
        fp = self.fingerprint()
        if state.rows and state.cursor == fp:  # unchanged: nothing to upsert or delete
            return Pull(full=False, cursor=fp)
        if self.key not in self.columns():  # `load` checks this; the file changed since
            raise self.problem("key", f"{self.options.path} has no column '{self.key}' "
                               "(the source's key)", "set key: to a column of the file")
        return self.full_pull(fp)

    def full_pull(self, fp: dict[str, Any]) -> Pull:
        """The whole file (``read``), with the file's fingerprint as the cursor."""
        sql, warnings = self.read()
        return Pull(full=True, sql=sql, cursor=fp, warnings=warnings)

    @abstractmethod
    def read(self) -> tuple[str, list[str]]:
        """A DuckDB SELECT of every column of the file, as text, and warnings about rows
        that could not be read as they are (counted, with their line numbers)."""


class CsvSource(_FileSource):
    """``type: csv`` with ``path:``, ``key:`` and ``schema:`` (columns not listed are strings).

    RFC 4180 quoting; DuckDB reads the file with the dialect given, no sniffing. A row that is
    not well-formed is never silently dropped, and never takes the rows after it along: the
    store first reads the file strictly, and when DuckDB rejects any record there, the pull's
    ``fallback`` (``read``) scans the file line by line (``_clean_copy``) into a copy without
    the malformed rows (and with short rows padded), which is then read instead, and the
    pull's warnings name those lines. A clean file is read once."""

    _tmp: tempfile.TemporaryDirectory | None = None  # the cleaned copy, kept for the read

    def read_columns(self) -> list[str]:
        with self.path.open("rb") as fh:  # decode the header only: a bad byte below is a row's
            head = fh.read(1 << 20).decode("utf-8-sig", errors="replace")
        cols = next(csv.reader(io.StringIO(head, newline=""),
                               delimiter=self.options.delimiter), [])
        if any("\ufffd" in c for c in cols):
            raise self.problem("path", f"the header of {self.options.path} is not UTF-8 text",
                               "save the file as UTF-8 (CSV UTF-8 in Excel)")
        others = [d for d in ",;\t|" if d != self.options.delimiter
                  and len(cols) == 1 and d in cols[0]]
        if others:
            raise self.problem("delimiter", f"the header of {self.options.path} is one column "
                               f"({cols[0][:60]!r}): it seems to use {others[0]!r} between "
                               "columns", f"set delimiter: {others[0]!r}")
        return cols

    def _read_csv(self, path: Path, option: str) -> str:
        cols = ", ".join(f"{q(c)}: 'VARCHAR'" for c in self.columns())
        delim = lit(self.options.delimiter)
        return (f"read_csv({_sql_path(path)}, header=true, auto_detect=false, delim={delim}, "
                f"quote='\"', escape='\"', columns={{{cols}}}, {option})")

    def rejected(self, path: Path) -> list[tuple[int, str]]:
        """(byte position, error) of each record DuckDB rejects in ``path``: its scan of
        the key column checks every record's quoting and number of fields. Raises
        ``duckdb.Error`` when it cannot read the file at all (e.g. mixed line endings)."""
        import duckdb

        con = duckdb.connect()
        try:
            con.execute(f"SELECT count({q(self.key)}) FROM "
                        f"{self._read_csv(path, 'store_rejects=true')}").fetchall()
            return con.execute("SELECT DISTINCT line_byte_position, lower(error_type) "
                               "FROM reject_errors ORDER BY 1").fetchall()
        finally:
            con.close()

    def full_pull(self, fp: dict[str, Any]) -> Pull:
        if not _utf8(self.path):
            return super().full_pull(fp)
        strict = f"SELECT * FROM {self._read_csv(self.path, 'ignore_errors=false')}"
        return Pull(full=True, sql=strict, cursor=fp,
                    fallback=lambda: super(CsvSource, self).full_pull(fp))

    def read(self) -> tuple[str, list[str]]:
        import duckdb

        path = self.path
        try:
            if _utf8(path) and not self.rejected(path):
                return f"SELECT * FROM {self._read_csv(path, 'ignore_errors=true')}", []
        except duckdb.Error:
            pass  # the line-by-line scan below finds what DuckDB could not read
        self._tmp = tempfile.TemporaryDirectory(prefix="crmsync-")
        clean = Path(self._tmp.name) / path.name
        found = _clean_copy(path, clean, self.options.delimiter, len(self.columns()))
        try:
            for pos, error in self.rejected(clean):  # what DuckDB still refuses: reported
                found.bad.append((found.origin(pos), error))
        except duckdb.Error as exc:
            raise CrmsyncError(f"{self.path}: cannot read the file as CSV: "
                               f"{str(exc).splitlines()[0]}") from None
        return (f"SELECT * FROM {self._read_csv(clean, 'ignore_errors=true')}",
                found.warnings(f"source '{self.name}': {self.options.path}"))


def _utf8(path: Path) -> bool:
    """Whether the whole file is UTF-8 (DuckDB's key-column scan does not decode the other
    columns; Python does, at memory speed)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


class JsonlSource(_FileSource):
    """``type: jsonl``: one JSON object per line; lists become multi-select values. A line
    that is not a JSON object is not read, and is reported (counted, with its line number)."""

    def _scan(self) -> str:
        # DuckDB reads a malformed line as NULL (ignore_errors), never as the end of the file
        return f"read_ndjson_objects({_sql_path(self.path)}, ignore_errors=true)"

    def read_columns(self) -> list[str]:
        """The first object's keys in order, then any other key in the file, sorted (the
        scan is DuckDB's: a large file is not parsed line by line in Python)."""
        import duckdb

        first: dict[str, Any] = {}
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    try:
                        first = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(first, dict):
                        break
                    first = {}
        try:
            rest = duckdb.connect().execute(
                f"SELECT DISTINCT unnest(json_keys(json)) AS k FROM {self._scan()} "
                f"WHERE json_type(json) = 'OBJECT' ORDER BY k").fetchall()
        except duckdb.Error as exc:
            raise CrmsyncError(f"{self.path}: cannot read the file as JSON lines "
                               f"({str(exc).splitlines()[0]})") from None
        return list(dict.fromkeys([*first, *(k for (k,) in rest)]))

    def _malformed(self) -> list[tuple[int, str]]:
        """(line number, why) of each line that is not a JSON object: counted by DuckDB,
        located in Python only when there are some."""
        import duckdb

        (n,) = duckdb.connect().execute(
            f"SELECT count(*) FILTER (WHERE json IS NULL OR json_type(json) <> 'OBJECT') "
            f"FROM {self._scan()}").fetchone()
        bad: list[tuple[int, str]] = []
        if n:
            with self.path.open("rb") as fh:
                for i, raw in enumerate(fh, 1):
                    if raw.strip():
                        try:
                            obj = json.loads(raw)
                        except ValueError:
                            bad.append((i, "not valid JSON"))
                            continue
                        if not isinstance(obj, dict):
                            bad.append((i, "not a JSON object"))
        return bad

    def read(self) -> tuple[str, list[str]]:
        def col(c: str) -> str:
            # a JSON path with a quoted member name: $."name"
            p = "'$.\"" + c.replace("'", "''").replace('"', '\\"') + "\"'"
            return (f"CASE WHEN json_type(json, {p}) = 'ARRAY' THEN array_to_string("
                    f"CAST(json_extract(json, {p}) AS VARCHAR[]), ';') "
                    f"ELSE json_extract_string(json, {p}) END AS {q(c)}")

        sel = ", ".join(col(c) for c in self.columns())
        return (f"SELECT {sel} FROM {self._scan()} WHERE json_type(json) = 'OBJECT'",
                malformed_warnings(f"source '{self.name}': {self.options.path}",
                                   self._malformed()))


# ---------------------------------------------------------------- malformed csv rows


class _Undecodable(Exception):
    pass


@dataclass
class _Cleaned:
    """What ``_clean_copy`` found: malformed lines (line number, why), short rows padded, and
    where each written row starts in the copy (to map DuckDB's positions back)."""

    bad: list[tuple[int, str]] = field(default_factory=list)
    padded: list[int] = field(default_factory=list)
    starts: array = field(default_factory=lambda: array("q"))
    lines: array = field(default_factory=lambda: array("q"))

    def origin(self, pos: int) -> int:
        """The original line of the row at (1-based) byte ``pos`` of the copy."""
        i = bisect.bisect_right(self.starts, pos - 1) - 1
        return self.lines[max(i, 0)] if self.lines else 1

    def warnings(self, where: str) -> list[str]:
        out = malformed_warnings(where, self.bad)
        if self.padded:
            listed = ", ".join(map(str, self.padded[:_FIRST]))
            more = f" and {len(self.padded) - _FIRST} more" if len(self.padded) > _FIRST else ""
            out.append(f"{where}: {len(self.padded)} row(s) have fewer fields than the header "
                       f"(line {listed}{more}); their missing last fields were read as empty")
        return out


def malformed_warnings(where: str, bad: list[tuple[int, str]]) -> list[str]:
    """The warning for rows not read: how many, and the first few lines with the reason."""
    if not bad:
        return []
    bad = sorted(bad)
    listed = "; ".join(f"line {n}: {why}" for n, why in bad[:_FIRST])
    more = f"; and {len(bad) - _FIRST} more" if len(bad) > _FIRST else ""
    return [f"{where}: {len(bad)} malformed row(s) not read ({listed}{more}); "
            "fix them in the file and the next run reads them"]


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """The file's physical lines, endings kept (LF, CRLF or a lone CR, as DuckDB reads them),
    in chunks: the file is never all in memory."""
    rest = b""
    while chunk := fh.read(1 << 22):
        lines = (rest + chunk).splitlines(keepends=True)
        rest = lines.pop()  # may be cut short (or a CR whose LF is in the next chunk)
        yield from lines
    if rest:
        yield rest


def _why(exc: Exception, lines: int) -> str:
    """Why a record failed, in words (``lines``: how many lines it had taken)."""
    text = str(exc)
    if "field limit" in text and lines <= 1:  # one line: a huge value, not an open quote
        return f"a value is longer than {csv.field_size_limit() // 1024} KB"
    if lines > 1 or "end of data" in text or "field limit" in text:
        return "a quoted value is not closed"
    if isinstance(exc, _Undecodable):
        return "not UTF-8 text"
    if "expected after" in text:
        return "text after a closing quote"
    return "bad quoting"


def _clean_copy(src: Path, dst: Path, delimiter: str, width: int) -> _Cleaned:
    """Copy ``src`` to ``dst`` without its malformed rows, padding short ones.

    Python's csv module splits records (quoted values may span lines). A record that fails
    (bad quoting, a quote never closed, more fields than the header, not UTF-8) loses only
    its first line: the lines it swallowed are read again as rows of their own. Well-formed
    rows are copied as they are, but for their line endings (all LF: DuckDB refuses a file
    that mixes them)."""
    found = _Cleaned()
    pending: deque[tuple[int, bytes]] = deque()  # lines to read again after a failed record
    taken: list[tuple[int, bytes]] = []  # the lines of the record being read
    pos = 0
    header = True
    with src.open("rb") as fin, dst.open("wb") as out:
        numbered = enumerate(_lines(fin), 1)

        def text() -> Iterator[str]:
            while True:
                item = pending.popleft() if pending else next(numbered, None)
                if item is None:
                    return
                taken.append(item)
                try:
                    yield item[1].decode("utf-8")
                except UnicodeDecodeError:
                    raise _Undecodable from None

        def write(lines: list[bytes], line: int) -> None:
            nonlocal pos
            data = lines[0] if len(lines) == 1 else b"\n".join(x.rstrip(b"\r\n") for x in lines)
            if not data.endswith(b"\n") or data.endswith(b"\r\n"):
                data = data.rstrip(b"\r\n") + b"\n"  # one ending: LF
            found.starts.append(pos)
            found.lines.append(line)
            out.write(data)
            pos += len(data)

        while True:
            try:
                for row in csv.reader(text(), delimiter=delimiter, strict=True):
                    line = taken[0][0]
                    if header or len(row) == width:
                        write([raw for _, raw in taken], line)
                        header = False
                    elif len(row) > width and len(taken) == 1:
                        found.bad.append((line, f"{len(row)} fields, the header has {width}"))
                    elif len(row) > width:  # a quote swallowed the next lines: read them again
                        found.bad.append((line, "a quoted value is not closed"))
                        pending.extendleft(reversed(taken[1:]))
                    elif row:  # short: pad (an empty line is skipped, as DuckDB does)
                        buf = io.StringIO()
                        csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(
                            row + [""] * (width - len(row)))
                        write([buf.getvalue().encode("utf-8")], line)
                        found.padded.append(line)
                    taken.clear()
                return found
            except (csv.Error, _Undecodable) as exc:
                if header:  # DuckDB skips the first line whatever it holds
                    write([taken[0][1]], 1)
                    header = False
                else:
                    found.bad.append((taken[0][0], _why(exc, len(taken))))
                pending.extendleft(reversed(taken[1:]))
                taken.clear()


def temp_path(path: Path) -> Path:
    """Where the csv destination writes ``path`` before replacing it: one fixed name
    beside it, so a run killed mid-write leaves a file the next run finds."""
    return path.with_name(f".{path.name}.crmsync-tmp")


def remove_stale_temps(path: Path) -> None:
    """Remove what a killed write left beside ``path``: ``temp_path`` and the randomly
    named ``.<name>.XXXXXXXX`` files of earlier versions (``tempfile.mkstemp``)."""
    old = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]{8}")
    try:
        found = [p for p in path.parent.iterdir()
                 if p == temp_path(path) or old.fullmatch(p.name)]
    except OSError:
        return
    for p in found:
        if p.is_file():
            p.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The checksum of a file crmsync wrote, to notice a hand edit on the next run."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


#: how the csv destination writes, as Python's ``csv.writer()`` does by default: RFC 4180
#: quoting where a value holds a comma, a quote or a line break, CRLF after each row; DuckDB
#: writes a NULL as nothing (an empty string would be ``""``) and, with no comment character,
#: does not quote a ``#``
_COPY_CSV = ("FORMAT csv, HEADER false, DELIMITER ',', QUOTE '\"', ESCAPE '\"', "
             "NEW_LINE '\r\n', COMMENT ''")


class CsvDestination(Destination):
    """Writes the current members to ``path``, replaced atomically: a header, then one row per
    member in key order, columns ``key`` and then the destination's ``identifiers`` (raw
    values). The core ``stage``s the whole membership (``whole``), which DuckDB writes from
    the store (``COPY``); a ``write`` with nothing staged applies its changes in Python."""

    Options = CsvOptions
    target_option = "path"
    value = "identity"
    whole = True
    max_batch = 1 << 62  # the whole diff in one write
    _state: dict[str, Any] | None = None  # what open() returned; the file's checksum kept in it
    _staged: Membership | None = None

    @property
    def path(self) -> Path:
        return self.ctx.resolve(self.options.path)

    def encode_sql(self, columns: Mapping[str, str], dialect: str = "duckdb") -> str:
        vals = [f"coalesce(CAST({columns[i]} AS VARCHAR), '')" if i in columns else "''"
                for i in self.config.identifiers]
        if not vals:
            return "'[]'"
        if dialect == "postgres":  # the same text as DuckDB's to_json of the list
            return "('[' || " + " || ',' || ".join(f"to_json(CAST({v} AS text))::text" for v in vals) + \
                " || ']')"
        return f"to_json([{', '.join(vals)}]::VARCHAR[])"

    def encode(self, identity: Mapping[str, str | None]) -> str:
        return json.dumps([identity.get(i) or "" for i in self.config.identifiers])

    def needs_open(self, state: RemoteState) -> bool:
        return True  # a free check that the file is still there, and as written

    def open(self, state: RemoteState) -> RemoteState:
        """Remove temp files a killed run left; when the file is gone, or is not the file
        crmsync last wrote (edited by hand: its checksum differs), reconcile from what it
        holds now (``resync``), so the next write puts it right."""
        remove_stale_temps(self.path)
        if self.path.is_dir() or (self.path.exists() and not self.path.is_file()):
            raise DestinationStopped(f"{self.options.path} is not a file (looked in "
                                     f"{self.path}); remove it, or set path: to a file")
        self._state = dict(state)
        if not self.path.exists():
            self._write({})
            return RemoteState(self._state, resync=True)  # gone: reconcile from it
        if state.get("sha256") and state["sha256"] != (now := file_sha256(self.path)):
            # edited since crmsync wrote it: the ledger becomes what the file holds now
            self._state["sha256"] = now
            return RemoteState(self._state, resync=True)
        return RemoteState(self._state)

    def remember(self) -> dict[str, Any] | None:
        """The state with the checksum of the file as last written."""
        return self._state

    def members(self) -> Iterator[str]:
        return iter(self._read())

    def member_values(self) -> dict[str, str]:
        """Each member's value as ``encode_sql`` makes it (DuckDB's ``to_json`` of the
        identifiers), so a resync of an unchanged file finds nothing to update."""
        return {k: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                for k, v in self._read().items()}

    def _read(self) -> dict[str, list[str]]:
        if not self.path.exists():
            return {}
        with self.path.open(newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh)
            next(rows, None)
            return {r[0]: r[1:] for r in rows if r}

    def _write(self, rows: dict[str, list[str]]) -> None:
        tmp = self._temp()
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["key", *self.config.identifiers])
            w.writerows([k, *v] for k, v in sorted(rows.items()))
        self._replace(tmp)

    def _temp(self) -> Path:
        """``temp_path``, made empty and private (0600: contacts' data) before it is written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(self.path)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        return tmp

    def _replace(self, tmp: Path) -> None:
        """Sync the written temp file to disk and put it in place atomically; its checksum
        goes into the state saved with the run."""
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sha = file_sha256(tmp)
        os.replace(tmp, self.path)
        if self._state is not None:
            self._state["sha256"] = sha

    def stage(self, members: Membership | None) -> None:
        self._staged = members

    def copy_sql(self, members: str) -> str:
        """The file's rows as one DuckDB query over ``members`` (key and value, the JSON list
        ``encode_sql`` makes): the header, then the members by key (bytewise: code point
        order, as Python's ``sorted``), empty values as NULL."""
        ids = self.config.identifiers
        cols = ", ".join(f"c{i}" for i in range(len(ids) + 1))
        head = ", ".join(f"{lit(n)} AS c{i}" for i, n in enumerate(["key", *ids]))
        vals = "".join(f", nullif(v[{i}], '')" for i in range(1, len(ids) + 1))
        return (f"SELECT {cols} FROM (SELECT 0 AS _h, {head} UNION ALL SELECT 1, key{vals} "
                f"FROM (SELECT key, from_json(coalesce(value, '[]'), '[\"VARCHAR\"]') AS v "
                f"FROM ({members}))) ORDER BY _h, c0")

    def _copy(self, members: Membership) -> None:
        """Write the staged membership with DuckDB's COPY, byte for byte what ``_write``
        writes for the same members."""
        tmp = self._temp()
        umask = os.umask(0o077)  # DuckDB makes the file anew, with the process's umask
        try:
            members.con.execute(f"COPY ({self.copy_sql(members.sql)}) TO {_sql_path(tmp)} "
                                f"({_COPY_CSV})")
        finally:
            os.umask(umask)
        os.chmod(tmp, 0o600)
        self._replace(tmp)

    def write(self, op: Op, changes: list[Change]) -> BatchResult:
        if self._staged is not None:  # the whole membership, in the store
            self._copy(self._staged)
            self.ctx.meter.add("calls")
            return BatchResult.all_done(changes)
        rows = {} if op is Op.REPLACE else self._read()  # REPLACE: the changes are all
        for c in changes:
            if op is Op.REMOVE:
                rows.pop(c.key, None)
            else:
                rows[c.key] = json.loads(c.value or "[]")
        self._write(rows)
        self.ctx.meter.add("calls")
        return BatchResult.all_done(changes)
