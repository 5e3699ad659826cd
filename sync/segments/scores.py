"""Scores as DuckDB SQL: RFM (quantile cut-offs or bins, then the grid or ``segments_map``)
and weighted sums, over a source's typed contacts."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Any

from ..mapping.model import RfmScore, WeightedScore
from ..mapping.scores import GRID
from ..sql import lit, q
from .compiler import fraction_sql


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
