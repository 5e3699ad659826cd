"""`crmsync lift`: the outcome of a segment's sent contacts against its held-out ones, as
SPEC's "Measuring lift" (the groups from store/lift_groups.py, the outcome from the stored
snapshot), and the statistics.

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
from datetime import datetime
from typing import Any

import numpy as np
from scipy import stats

from ..errors import ConfigError, Problem
from ..mapping.model import FieldType, did_you_mean
from ..sql import q
from ..store.lift_groups import HELD_OUT, SENT

__all__ = ["MIN_GROUP", "Group", "LiftResult", "lift_report", "mean_lift", "render",
           "share_lift"]

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


def lift_report(runner: Any, segment: str, outcome: str, since: datetime | None) -> dict:
    """SPEC's ``lift --json`` object for ``segment`` and the snapshot field ``outcome``;
    ConfigError (exit 2) for an unknown segment or field, a field that is no outcome, a
    date without ``since``, or a segment without a holdout."""
    project, store = runner.project, runner.store
    segments = project.mapping.segments

    def fail(path: str, message: str, fix: str | None) -> ConfigError:
        return ConfigError([Problem(path, message, fix)])

    if segment not in segments:
        raise fail("SEGMENT", f"unknown segment '{segment}'", did_you_mean(segment, list(
            segments)) or f"segments: {', '.join(segments)}")
    if not segments[segment].holdout:
        raise fail("SEGMENT", f"segment '{segment}' has no holdout: nobody is held out to "
                   "compare with", f"give it one (segments.{segment}.holdout: 10%) and run")
    source = project.source_of("segments", segment)
    contacts = None
    if getattr(runner, "in_place", False):  # engine: postgres: the table, typed in place
        ev = runner.evaluate()
        src = runner.sources.get(source)
        found = (src.key, src.schema()) if src is not None else None
        contacts = (ev.con, q(f"typed_{source}"))
    else:
        found = store.schema(source)
    if found is None:
        raise fail("--outcome", f"no snapshot of source '{source}' in the store yet",
                   "run `crmsync plan` or `crmsync run` first")
    key_field, schema = found
    fields = [f for f in schema if f != key_field]
    if outcome not in fields:
        raise fail("--outcome", f"unknown field '{outcome}' in source '{source}'",
                   did_you_mean(outcome, fields) or f"fields: {', '.join(sorted(fields)[:20])}")
    ftype = schema[outcome]
    kind = {FieldType.bool: "bool", FieldType.date: "date", FieldType.datetime: "date",
            FieldType.number: "number"}.get(ftype)
    if kind is None:
        raise fail("--outcome", f"field '{outcome}' is {ftype.value}: an outcome is a bool "
                   "(share true), a date (share after --since) or a number (mean)", None)
    if kind == "date" and since is None:
        raise fail("--since", f"'{outcome}' is a date: the outcome is the share of dates "
                   "after --since", "add --since DATE, e.g. the start of the campaign")
    if kind != "date" and since is not None:
        raise fail("--since", f"--since applies to a date outcome; '{outcome}' is "
                   f"{ftype.value}", "leave --since out")
    groups = store.lift_outcomes(segment, source, outcome, kind, since, contacts)
    test = mean_lift if kind == "number" else share_lift
    return test(groups[SENT], groups[HELD_OUT]).as_dict(segment, outcome)


def render(d: dict) -> str:
    """``lift``'s human output."""
    def val(g: dict) -> str:
        v = g["value"]
        shown = "-" if v is None else f"{v:.4g}"
        return f"{g['n']} contacts, {shown}" + (f" (mean of {g['known']} known)"
                                                 if "known" in g else "")

    lines = [f"lift of segment {d['segment']} on {d['outcome']}",
             f"  sent:     {val(d['sent'])}", f"  held out: {val(d['held_out'])}"]
    if d.get("too_few"):
        lines.append(f"  too few to judge: fewer than {MIN_GROUP} contacts in a group")
        return "\n".join(lines)
    f = d["lift"]

    def num(v: float | None, fmt: str = "+.4g") -> str:
        return "-" if v is None else format(v, fmt)

    rel = "-" if f["relative"] is None else f"{f['relative']:+.1%}"
    lines.append(f"  lift: {num(f['absolute'])} ({rel} relative), 95% CI "
                 f"[{num(f['ci_low'])}, {num(f['ci_high'])}], p = {num(f['p_value'], '.3g')}")
    return "\n".join(lines)
