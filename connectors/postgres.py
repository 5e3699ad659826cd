"""PostgreSQL: a warehouse table (or a read-only query) as a contact source, through psycopg 3
(the ``postgres`` extra).

```yaml
connections:
  warehouse: { type: postgres, dsn: "${WAREHOUSE_DSN}" }   # postgresql://user:pass@host/db
sources:
  crm:
    connection: warehouse
    table: analytics.contacts        # or query: "SELECT ..." (run read-only)
    key: contact_id
    cursor: updated_at               # optional: incremental pulls by this column
```

Choices worth knowing:

* Every read runs in one ``REPEATABLE READ READ ONLY`` transaction with the session's time
  zone set to UTC, so the rows, the key scan and the new cursor are one consistent picture,
  and a ``query:`` that writes (an INSERT/UPDATE/DELETE, a data-modifying CTE, ``nextval()``)
  is refused (exit 2) before anything runs, or by the server if it got past ``EXPLAIN``.
* Columns are typed by their Postgres types: integer/numeric/real/money -> number, boolean
  -> bool, date -> date, timestamp/timestamptz -> datetime (a timestamp without an offset is
  UTC, whatever the session's or server's time zone), arrays -> multi, text and everything
  else -> string, or as ``schema:`` says (which wins for any column; the column's text is
  then parsed as a CSV value would be). The key is the key column's text.
* Rows leave the server through ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` into a temp
  file that the store reads with DuckDB's CSV reader (no Python object per row).
* ``cursor:`` pulls rows with ``cursor >= last seen``; rows at exactly the last seen value
  that were already read (same key, same content: md5 of the row) are skipped, so several
  rows sharing a timestamp are neither lost nor read twice. Deletions are found by a scan of
  the key column on every incremental pull. A row committed late with a cursor value older
  than one already seen (or with a NULL cursor) is read by the full pull made at least every
  ``full_every`` (default and maximum 1d).
* ``validate`` stays offline: it checks the options (``table:`` or ``query:``, ``key:``),
  not the database. ``plan`` and ``run`` check the table, the key and the cursor column
  against the database before any push, each a one-line error (exit 2).
* The DSN's password is never printed: errors name ``user@host:port/db`` only.
"""

from __future__ import annotations

import re
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, model_validator

from ..sync.errors import ConfigError, Problem
from ..sync.mapping.model import ConnectionConfig, Duration, FieldType, did_you_mean
from .base import NoOptions, Pull, Source, SourceState

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresConnection", "PostgresSource", "connect", "describe_dsn"]

#: boundary rows (key + row digest at the last cursor value) remembered in the cursor; a
#: larger boundary (a bulk load sharing one timestamp) is read again on the next pull
BOUNDARY_MAX = 10_000
_ONE_DAY = timedelta(days=1)


class PostgresConnection(ConnectionConfig):
    """A PostgreSQL database: ``dsn`` (a libpq URL or key=value string), from ``${ENV}``."""

    dsn: SecretStr
    connect_timeout: int = Field(10, ge=1)


def describe_dsn(dsn: str) -> str:
    """``user@host:port/db`` of a DSN: what an error may name (never the password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        d = conninfo_to_dict(dsn)
    except Exception:
        return "<unparseable dsn>"
    host = d.get("host") or "localhost"
    where = f"{host}:{d['port']}" if d.get("port") else str(host)
    return f"{d.get('user') or '<default user>'}@{where}/{d.get('dbname') or '<default db>'}"


def _password(dsn: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn).get("password")
    except Exception:
        return None


def clean_error(exc: BaseException, dsn: str) -> str:
    """A driver error as one line, without the DSN or its password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in filter(None, (dsn, _password(dsn))):
        text = text.replace(secret, "<secret>")
    text = re.sub(r"^connection failed: ", "", text)
    return text[:300]


def connect(dsn: str, *, where: str, fix: str, timeout: int = 10, read_only: bool = True,
            autocommit: bool = False) -> psycopg.Connection:
    """Open a session in UTC (``read_only``: every transaction READ ONLY), or raise a
    ``ConfigError`` at ``where`` (a mapping path) naming ``user@host:port/db`` and the
    server's reason, never the password."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is part of `all`
        raise ConfigError([Problem(where, "the postgres connection needs psycopg",
                                   "pip install 'crmsync[postgres]'")]) from None
    try:
        conn = psycopg.connect(dsn, connect_timeout=timeout, autocommit=autocommit,
                               application_name="crmsync")
    except psycopg.Error as exc:
        raise ConfigError([Problem(where, f"cannot connect to {describe_dsn(dsn)}: "
                                   f"{clean_error(exc, dsn)}", fix)]) from None
    except Exception as exc:  # e.g. a DSN libpq cannot parse
        raise ConfigError([Problem(where, f"bad dsn ({type(exc).__name__})",
                                   "write postgresql://user:password@host:5432/dbname")]) from None
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET client_encoding TO 'UTF8'")
    if not autocommit:
        conn.commit()
    conn.read_only = read_only
    return conn


class PostgresSourceOptions(NoOptions):
    table: str | None = None
    query: str | None = None
    cursor: str | None = None
    full_every: Duration = Field(_ONE_DAY)

    @model_validator(mode="after")
    def _one_of(self) -> PostgresSourceOptions:
        if bool(self.table) == bool(self.query):
            raise ValueError("a postgres source takes exactly one of table: (schema.table) "
                             "or query: (a read-only SELECT)")
        if self.full_every > _ONE_DAY:
            raise ValueError("full_every: at most 1d (a full pull at least once a day reads "
                             "rows committed late with an older cursor value)")
        if self.table and not re.fullmatch(r"[^.\s]+(\.[^.\s]+)?", self.table.strip()):
            raise ValueError(f"table: {self.table!r} is not schema.table")
        return self


#: pg_type.typcategory -> field type (arrays, dates and times are told apart below)
_CATEGORY = {"N": FieldType.number, "B": FieldType.bool, "A": FieldType.multi}


class PostgresSource(Source):
    """A table or read-only query, typed by its Postgres column types."""

    Options = PostgresSourceOptions
    connection_types = ("postgres",)

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._columns: list[tuple[str, str, str]] | None = None  # name, typname, category
        self._tmp: tempfile.TemporaryDirectory | None = None

    # ------------------------------------------------------------ config
    @property
    def opts(self) -> PostgresSourceOptions:
        return self.options  # type: ignore[return-value]

    def problem(self, key: str, message: str, fix: str | None = None) -> ConfigError:
        return ConfigError([Problem(f"sources.{self.name}{'.' + key if key else ''}",
                                    message, fix)])

    def declared_fields(self) -> list[str] | None:
        """Offline: only the options are checked (the columns are the database's)."""
        if not self.config.key:
            raise self.problem("", "a postgres source needs key: (the column holding each "
                               "contact's unique id)", "add key: COLUMN")
        return None

    @property
    def dsn(self) -> str:
        return self.connection.dsn.get_secret_value()  # type: ignore[union-attr]

    def connect(self) -> psycopg.Connection:
        conn_name = self.config.connection
        var = self.ctx.env_var.get("dsn")
        return connect(self.dsn, where=f"connections.{conn_name}.dsn",
                       fix=f"check the DSN{f' in ${{{var}}}' if var else ''}: host, port, "
                           "user, password and database",
                       timeout=self.connection.connect_timeout)  # type: ignore[union-attr]

    def relation(self) -> str:
        """The FROM item, aliased ``src``."""
        from psycopg import sql

        if self.opts.query:
            return f"({self.opts.query.strip().rstrip(';')}) AS src"
        parts = self.opts.table.strip().split(".")  # type: ignore[union-attr]
        return sql.Identifier(*parts).as_string(None) + " AS src"

    # ------------------------------------------------------------ schema
    def _describe(self, conn: psycopg.Connection) -> list[tuple[str, str, str]]:
        """(column, typname, kind) of the relation, kind one of number/bool/date/datetime/
        multi/money/text; checks a query is read-only first."""
        import psycopg

        where = "query" if self.opts.query else "table"
        what = (f"table {self.opts.table}" if self.opts.table else "the query")
        if self.opts.query:
            self._check_read_only(conn)
        try:
            cur = conn.execute(f"SELECT * FROM {self.relation()} LIMIT 0")
        except psycopg.errors.UndefinedTable:
            raise self.problem(where, f"{what} does not exist in {describe_dsn(self.dsn)} "
                               "(or the role cannot see it)", "check table: (schema.table) and "
                               "the role's USAGE on the schema") from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self.problem(where, f"cannot read {what}: {clean_error(exc, self.dsn)}",
                               "GRANT SELECT on it to crmsync's role") from None
        except psycopg.errors.ReadOnlySqlTransaction:
            raise self._writes() from None
        except psycopg.Error as exc:
            raise self.problem(where, f"{what} cannot be read: {clean_error(exc, self.dsn)}",
                               "fix it (crmsync runs SELECT * FROM it)") from None
        desc = cur.description or []
        names = [d.name for d in desc]
        dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if dup is not None:
            raise self.problem(where, f"column '{dup}' appears twice in {what}",
                               "give every column its own name (AS ...)")
        oids = sorted({d.type_code for d in desc})
        info = {r[0]: r[1:] for r in conn.execute(
            "SELECT t.oid, t.typname, t.typcategory FROM pg_type t WHERE t.oid = ANY(%s)",
            [oids]).fetchall()}
        out = []
        for d in desc:
            typname, cat = info.get(d.type_code, ("unknown", "X"))
            if typname == "date":
                kind = "date"
            elif typname in ("timestamp", "timestamptz"):
                kind = "datetime"
            elif typname == "money":
                kind = "money"
            else:
                kind = str(_CATEGORY.get(cat, "text"))
            out.append((d.name, typname, kind))
        return out

    def _writes(self) -> ConfigError:
        return self.problem("query", "the query writes to the database; a source query "
                            "must be read-only", "write a SELECT (crmsync runs it in a READ "
                            "ONLY transaction)")

    def _check_read_only(self, conn: psycopg.Connection) -> None:
        """Refuse a query whose plan modifies a table, before running it (EXPLAIN plans it
        without running it; one statement only)."""
        import psycopg

        try:
            plan = conn.execute(f"EXPLAIN (FORMAT JSON) {self.opts.query.strip().rstrip(';')}",
                                prepare=True).fetchone()[0]  # type: ignore[union-attr]
        except psycopg.errors.ReadOnlySqlTransaction:
            raise self._writes() from None
        except psycopg.Error as exc:
            raise self.problem("query", f"the query cannot be run: {clean_error(exc, self.dsn)}",
                               "write one read-only SELECT") from None
        if '"ModifyTable"' in str(plan).replace("'", '"'):
            raise self._writes()

    def columns(self, conn: psycopg.Connection | None = None) -> list[tuple[str, str, str]]:
        """The relation's columns, checked against key: and cursor: (read once)."""
        if self._columns is None:
            if conn is None:
                with self.connect() as c, c.transaction():
                    return self.columns(c)
            cols = self._describe(conn)
            names = [c[0] for c in cols]
            for opt, col in (("key", self.key), ("cursor", self.opts.cursor)):
                if col and col not in names:
                    hint = did_you_mean(col, names)
                    raise self.problem(opt, f"column '{col}' ({opt}:) is not in "
                                       f"{'the query' if self.opts.query else self.opts.table}",
                                       hint or f"columns: {', '.join(names[:20])}")
            if self.opts.cursor and dict((c[0], c[2]) for c in cols)[self.opts.cursor] == "multi":
                raise self.problem("cursor", f"cursor column '{self.opts.cursor}' is an array",
                                   "use a timestamp (e.g. updated_at) or an increasing number")
            self._columns = cols
        return self._columns

    def schema(self) -> dict[str, FieldType]:
        out = {self.key: FieldType.string}
        for name, _typname, kind in self.columns():
            if name == self.key:
                continue
            default = {"money": FieldType.number, "text": FieldType.string}.get(kind)
            out[name] = self.config.schema_.get(name, default or FieldType(kind))
        return out

    # ------------------------------------------------------------ pull
    @staticmethod
    def _text(name: str, kind: str) -> str:
        """SQL: column ``name`` of ``src`` as the text the store parses."""
        from psycopg import sql

        c = "src." + sql.Identifier(name).as_string(None)
        if kind == "bool":
            return f"CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END"
        if kind == "date":
            return f"to_char({c}, 'YYYY-MM-DD')"
        if kind == "datetime":  # timestamptz in the session's UTC; a timestamp is taken as UTC
            return f"to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        if kind == "multi":
            return f"array_to_string({c}, ';')"
        if kind == "money":
            return f"{c}::numeric::text"
        return f"{c}::text"

    def text_select(self) -> str:
        """SELECT of every column as the text a pull hands the store (``_text``), under its
        own name: what ``engine: postgres`` types in place, so both engines read the same
        values."""
        from psycopg import sql

        return "SELECT " + ", ".join(
            f"{self._text(n, k)} AS {sql.Identifier(n).as_string(None)}"
            for n, _t, k in self.columns()) + f" FROM {self.relation()}"

    def pull(self, state: SourceState) -> Pull:
        import psycopg

        try:
            return self._pull(state)
        except psycopg.errors.ReadOnlySqlTransaction:
            raise self._writes() from None
        except psycopg.Error as exc:  # e.g. a query failing on a row (a bad cast)
            what = "query" if self.opts.query else "table"
            raise self.problem(what, f"reading the {what} failed: "
                               f"{clean_error(exc, self.dsn)}", "fix the "
                               f"{what} (crmsync reads it with COPY ... TO STDOUT)") from None

    def _pull(self, state: SourceState) -> Pull:
        from psycopg import IsolationLevel, sql

        opts = self.opts
        with self.connect() as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ  # rows, keys, cursor agree
            with conn.transaction():
                cols = self.columns(conn)
                kinds = {n: k for n, _t, k in cols}
                typname = {n: t for n, t, _k in cols}
                last = state.cursor if isinstance(state.cursor, dict) else None
                full = (not opts.cursor or not last or not state.rows
                        or last.get("column") != opts.cursor or state.last_full_at is None
                        or self.ctx.now - state.last_full_at >= opts.full_every)
                key = "src." + sql.Identifier(self.key).as_string(None)
                where, params = "", []
                if not full:
                    cur = "src." + sql.Identifier(opts.cursor).as_string(None)  # type: ignore
                    t = sql.Identifier(typname[opts.cursor]).as_string(None)  # type: ignore
                    where = (f" WHERE {cur} >= %s::{t} AND NOT ({cur} = %s::{t} AND "
                             f"({key}::text || ':' || md5(src::text)) = ANY(%s))")
                    params = [last["value"], last["value"], last.get("boundary") or []]
                self._tmp = tempfile.TemporaryDirectory(prefix="crmsync-pg-")
                data = Path(self._tmp.name) / "rows.csv"
                exprs = [f"{self._text(n, kinds[n])} AS c{i}" for i, (n, _t, _k) in
                         enumerate(cols)]
                self._copy(conn, f"SELECT {', '.join(exprs)} FROM {self.relation()}{where}",
                           params, data)
                select = self._read(data, [n for n, _t, _k in cols])
                cursor = self._cursor(conn) if opts.cursor else None
                if full:
                    return Pull(full=True, sql=select, cursor=cursor)
                keys = Path(self._tmp.name) / "keys.csv"
                self._copy(conn, f"SELECT {key}::text FROM {self.relation()}", [], keys)
                return Pull(full=False, sql=select, cursor=cursor,
                            present=self._read(keys, [self.key]))

    def _cursor(self, conn: psycopg.Connection) -> dict[str, Any] | None:
        """The largest cursor value now, and the rows at it (key + row digest)."""
        from psycopg import sql

        cur = "src." + sql.Identifier(self.opts.cursor).as_string(None)  # type: ignore[arg-type]
        key = "src." + sql.Identifier(self.key).as_string(None)
        rel = self.relation()
        top = conn.execute(f"SELECT max({cur})::text FROM {rel}").fetchone()[0]
        if top is None:
            return None
        t = sql.Identifier(dict((n, ty) for n, ty, _k in self.columns())[self.opts.cursor]
                           ).as_string(None)  # type: ignore[index]
        rows = [r[0] for r in conn.execute(
            f"SELECT {key}::text || ':' || md5(src::text) FROM {rel} WHERE {cur} = %s::{t} "
            f"LIMIT {BOUNDARY_MAX + 1}", [top]).fetchall()]
        return {"column": self.opts.cursor, "value": top,
                "boundary": sorted(rows) if len(rows) <= BOUNDARY_MAX else []}

    @staticmethod
    def _copy(conn: psycopg.Connection, select: str, params: list[Any], path: Path) -> None:
        with conn.cursor() as cur, path.open("wb") as fh, \
                cur.copy(f"COPY ({select}) TO STDOUT (FORMAT csv)", params or None) as copy:
            for block in copy:
                fh.write(block)

    @staticmethod
    def _read(path: Path, names: list[str]) -> str:
        """A DuckDB SELECT of the COPY output, every column as text, under its name."""
        from ..sync.sql import q

        lit = "'" + str(path).replace("'", "''") + "'"
        cols = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(names)))
        return (f"SELECT {', '.join(f'c{i} AS {q(n)}' for i, n in enumerate(names))} FROM "
                f"read_csv({lit}, header=false, auto_detect=false, delim=',', quote='\"', "
                f"escape='\"', columns={{{cols}}}, strict_mode=true)")
