"""Compile conditions and scores to DuckDB SQL over a typed contacts table.

Every field condition is two-valued: an unknown (NULL) value fails it, except ``is_known:
false``; ``or_unknown: true`` makes it hold instead. ``not`` negates the whole result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..mapping.model import (
    AllOf,
    AnyOf,
    Condition,
    FieldCond,
    FieldType,
    Not,
    RfmScore,
    SegmentRef,
    WeightedScore,
    is_duration,
    parse_duration,
)
from ..mapping.values import parse_value
from ..sql import lit, q

ORDERED = (FieldType.number, FieldType.date, FieldType.datetime)
TEXT = (FieldType.string, FieldType.enumeration)


@dataclass
class Compiler:
    """Compiles conditions for one source. ``fields``: field -> type (scores included);
    ``threshold(field, op, percent)`` returns the top/bottom_percent cut-off (or None);
    ``segment_sql(name)`` the SQL of another segment's raw ``where``."""

    fields: dict[str, FieldType]
    now: datetime
    threshold: Callable[[str, str, float], Any]
    segment_sql: Callable[[str], str]

    def compile(self, cond: Condition) -> str:
        if isinstance(cond, AllOf):
            return "(" + " AND ".join(self.compile(c) for c in cond.items) + ")"
        if isinstance(cond, AnyOf):
            return "(" + " OR ".join(self.compile(c) for c in cond.items) + ")"
        if isinstance(cond, Not):
            return f"(NOT {self.compile(cond.item)})"
        if isinstance(cond, SegmentRef):
            return self.segment_sql(cond.segment)
        return self.field(cond)

    def field(self, c: FieldCond) -> str:
        ftype = self.fields.get(c.field, FieldType.string)
        col = q(c.field)
        if c.op == "is_known":
            known = bool(parse_value(c.value, FieldType.bool))
            if c.or_unknown:  # holds on unknown too
                return "TRUE" if known else f"({col} IS NULL)"
            return f"({col} IS {'NOT ' if known else ''}NULL)"
        body = self.body(c, ftype, col)
        if c.or_unknown:
            return f"({col} IS NULL OR coalesce({body}, FALSE))"
        return f"({col} IS NOT NULL AND coalesce({body}, FALSE))"

    # ------------------------------------------------------------ operator bodies
    def val(self, v: Any, ftype: FieldType) -> str:
        return lit(parse_value(v, ftype))

    def moment(self, v: Any, ftype: FieldType, sign: int = -1) -> str:
        """A date literal, or a duration meaning that long before (sign -1) / after now."""
        if is_duration(v):
            return lit(self.now + sign * parse_duration(v))
        return self.val(v, ftype)

    def body(self, c: FieldCond, ftype: FieldType, col: str) -> str:
        op, v = c.op, c.value
        lst = v if isinstance(v, list) else [v]
        text = ftype in TEXT
        lhs = f"lower({col})" if text else col
        if ftype is FieldType.multi:
            items = "[" + ", ".join(lit(str(x).strip().lower()) for x in lst) + "]::VARCHAR[]"
            if op in ("has_any", "in", "eq", "contains"):
                return f"list_has_any({col}, {items})"
            if op == "has_all":
                return f"list_has_all({col}, {items})"
            if op in ("has_none", "not_in", "ne", "not_contains"):
                return f"NOT list_has_any({col}, {items})"
            raise ValueError(f"{c.path}: operator '{op}' does not apply to a multi-select field")
        if op in ("eq", "ne", "gt", "gte", "lt", "lte"):
            sql_op = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            return f"{lhs} {sql_op} {self.val(v, ftype)}"
        if op in ("in", "not_in"):
            vals = ", ".join(self.val(x, ftype) for x in lst) or "NULL"
            return f"{lhs} {'NOT ' if op == 'not_in' else ''}IN ({vals})"
        if op == "between":
            lo, hi = v
            return f"{lhs} BETWEEN {self.val(lo, ftype)} AND {self.val(hi, ftype)}"
        if op in ("contains", "not_contains", "starts_with", "ends_with"):
            fn = {"contains": "contains", "not_contains": "contains",
                  "starts_with": "starts_with", "ends_with": "ends_with"}[op]
            s = f"CAST({col} AS VARCHAR)" if not text else col
            anyof = " OR ".join(f"{fn}(lower(trim({s})), {lit(str(x).strip().lower())})"
                                for x in lst)
            return f"(NOT ({anyof}))" if op == "not_contains" else f"({anyof})"
        if op == "matches":
            s = f"CAST({col} AS VARCHAR)" if not text else col
            return f"regexp_matches(trim({s}), {lit(str(v))}, 'i')"
        if op == "within_last":
            d = parse_duration(v)
            return f"{col} BETWEEN {lit(self.now - d)} AND {lit(self.now)}"
        if op == "not_within_last":
            return f"{col} < {lit(self.now - parse_duration(v))}"
        if op == "within_next":
            d = parse_duration(v)
            return f"{col} BETWEEN {lit(self.now)} AND {lit(self.now + d)}"
        if op == "before":
            return f"{col} < {self.moment(v, ftype)}"
        if op == "after":
            return f"{col} > {self.moment(v, ftype)}"
        if op in ("top_percent", "bottom_percent"):
            t = self.threshold(c.field, op, percent_of(c))
            if t is None:
                return "FALSE"
            return f"{col} {'>=' if op == 'top_percent' else '<='} {lit(t)}"
        raise ValueError(f"{c.path}: operator '{op}' does not apply to a {ftype} field")


def fraction_sql(p: Fraction) -> str:
    """An exact DECIMAL literal for a fraction with a terminating decimal expansion (DuckDB's
    discrete percentiles compute their position in integer arithmetic from a DECIMAL)."""
    return f"CAST('{Decimal(p.numerator) / Decimal(p.denominator)}' AS DECIMAL(38, 18))"


def percent_of(c: FieldCond) -> float:
    """The P of a top/bottom_percent condition."""
    return float(str(c.value).rstrip("%"))


def threshold_agg(field: str, op: str, percent: float) -> str:
    """An aggregate giving SPEC's top/bottom_percent cut-off: the value at position
    ceil(P/100*n) among the n known values sorted from largest (top) or smallest (bottom),
    which is exactly the discrete percentile P/100 in that order."""
    col = q(field)
    order = "DESC" if op == "top_percent" else "ASC"
    p = fraction_sql(Fraction(str(percent)) / 100)
    return f"percentile_disc({p}) WITHIN GROUP (ORDER BY {col} {order})"


# ---------------------------------------------------------------- scores

GRID = {
    5: ["New", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"],
    4: ["Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Loyal"],
    3: ["About to Sleep", "About to Sleep", "Need Attention", "Loyal", "Loyal"],
    2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Cannot Lose Them"],
    1: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Cannot Lose Them"],
}


def score_fields(name: str, score: RfmScore | WeightedScore) -> dict[str, FieldType]:
    if isinstance(score, WeightedScore):
        return {name: FieldType.number}
    return {f"{name}.r": FieldType.number, f"{name}.f": FieldType.number,
            f"{name}.m": FieldType.number, f"{name}.score": FieldType.string,
            f"{name}.segment": FieldType.enumeration}


def rfm_cutoffs_sql(s: RfmScore, table: str) -> str | None:
    """SELECT the quantile cut-offs of the dimensions scored by quantile (None if none is).

    SPEC: score = 1 + floor(5 * b / n), b = contacts of the population (R, F and M known)
    with a strictly worse (smaller) value. floor(5b/n) >= k  <=>  b >= ceil(k*n/5)  <=>
    v > sorted[ceil(k*n/5)] (1-based), the discrete percentile k/5; so a value's score is 1 +
    the number of the four cut-offs k = 1..4 it exceeds: ties share a score, and no rank or
    join is needed. One row, a list of four cut-offs per quantile-scored dimension."""
    dims = [d for d in ("recency", "frequency", "monetary") if not _bins(s, d)]
    if not dims:
        return None
    r, f, m = q(s.recency), q(s.frequency), q(s.monetary)
    ks = "[" + ", ".join(fraction_sql(Fraction(k, 5)) for k in range(1, 5)) + "]"
    cuts = ", ".join(f"percentile_disc({ks}) WITHIN GROUP (ORDER BY {q(getattr(s, d))})"
                     for d in dims)
    return (f"SELECT {cuts} FROM {table} "
            f"WHERE {r} IS NOT NULL AND {f} IS NOT NULL AND {m} IS NOT NULL")


def _bins(s: RfmScore, dim: str) -> list | None:
    return getattr(s.bins, dim, None) if s.bins else None


def rfm_columns(name: str, s: RfmScore, cutoffs: list[Any], now: datetime) -> tuple[list[str],
                                                                                  list[str]]:
    """Two layers of SELECT expressions: the R, F, M scores (1-5, over the typed fields),
    then the score string and segment label (over those). ``cutoffs`` come from
    ``rfm_cutoffs_sql``, four per quantile-scored dimension, in order."""
    pop = " AND ".join(f"{q(getattr(s, d))} IS NOT NULL"
                       for d in ("recency", "frequency", "monetary"))
    cuts = iter(cutoffs)
    first = []
    for d, short in (("recency", "r"), ("frequency", "f"), ("monetary", "m")):
        col, b = q(getattr(s, d)), _bins(s, d)
        if b:  # a score point per bin boundary reached
            bounds = [lit(now - x) if d == "recency" else lit(float(x)) for x in b]
            terms = [f"CAST({col} >= {t} AS INTEGER)" for t in bounds]
        else:
            terms = [f"CAST({col} > {lit(next(cuts))} AS INTEGER)" for _ in range(4)]
        first.append(f"CASE WHEN {pop} THEN CAST(1 + {' + '.join(terms)} AS DOUBLE) END "
                     f"AS {q(f'{name}.{short}')}")
    rs, fs, ms = (q(f"{name}.{x}") for x in "rfm")
    rf = f"CAST({rs} AS INTEGER) || CAST({fs} AS INTEGER)"
    if s.segments_map:
        label = "CASE " + " ".join(
            f"WHEN {' OR '.join(f'regexp_full_match({rf}, {lit(p)})' for p in pats)} "
            f"THEN {lit(label)}" for label, pats in s.segments_map.items()) + " END"
    else:  # the grid as a literal: [r][f] (1-based)
        grid = "[" + ", ".join("[" + ", ".join(lit(x) for x in GRID[r]) + "]"
                               for r in range(1, 6)) + "]"
        label = f"{grid}[CAST({rs} AS INTEGER)][CAST({fs} AS INTEGER)]"
    second = [f"{rf} || CAST({ms} AS INTEGER) AS {q(f'{name}.score')}",
              f"{label} AS {q(f'{name}.segment')}"]
    return first, second


def weighted_sql(s: WeightedScore) -> str:
    """Sum of weight * value; an unknown term counts 0; unknown when every term is unknown."""
    total = " + ".join(f"{float(t.weight)!r} * coalesce({q(t.field)}, 0)" for t in s.terms)
    known = " OR ".join(f"{q(t.field)} IS NOT NULL" for t in s.terms)
    return f"CASE WHEN {known} THEN {total} END"
