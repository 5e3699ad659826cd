"""The rule compiler: SQLGlot expression trees, from the mapping, for every engine.

Typed values (SPEC's parsing rules over raw text), conditions, percent thresholds, scores
(RFM quantiles or bins, weighted) and the holdout test are built here as trees; the few
constructs whose SQL differs by engine are nodes of ``portable`` (rendered by
``portable.render(tree, engine)``).

Every field condition is two-valued: an unknown (NULL) value fails it, except ``is_known:
false``; ``or_unknown: true`` makes it hold instead. ``not`` negates the whole result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from sqlglot import exp

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
from ..sql import portable as P
from ..sql.portable import col, lit
from ..store.typed import TEXT, VARCHAR, and_, paren

ORDERED = (FieldType.number, FieldType.date, FieldType.datetime)


def _in(e: exp.Expression, values: list[exp.Expression]) -> exp.In:
    return exp.In(this=e, expressions=values)


def _or(*xs: exp.Expression) -> exp.Expression:
    return exp.or_(*xs, wrap=False) if len(xs) > 1 else xs[0]


# ---------------------------------------------------------------- conditions


@dataclass
class Compiler:
    """Compiles conditions for one source. ``fields``: field -> type (scores included);
    ``threshold(field, op, percent)`` returns the top/bottom_percent cut-off (or None);
    ``segment(name)`` the tree of another segment's raw ``where``."""

    fields: dict[str, FieldType]
    now: datetime
    threshold: Callable[[str, str, float], Any]
    segment: Callable[[str], exp.Expression]

    def compile(self, cond: Condition) -> exp.Expression:
        if isinstance(cond, AllOf):
            return paren(and_(*(self.compile(c) for c in cond.items)))
        if isinstance(cond, AnyOf):
            return paren(_or(*(self.compile(c) for c in cond.items)))
        if isinstance(cond, Not):
            return paren(exp.Not(this=self.compile(cond.item)))
        if isinstance(cond, SegmentRef):
            return self.segment(cond.segment)
        return self.field(cond)

    def field(self, c: FieldCond) -> exp.Expression:
        ftype = self.fields.get(c.field, FieldType.string)
        column = col(c.field)
        null = exp.Is(this=column, expression=exp.null())
        if c.op == "is_known":
            known = bool(parse_value(c.value, FieldType.bool))
            if c.or_unknown:  # holds on unknown too
                return exp.true() if known else paren(null)
            return paren(exp.Not(this=null) if known else null)
        body = exp.Coalesce(this=self.body(c, ftype, column), expressions=[exp.false()])
        if c.or_unknown:
            return paren(_or(null, body))
        return paren(and_(exp.Not(this=null), body))

    # ------------------------------------------------------------ operator bodies
    def val(self, v: Any, ftype: FieldType) -> exp.Expression:
        return lit(parse_value(v, ftype))

    def moment(self, v: Any, ftype: FieldType) -> exp.Expression:
        """A date literal, or a duration meaning that long before now."""
        if is_duration(v):
            return lit(self.now - parse_duration(v))
        return self.val(v, ftype)

    def body(self, c: FieldCond, ftype: FieldType, column: exp.Expression) -> exp.Expression:
        op, v = c.op, c.value
        lst = v if isinstance(v, list) else [v]
        text = ftype in TEXT
        lhs = P.Lower(this=column) if text else column
        if ftype is FieldType.multi:
            items = [lit(str(x).strip().lower()) for x in lst]
            op = MULTI_ALIASES.get(op, op)
            if op == "has_any":
                return P.HasAny(this=column, expressions=items)
            if op == "has_all":
                return P.HasAll(this=column, expressions=items)
            if op == "has_none":
                return exp.Not(this=P.HasAny(this=column, expressions=items))
            raise ValueError(f"{c.path}: operator '{op}' does not apply to a multi-select field")
        cmp = {"eq": exp.EQ, "ne": exp.NEQ, "gt": exp.GT, "gte": exp.GTE, "lt": exp.LT,
               "lte": exp.LTE}
        if op in COMPARISONS:
            return cmp[op](this=lhs, expression=self.val(v, ftype))
        if op in ("in", "not_in"):
            e = _in(lhs, [self.val(x, ftype) for x in lst] or [exp.null()])
            return exp.Not(this=e) if op == "not_in" else e
        if op == "between":
            lo, hi = v
            return exp.Between(this=lhs, low=self.val(lo, ftype), high=self.val(hi, ftype))
        if op in ("contains", "not_contains", "starts_with", "ends_with"):
            node = {"contains": P.Contains, "not_contains": P.Contains,
                    "starts_with": exp.StartsWith, "ends_with": P.EndsWith}[op]
            s = column if text else exp.cast(column, VARCHAR)
            hay = P.Lower(this=exp.Trim(this=s))
            anyof = paren(_or(*(node(this=hay, expression=lit(str(x).strip().lower()))
                                for x in lst)))
            return paren(exp.Not(this=anyof)) if op == "not_contains" else anyof
        if op == "matches":
            s = column if text else exp.cast(column, VARCHAR)
            return P.SearchCI(this=exp.Trim(this=s), expression=lit(str(v)))
        if op in ("within_last", "within_next"):
            d = parse_duration(v)
            lo, hi = (self.now - d, self.now) if op == "within_last" else (self.now, self.now + d)
            return exp.Between(this=column, low=lit(lo), high=lit(hi))
        if op == "not_within_last":
            return exp.LT(this=column, expression=lit(self.now - parse_duration(v)))
        if op == "before":
            return exp.LT(this=column, expression=self.moment(v, ftype))
        if op == "after":
            return exp.GT(this=column, expression=self.moment(v, ftype))
        if op in ("top_percent", "bottom_percent"):
            t = self.threshold(c.field, op, percent_of(c))
            if t is None:
                return exp.false()
            node = exp.GTE if op == "top_percent" else exp.LTE
            return node(this=column, expression=lit(t))
        raise ValueError(f"{c.path}: operator '{op}' does not apply to a {ftype} field")


def percent_of(c: FieldCond) -> float:
    """The P of a top/bottom_percent condition."""
    return float(str(c.value).rstrip("%"))


def threshold_agg(field: str, op: str, percent: float) -> exp.Expression:
    """An aggregate giving SPEC's top/bottom_percent cut-off: the value at position
    ceil(P/100*n) among the n known values sorted from largest (top) or smallest (bottom),
    which is exactly the discrete percentile P/100 in that order."""
    return P.percentile(col(field), [Fraction(str(percent)) / 100], desc=op == "top_percent")


# ---------------------------------------------------------------- holdout


def holdout(segment: str, percent: float, key: exp.Expression | None = None) -> exp.Expression:
    """Deterministic holdout: held out when the first 32 bits of md5("S:key") fall under P%."""
    text = exp.DPipe(this=exp.DPipe(this=lit(segment), expression=lit(":")),
                     expression=key if key is not None else exp.column("_key"))
    return paren(exp.LT(this=P.Hash32(this=text),
                        expression=exp.Literal.number(repr(percent / 100 * 2**32))))
