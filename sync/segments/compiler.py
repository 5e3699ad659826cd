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
    SegmentRef,
    is_duration,
    parse_duration,
)
from ..mapping.operators import COMPARISONS, MULTI_ALIASES
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
            op = MULTI_ALIASES.get(op, op)
            if op == "has_any":
                return f"list_has_any({col}, {items})"
            if op == "has_all":
                return f"list_has_all({col}, {items})"
            if op == "has_none":
                return f"NOT list_has_any({col}, {items})"
            raise ValueError(f"{c.path}: operator '{op}' does not apply to a multi-select field")
        if op in COMPARISONS:
            return f"{lhs} {COMPARISONS[op]} {self.val(v, ftype)}"
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
