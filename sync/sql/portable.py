"""The portability layer: the few SQL constructs DuckDB and Postgres spell differently.

The rule compiler builds one SQLGlot expression tree per mapping; the constructs below are
nodes of that tree whose SQL differs by engine (or which must give identical answers where
the engines' own functions do not: the holdout hash, exact discrete percentiles, ISO dates
whose invalid forms must be unknown, not an error). ``render(tree, engine)`` writes the SQL
of one engine, through a dialect derived from SQLGlot's own (``duckdb``, ``postgres``), which
renders everything else.

Measured pitfalls this avoids: transpiling DuckDB SQL keeps ``HASH()`` (no such function in
Postgres, and another hash elsewhere) and ``CAST('0x…' AS UBIGINT)`` (fails in Postgres);
Postgres's ``percentile_disc`` takes a float fraction (0.07 * 100 rounds up to position 8);
a bad date in a Postgres cast is an error for the whole query, not NULL; ``lower()`` under the
C collation leaves non-ASCII letters as they are.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.postgres import Postgres

ENGINES = ("duckdb", "postgres")

#: what Python's str.isspace() calls whitespace: as an RE2 class (DuckDB) and spelled out for
#: Postgres's regular expressions (no \p{Z} there; \uXXXX escapes are)
_WS_RE2 = r"[\t-\r\x1c-\x1f\x85\p{Z}]"
_WS_ARE = (r"[\t-\r\u001c-\u001f\u0085\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
           r"\u205f\u3000]")
#: Postgres: lower() by Unicode whatever the database's collation (ICU's root locale)
PG_CASE_COLLATION = "und-x-icu"
#: the earliest instant Postgres's timestamp holds (4714-11-24 BC), in epoch milliseconds
_PG_MIN_MS = -210866803200000


class Raw(exp.Expression):
    """SQL text written for one engine already (a file connector's DuckDB scan)."""

    arg_types = {"this": True}


class Strip(exp.Expression, exp.Func):
    """Text without leading and trailing whitespace, as Python's ``str.strip()``."""

    arg_types = {"this": True}


class FullMatch(exp.Expression, exp.Func):
    """The whole text matches the regular expression (``expression``, a literal)."""

    arg_types = {"this": True, "expression": True}


class SearchCI(exp.Expression, exp.Func):
    """A case-insensitive regular-expression search (``matches:``)."""

    arg_types = {"this": True, "expression": True}


class Lower(exp.Expression, exp.Func):
    """Unicode lower case whatever the collation."""

    arg_types = {"this": True}


class Contains(exp.Expression, exp.Func):
    arg_types = {"this": True, "expression": True}


class EndsWith(exp.Expression, exp.Func):
    arg_types = {"this": True, "expression": True}


class Hash32(exp.Expression, exp.Func):
    """The first 8 hex digits of md5(this) read as an unsigned integer (the holdout bucket):
    the same number on every engine."""

    arg_types = {"this": True}


class EpochMs(exp.Expression, exp.Func):
    """Integer text of epoch milliseconds -> timestamp (UTC)."""

    arg_types = {"this": True}


class IsoTimestamp(exp.Expression, exp.Func):
    """ISO 8601 text (already matching ``values.ISO_RE``) -> naive UTC timestamp, NULL when
    it names no real instant (2026-02-30, hour 25). Without an offset it is UTC."""

    arg_types = {"this": True}


class DateText(exp.Expression, exp.Func):
    """A timestamp's day as text, YYYY-MM-DD."""

    arg_types = {"this": True}


class SplitMulti(exp.Expression, exp.Func):
    """A multi-select text (``;``-separated) -> list of its trimmed, lower-cased, non-empty
    items; NULL when there are none."""

    arg_types = {"this": True}


class HasAny(exp.Expression, exp.Func):
    """The list ``this`` shares an item with the literal list ``expressions``."""

    arg_types = {"this": True, "expressions": True}


class HasAll(exp.Expression, exp.Func):
    arg_types = {"this": True, "expressions": True}


class Percentile(exp.Expression, exp.Func):
    """An aggregate: SPEC's exact discrete percentile, the value at position ceil(p * n) among
    the n known values of ``this`` sorted ascending (or descending with ``desc``); ``p``
    (``fraction``, a Fraction) is exact, so 7% of 100 is position 7. With several fractions,
    a list of the values."""

    arg_types = {"this": True, "fractions": True, "desc": False}


class Grid(exp.Expression, exp.Func):
    """``grid[this][expression]`` over a literal 5x5 table of labels (1-based)."""

    arg_types = {"this": True, "expression": True, "grid": True}


# ---------------------------------------------------------------- building blocks


def col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def lit(value: Any) -> exp.Expression:
    """A SQL literal for a Python value (as the mapping's typed values are)."""
    from datetime import datetime

    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.true() if value else exp.false()
    if isinstance(value, int | float):
        return exp.Literal.number(repr(float(value)))
    if isinstance(value, datetime):
        return exp.cast(exp.Literal.string(value.strftime("%Y-%m-%d %H:%M:%S.%f")),
                        exp.DataType.Type.TIMESTAMP)
    return exp.Literal.string(str(value))


def _s(text: str) -> exp.Literal:
    return exp.Literal.string(text)


def _fractions(e: Percentile) -> list[Fraction]:
    return [Fraction(f.name) for f in e.args["fractions"].expressions]


def percentile(column: exp.Expression, fractions: list[Fraction], desc: bool = False
               ) -> Percentile:
    arr = exp.Array(expressions=[_s(str(f)) for f in fractions])
    return Percentile(this=column, fractions=arr, desc=exp.true() if desc else None)


# ---------------------------------------------------------------- DuckDB


def _d_percentile(self: Any, e: Percentile) -> str:
    from decimal import Decimal

    def dec(f: Fraction) -> str:  # exact: DuckDB computes the position from a DECIMAL
        return f"CAST('{Decimal(f.numerator) / Decimal(f.denominator)}' AS DECIMAL(38, 18))"

    fr = _fractions(e)
    arg = dec(fr[0]) if len(fr) == 1 else "[" + ", ".join(dec(f) for f in fr) + "]"
    order = " DESC" if e.args.get("desc") else ""
    return f"percentile_disc({arg}) WITHIN GROUP (ORDER BY {self.sql(e, 'this')}{order})"


def _d_multi(self: Any, e: SplitMulti) -> str:
    item = f"lower(regexp_replace(x, '^{_WS_RE2}+|{_WS_RE2}+$', '', 'g'))"
    items = (f"list_filter(list_transform(string_split({self.sql(e, 'this')}, ';'), "
             f"lambda x: {item}), lambda x: x <> '')")
    return f"CASE WHEN len({items}) > 0 THEN {items} END"


def _d_list(self: Any, e: exp.Func) -> str:
    return "[" + ", ".join(self.sql(x) for x in e.expressions) + "]::VARCHAR[]"


def _d_grid(self: Any, e: Grid) -> str:
    grid = "[" + ", ".join("[" + ", ".join(self.sql(x) for x in row.expressions) + "]"
                           for row in e.args["grid"].expressions) + "]"
    return (f"{grid}[CAST({self.sql(e, 'this')} AS INTEGER)]"
            f"[CAST({self.sql(e, 'expression')} AS INTEGER)]")


class CrmDuckDB(DuckDB):
    class Generator(DuckDB.Generator):
        TRANSFORMS = {
            **DuckDB.Generator.TRANSFORMS,
            Raw: lambda self, e: e.name,
            Strip: lambda self, e: (f"regexp_replace({self.sql(e, 'this')}, "
                                    f"'^{_WS_RE2}+|{_WS_RE2}+$', '', 'g')"),
            FullMatch: lambda self, e: self.func("regexp_full_match", e.this, e.expression),
            SearchCI: lambda self, e: self.func("regexp_matches", e.this, e.expression,
                                                _s("i")),
            Lower: lambda self, e: self.func("lower", e.this),
            Contains: lambda self, e: self.func("contains", e.this, e.expression),
            EndsWith: lambda self, e: self.func("ends_with", e.this, e.expression),
            Hash32: lambda self, e: (f"CAST('0x' || substr(md5({self.sql(e, 'this')}), 1, 8) "
                                     f"AS UBIGINT)"),
            EpochMs: lambda self, e: (f"make_timestamp(CAST({self.sql(e, 'this')} AS BIGINT) "
                                      f"* 1000)"),
            IsoTimestamp: lambda self, e: (f"CAST(TRY_CAST(replace({self.sql(e, 'this')}, 'z', "
                                           f"'Z') AS TIMESTAMPTZ) AS TIMESTAMP)"),
            DateText: lambda self, e: f"strftime({self.sql(e, 'this')}, '%Y-%m-%d')",
            SplitMulti: _d_multi,
            HasAny: lambda self, e: f"list_has_any({self.sql(e, 'this')}, {_d_list(self, e)})",
            HasAll: lambda self, e: f"list_has_all({self.sql(e, 'this')}, {_d_list(self, e)})",
            Percentile: _d_percentile,
            Grid: _d_grid,
        }


# ---------------------------------------------------------------- Postgres


def _p_strip_sql(sql: str) -> str:
    return f"regexp_replace({sql}, '^{_WS_ARE}+|{_WS_ARE}+$', '', 'g')"


def _p_strip(self: Any, e: Strip) -> str:
    return _p_strip_sql(self.sql(e, "this"))


def _p_lower(sql: str) -> str:
    return f'lower(({sql}) COLLATE "{PG_CASE_COLLATION}")'


def _p_full(self: Any, e: FullMatch) -> str:
    pattern = e.expression.name
    return f"({self.sql(e, 'this')} ~ {self.sql(_s('^(?:' + pattern + ')$'))})"


def _p_hash(self: Any, e: Hash32) -> str:
    # bit(64) of 8 zero digits + the 8 digits: a non-negative bigint
    return (f"CAST(CAST('x00000000' || substr(md5({self.sql(e, 'this')}), 1, 8) AS BIT(64)) "
            f"AS BIGINT)")


def _p_epoch(self: Any, e: EpochMs) -> str:
    ms = f"CAST({self.sql(e, 'this')} AS BIGINT)"
    return (f"CASE WHEN {ms} >= {_PG_MIN_MS} THEN TIMESTAMP '1970-01-01 00:00:00' + "
            f"{ms} * INTERVAL '1 millisecond' END")


_OFFSET = "(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"


def _p_iso(self: Any, e: IsoTimestamp) -> str:
    """Postgres casts raise on impossible dates and limit offsets to 15:59, so the fields are
    checked here (as Python's ``fromisoformat``: year >= 1, real day of month, hour < 24,
    minute and second < 60, offset < 24h) and the offset is applied by hand."""
    t = self.sql(e, "this")

    def part(start: int, n: int = 2) -> str:
        return f"CAST(substr({t}, {start}, {n}) AS INTEGER)"

    y, m, d = part(1, 4), part(6), part(9)
    leap = f"(({y} % 4 = 0 AND {y} % 100 <> 0) OR {y} % 400 = 0)"
    dim = (f"CASE WHEN {m} = 2 THEN CASE WHEN {leap} THEN 29 ELSE 28 END "
           f"WHEN {m} IN (4, 6, 9, 11) THEN 30 ELSE 31 END")
    has_time = f"length({t}) > 10"
    has_sec = f"(length({t}) > 16 AND substr({t}, 17, 1) = ':')"
    rest = f"substr({t}, 11)"  # the time part: an offset can only be there
    off = f"substring({rest} from '[+-][0-9]{{2}}:?[0-9]{{0,2}}$')"
    off_h = f"CAST(substr({off}, 2, 2) AS INTEGER)"
    off_m = f"coalesce(CAST(NULLIF(substr(replace({off}, ':', ''), 4, 2), '') AS INTEGER), 0)"
    valid = (f"{y} >= 1 AND {m} BETWEEN 1 AND 12 AND {d} BETWEEN 1 AND {dim} "
             f"AND (NOT {has_time} OR ({part(12)} < 24 AND {part(15)} < 60)) "
             f"AND (NOT {has_sec} OR {part(18)} < 60) "
             f"AND ({off} IS NULL OR ({off_h} < 24 AND {off_m} < 60))")
    local = (f"CAST(substr({t}, 1, 10) || regexp_replace({rest}, '{_OFFSET}', '') "
             f"AS TIMESTAMP)")
    shift = (f"CASE WHEN {off} IS NULL THEN INTERVAL '0 minutes' ELSE "
             f"(CASE WHEN substr({off}, 1, 1) = '-' THEN -1 ELSE 1 END) "
             f"* ({off_h} * 60 + {off_m}) * INTERVAL '1 minute' END")
    return f"CASE WHEN {valid} THEN {local} - ({shift}) END"


def _p_multi(self: Any, e: SplitMulti) -> str:
    joined = (f"regexp_replace({self.sql(e, 'this')}, '{_WS_ARE}*;{_WS_ARE}*', ';', 'g')")
    items = f"array_remove(string_to_array({_p_lower(_p_strip_sql(joined))}, ';'), '')"
    return f"CASE WHEN cardinality({items}) > 0 THEN {items} END"


def _p_list(self: Any, e: exp.Func) -> str:
    return "CAST(ARRAY[" + ", ".join(self.sql(x) for x in e.expressions) + "] AS TEXT[])"


def _p_percentile(self: Any, e: Percentile) -> str:
    """Exact: the array of known values in order, indexed at ceil(p * n) computed in integer
    arithmetic (identical aggregates in one query are computed once by Postgres)."""
    c = self.sql(e, "this")
    order = " DESC" if e.args.get("desc") else ""
    arr = f"(array_agg({c} ORDER BY {c}{order}) FILTER (WHERE {c} IS NOT NULL))"
    picks = [f"{arr}[({f.numerator} * count({c}) + {f.denominator - 1}) / {f.denominator}]"
             for f in _fractions(e)]
    return picks[0] if len(picks) == 1 else "ARRAY[" + ", ".join(picks) + "]"


def _p_grid(self: Any, e: Grid) -> str:
    grid = "ARRAY[" + ", ".join("[" + ", ".join(self.sql(x) for x in row.expressions) + "]"
                                for row in e.args["grid"].expressions) + "]"
    return (f"({grid})[CAST({self.sql(e, 'this')} AS INTEGER)]"
            f"[CAST({self.sql(e, 'expression')} AS INTEGER)]")


class CrmPostgres(Postgres):
    class Generator(Postgres.Generator):
        TRANSFORMS = {
            **Postgres.Generator.TRANSFORMS,
            Raw: lambda self, e: e.name,
            Strip: _p_strip,
            FullMatch: _p_full,
            SearchCI: lambda self, e: f"({self.sql(e, 'this')} ~* {self.sql(e, 'expression')})",
            Lower: lambda self, e: _p_lower(self.sql(e, "this")),
            Contains: lambda self, e: (f"(strpos({self.sql(e, 'this')}, "
                                       f"{self.sql(e, 'expression')}) > 0)"),
            EndsWith: lambda self, e: (f"(right({self.sql(e, 'this')}, "
                                       f"char_length({self.sql(e, 'expression')})) = "
                                       f"{self.sql(e, 'expression')})"),
            Hash32: _p_hash,
            EpochMs: _p_epoch,
            IsoTimestamp: _p_iso,
            DateText: lambda self, e: f"to_char({self.sql(e, 'this')}, 'YYYY-MM-DD')",
            SplitMulti: _p_multi,
            HasAny: lambda self, e: f"({self.sql(e, 'this')} && {_p_list(self, e)})",
            HasAll: lambda self, e: f"({self.sql(e, 'this')} @> {_p_list(self, e)})",
            Percentile: _p_percentile,
            Grid: _p_grid,
        }


DIALECTS = {"duckdb": CrmDuckDB, "postgres": CrmPostgres}


def render(tree: exp.Expression, engine: str = "duckdb") -> str:
    """The SQL of ``tree`` for ``engine`` (``duckdb`` or ``postgres``)."""
    return tree.sql(dialect=DIALECTS[engine])
