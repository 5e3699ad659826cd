"""Compile conditions and scores to DuckDB SQL over a typed contacts table.

Every field condition is two-valued: an unknown (NULL) value fails it, except ``is_known:
false``; ``or_unknown: true`` makes it hold instead. ``not`` negates the whole result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from .model import (
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
from .values import lit, parse_value, q

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
            t = self.threshold(c.field, op, float(str(v).rstrip("%")))
            if t is None:
                return "FALSE"
            return f"{col} {'>=' if op == 'top_percent' else '<='} {lit(t)}"
        raise ValueError(f"{c.path}: operator '{op}' does not apply to a {ftype} field")


def threshold_sql(table: str, field: str, op: str, percent: float) -> tuple[str, Callable]:
    """SQL fetching SPEC's top/bottom_percent cut-off: the value at position ceil(P/100*n)
    among the n known values sorted from largest (top) or smallest (bottom)."""
    col = q(field)
    order = "DESC" if op == "top_percent" else "ASC"

    def position(n: int) -> int:
        return math.ceil(Fraction(str(percent)) * n / 100)

    return (f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL ORDER BY {col} {order} "
            f"LIMIT 1 OFFSET ?", position)


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


def rfm_sql(name: str, s: RfmScore, table: str, now: datetime) -> str:
    """SELECT _key plus the RFM columns, for the population with R, F and M all known.
    Quantiles per SPEC: score = 1 + floor(5 * b / n), b = contacts with a strictly worse value."""
    r, f, m = q(s.recency), q(s.frequency), q(s.monetary)
    pop = f"{r} IS NOT NULL AND {f} IS NOT NULL AND {m} IS NOT NULL"

    def quantile(col: str) -> str:
        return f"1 + (5 * (rank() OVER (ORDER BY {col}) - 1)) // (count(*) OVER ())"

    def bins(col: str, cuts: list, recency: bool) -> str:
        if recency:
            terms = [f"CASE WHEN {col} >= {lit(now - d)} THEN 1 ELSE 0 END" for d in cuts]
        else:
            terms = [f"CASE WHEN {col} >= {lit(float(t))} THEN 1 ELSE 0 END" for t in cuts]
        return "1 + " + " + ".join(terms) if terms else "1"

    b = s.bins
    rs = bins(r, b.recency, True) if b and b.recency else quantile(r)
    fs = bins(f, b.frequency, False) if b and b.frequency else quantile(f)
    ms = bins(m, b.monetary, False) if b and b.monetary else quantile(m)
    if s.segments_map:
        cases = " ".join(
            f"WHEN {' OR '.join(f'regexp_full_match(_rf, {lit(p)})' for p in pats)} "
            f"THEN {lit(label)}" for label, pats in s.segments_map.items())
    else:
        cases = " ".join(f"WHEN _r = {rv} AND _f = {i + 1} THEN {lit(label)}"
                         for rv, row in GRID.items() for i, label in enumerate(row))
    n = name
    return (
        f"SELECT _key, CAST(_r AS DOUBLE) AS {q(n + '.r')}, CAST(_f AS DOUBLE) AS {q(n + '.f')}, "
        f"CAST(_m AS DOUBLE) AS {q(n + '.m')}, "
        f"CAST(_r AS VARCHAR) || CAST(_f AS VARCHAR) || CAST(_m AS VARCHAR) AS {q(n + '.score')}, "
        f"CASE {cases} END AS {q(n + '.segment')} FROM ("
        f"SELECT _key, _r, _f, _m, CAST(_r AS VARCHAR) || CAST(_f AS VARCHAR) AS _rf FROM ("
        f"SELECT _key, CAST({rs} AS INTEGER) AS _r, CAST({fs} AS INTEGER) AS _f, "
        f"CAST({ms} AS INTEGER) AS _m FROM {table} WHERE {pop}))"
    )


def weighted_sql(s: WeightedScore) -> str:
    """Sum of weight * value; an unknown term counts 0; unknown when every term is unknown."""
    total = " + ".join(f"{float(t.weight)!r} * coalesce({q(t.field)}, 0)" for t in s.terms)
    known = " OR ".join(f"{q(t.field)} IS NOT NULL" for t in s.terms)
    return f"CASE WHEN {known} THEN {total} END"
