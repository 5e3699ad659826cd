"""Scores as SQLGlot trees: RFM (quantile cut-offs or bins, then the grid or
``segments_map``) and weighted sums, over a source's typed contacts (rendered for the engine
by ``portable.render``)."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Any

from sqlglot import exp

from ..mapping.model import RfmScore, WeightedScore
from ..mapping.scores import GRID
from ..sql import portable as P
from ..sql.portable import col, lit
from ..store.typed import DOUBLE, INT, VARCHAR, and_, case, paren
from .compiler import _or

DIMS = (("recency", "r"), ("frequency", "f"), ("monetary", "m"))

def _bins(s: RfmScore, dim: str) -> list | None:
    return getattr(s.bins, dim, None) if s.bins else None


def _population(s: RfmScore) -> exp.Expression:
    return and_(*(exp.Not(this=exp.Is(this=col(getattr(s, d)), expression=exp.null()))
                  for d, _ in DIMS))


def rfm_cutoffs(s: RfmScore, table: exp.Expression) -> exp.Select | None:
    """SELECT the quantile cut-offs of the dimensions scored by quantile (None if none is).

    SPEC: score = 1 + floor(5 * b / n), b = contacts of the population (R, F and M known)
    with a strictly worse (smaller) value. floor(5b/n) >= k  <=>  b >= ceil(k*n/5)  <=>
    v > sorted[ceil(k*n/5)] (1-based), the discrete percentile k/5; so a value's score is 1 +
    the number of the four cut-offs k = 1..4 it exceeds: ties share a score, and no rank or
    join is needed. One row, a list of four cut-offs per quantile-scored dimension."""
    dims = [d for d, _ in DIMS if not _bins(s, d)]
    if not dims:
        return None
    ks = [Fraction(k, 5) for k in range(1, 5)]
    return (exp.select(*(P.percentile(col(getattr(s, d)), ks) for d in dims))
            .from_(table).where(_population(s)))


def rfm_columns(name: str, s: RfmScore, cutoffs: list[Any], now: datetime
                ) -> tuple[list[exp.Expression], list[exp.Expression]]:
    """Two layers of SELECT expressions: the R, F, M scores (1-5, over the typed fields),
    then the score string and segment label (over those). ``cutoffs`` come from
    ``rfm_cutoffs``, four per quantile-scored dimension, in order."""
    pop = _population(s)
    cuts = iter(cutoffs)
    first: list[exp.Expression] = []
    for d, short in DIMS:
        column, b = col(getattr(s, d)), _bins(s, d)
        if b:  # a score point per bin boundary reached
            bounds = [lit(now - x) if d == "recency" else lit(float(x)) for x in b]
            terms = [exp.cast(exp.GTE(this=column, expression=t), INT) for t in bounds]
        else:
            terms = [exp.cast(paren(exp.GT(this=column, expression=lit(next(cuts)))), INT)
                     for _ in range(4)]
        total = exp.Literal.number(1)
        for t in terms:
            total = exp.Add(this=total, expression=t)
        first.append(exp.alias_(case((pop, exp.cast(total, DOUBLE))), f"{name}.{short}",
                                quoted=True))
    rs, fs, ms = (col(f"{name}.{x}") for x in "rfm")
    rf = exp.DPipe(this=exp.cast(exp.cast(rs, INT), VARCHAR),
                   expression=exp.cast(exp.cast(fs, INT), VARCHAR))
    if s.segments_map:
        label: exp.Expression = case(*(
            (_or(*(P.FullMatch(this=rf, expression=lit(p)) for p in pats)), lit(lbl))
            for lbl, pats in s.segments_map.items()))
    else:
        grid = exp.Tuple(expressions=[exp.Tuple(expressions=[lit(x) for x in GRID[r]])
                                      for r in range(1, 6)])
        label = P.Grid(this=rs, expression=fs, grid=grid)
    second = [exp.alias_(exp.DPipe(this=rf, expression=exp.cast(exp.cast(ms, INT), VARCHAR)),
                         f"{name}.score", quoted=True),
              exp.alias_(label, f"{name}.segment", quoted=True)]
    return first, second


def weighted(s: WeightedScore) -> exp.Expression:
    """Sum of weight * value; an unknown term counts 0; unknown when every term is unknown."""
    total: exp.Expression | None = None
    for t in s.terms:
        term = exp.Mul(this=exp.Literal.number(repr(float(t.weight))),
                       expression=exp.Coalesce(this=col(t.field),
                                               expressions=[exp.Literal.number(0)]))
        total = term if total is None else exp.Add(this=total, expression=term)
    known = _or(*(exp.Not(this=exp.Is(this=col(t.field), expression=exp.null()))
                  for t in s.terms))
    return case((known, total))
