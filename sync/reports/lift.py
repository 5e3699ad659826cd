"""Lift statistics of a holdout: sent vs held out, as SPEC's "Measuring lift".

Shares (bool and date outcomes): the two-proportion z-test, its pooled two-sided p-value
computed as scipy's chi-squared test of the 2x2 table without continuity correction (the
same test: chi2 = z^2), and the 95% Wald interval of the difference with the unpooled
standard error. Means (number outcomes): Welch's t-test, its p-value and interval from
``scipy.stats.ttest_ind(equal_var=False)``. tests/test_lift_stats.py checks both against
statsmodels. Fewer than ``MIN_GROUP`` contacts in either group (for means: with a known
value) is too few to judge: no figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["MIN_GROUP", "Group", "LiftResult", "mean_lift", "share_lift"]

#: fewer contacts than this in either group are too few to judge
MIN_GROUP = 30
_Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class Group:
    """One group's size and outcome (a share, or a mean over ``known`` values)."""

    n: int
    value: float | None
    known: int | None = None          # means only: how many values were known

    def as_dict(self) -> dict:
        d = {"n": self.n, "value": self.value}
        if self.known is not None:
            d["known"] = self.known
        return d


@dataclass(frozen=True)
class LiftResult:
    """Sent vs held out; the figures are None when ``too_few`` (or undefined)."""

    kind: str                         # "share" or "mean"
    sent: Group
    held_out: Group
    too_few: bool
    absolute: float | None = None
    relative: float | None = None     # absolute / held out, as a fraction
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None

    def as_dict(self, segment: str, outcome: str) -> dict:
        """SPEC's ``lift --json`` object."""
        d: dict = {"segment": segment, "outcome": outcome, "sent": self.sent.as_dict(),
                   "held_out": self.held_out.as_dict()}
        if self.too_few:
            d["too_few"] = True
        else:
            d["lift"] = {"absolute": self.absolute, "relative": self.relative,
                         "ci_low": self.ci_low, "ci_high": self.ci_high,
                         "p_value": self.p_value}
        return d


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _relative(absolute: float, base: float) -> float | None:
    return _num(absolute / base) if base else None


def share_lift(sent: np.ndarray, held_out: np.ndarray) -> LiftResult:
    """Lift of a share: each array holds one bool per contact of the group (True = the
    outcome happened; unknown must already be False)."""
    s, h = np.asarray(sent, dtype=bool), np.asarray(held_out, dtype=bool)
    n1, n2, k1, k2 = len(s), len(h), int(s.sum()), int(h.sum())
    p1 = k1 / n1 if n1 else None
    p2 = k2 / n2 if n2 else None
    g1, g2 = Group(n1, p1), Group(n2, p2)
    if min(n1, n2) < MIN_GROUP:
        return LiftResult("share", g1, g2, too_few=True)
    diff = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    if 0 < k1 + k2 < n1 + n2:
        table = [[k1, n1 - k1], [k2, n2 - k2]]
        p_value = float(stats.chi2_contingency(table, correction=False).pvalue)
    else:                             # everybody or nobody: no difference to test
        p_value = None
    return LiftResult("share", g1, g2, too_few=False, absolute=diff,
                      relative=_relative(diff, p2), ci_low=diff - _Z95 * se,
                      ci_high=diff + _Z95 * se, p_value=p_value)


def mean_lift(sent: np.ndarray, held_out: np.ndarray) -> LiftResult:
    """Lift of a mean: each array holds one number per contact of the group (NaN unknown);
    the means, the test and the too-few rule are over the known values."""
    s, h = (np.asarray(v, dtype=float) for v in (sent, held_out))
    ks, kh = s[~np.isnan(s)], h[~np.isnan(h)]
    g1 = Group(len(s), _num(ks.mean()) if len(ks) else None, len(ks))
    g2 = Group(len(h), _num(kh.mean()) if len(kh) else None, len(kh))
    if min(len(ks), len(kh)) < MIN_GROUP:
        return LiftResult("mean", g1, g2, too_few=True)
    diff = float(ks.mean() - kh.mean())
    with np.errstate(all="ignore"):
        res = stats.ttest_ind(ks, kh, equal_var=False)
        ci = res.confidence_interval(0.95)
    return LiftResult("mean", g1, g2, too_few=False, absolute=diff,
                      relative=_relative(diff, float(kh.mean())), ci_low=_num(ci.low),
                      ci_high=_num(ci.high), p_value=_num(res.pvalue))
