"""``engine: postgres``: the evaluation and the diff run in the database holding the contacts.

The source table is read in place: ``table_relation`` types its columns by SPEC's rules
(text columns parsed as for CSV, columns of a matching Postgres type cast), the rule
compiler's trees are rendered for Postgres (``sql.portable``), and the flags live in
temp tables of the session. ``diff`` compares a destination's desired members with the
ledger in the same database; only the adds and removes (key, label, identifiers) are
fetched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlglot import exp

from ..mapping.loader import Project
from ..mapping.model import FieldType
from ..mapping.values import CHECKED
from ..sql import q
from ..sql.portable import PG_CASE_COLLATION, Raw, render
from ..store.snapshot import key_problems, layout
from ..store.typed import typed_rows
from .engine import Evaluation, Relation


def table_name(name: str) -> exp.Table:
    """``schema.table`` (or ``table``) as a quoted table reference."""
    parts = name.split(".")
    return exp.Table(this=exp.to_identifier(parts[-1], quoted=True),
                     db=exp.to_identifier(parts[-2], quoted=True) if len(parts) > 1 else None)


def table_relation(source: exp.Expression, key_field: str, schema: dict[str, FieldType],
                   texts: list[str], conn: Any = None, name: str = "crm") -> Relation:
    """The typed contacts of a source table or subquery, read in place. ``schema``: field ->
    type (the key included or not); ``texts``: identifier fields kept as text
    (``store.snapshot.TEXT_KEPT``). Typed columns are read through their text (see
    ``compiler.typed_rows``; a text[] column is not a multi-select yet).
    With ``conn`` (Postgres), the stripped and the typed values are each computed once, into
    temp tables ``raw_<name>`` and ``typed_<name>`` (the planner would otherwise inline a
    value's expression into every use of it)."""
    checks = [f for f, t in schema.items() if f != key_field and t in CHECKED]
    if conn is None:
        rows = typed_rows(source, key_field, schema, texts)
        return Relation(rows.subquery("_c"), key_field, schema, texts, checks)

    prepare(conn)

    def layer(select: exp.Select, alias: str) -> exp.Expression:
        table = f"{'raw' if alias == '_r' else 'stage'}_{name}"
        materialize(conn, table, render(select, "postgres"))
        return exp.Table(this=exp.to_identifier(table, quoted=True))

    rows = typed_rows(source, key_field, schema, texts, layer)
    materialize(conn, f"typed_{name}", render(rows, "postgres"))
    for t in (f"raw_{name}", f"stage_{name}"):
        conn.execute(f"DROP TABLE {q(t)}")
    return Relation(exp.Table(this=exp.to_identifier(f"typed_{name}", quoted=True)),
                    key_field, schema, texts, checks)


def materialize(conn: Any, table: str, select: str, analyze: bool = False) -> None:
    """A temp table ``table`` made from ``select``; ``analyze``: with planner statistics
    (for a table that is joined: temp tables get none otherwise)."""
    conn.execute(f"DROP TABLE IF EXISTS {q(table)} CASCADE")
    conn.execute(f"CREATE TEMP TABLE {q(table)} AS {select}")
    if analyze:
        conn.execute(f"ANALYZE {q(table)}")


def prepare(conn: Any) -> None:
    """Session settings the evaluation relies on (the engine never depends on the
    database's own time zone or collation), and a clear error when the server lacks the
    ICU collation case-insensitive comparison uses."""
    conn.execute("SET TIME ZONE 'UTC'")
    found = conn.execute("SELECT count(*) FROM pg_collation WHERE collname = %s",
                         [PG_CASE_COLLATION]).fetchone()[0]
    if not found:
        raise RuntimeError(f"this PostgreSQL server has no ICU collation "
                           f"{PG_CASE_COLLATION!r} (built without ICU); crmsync needs it to "
                           "compare text case-insensitively")


def evaluate(project: Project, conn: Any, relations: dict[str, Relation], now: datetime
             ) -> Evaluation:
    """Evaluate every source in Postgres over ``relations`` (see ``table_relation``)."""
    prepare(conn)
    return Evaluation.build_on(project, conn, "postgres", relations, now)


def evaluate_in_place(project: Project, sources: dict[str, Any], store: Any, now: datetime
                      ) -> Evaluation:
    """``engine: postgres``: every source (a ``connectors.postgres.PostgresSource``) typed
    and evaluated where it lives, in one session of its database that writes nothing but
    its temp tables (a source ``query:`` is refused unless read-only, see the source);
    ``store``: the mapping's store in that database, which the diffs read (its ledger) and
    the push writes. Rows without a key, or repeating one, are left out with the warning a
    pull gives. The session is ``Evaluation.con``; close it when done."""
    conn = next(iter(sources.values())).connect()
    conn.read_only = False  # temp tables are made and dropped (never other tables)
    conn.autocommit = True
    relations, warnings = {}, []
    try:
        for name, src in sources.items():
            schema = src.schema()
            texts = layout(src.key, schema,
                           project.mapping.sources[name].identity.fields().values())
            relations[name] = table_relation(Raw(this=f"({src.text_select()}) AS _src"),
                                             src.key, schema, texts["texts"], conn, name)
            warnings += [f"source '{name}': {w}" for w in _unique_keys(conn, f"typed_{name}")]
        ev = evaluate(project, conn, relations, now)
    except BaseException:
        conn.close()
        raise
    ev.store = store
    ev.warnings[:0] = warnings
    return ev


def _unique_keys(conn: Any, table: str) -> list[str]:
    """Drop the rows of temp table ``table`` without a key and all but one of each repeated
    key; return what was wrong."""
    n, blank, keys = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE coalesce(_key, '') = ''), "
        f"count(DISTINCT NULLIF(_key, '')) FROM {q(table)}").fetchone()
    if n == keys:
        return []
    problems = key_problems(conn, q(table), n, blank, keys)
    conn.execute(f"DELETE FROM {q(table)} WHERE coalesce(_key, '') = ''")
    conn.execute(f"DELETE FROM {q(table)} a USING {q(table)} b WHERE a._key = b._key "
                 f"AND a.ctid > b.ctid")
    return problems
