"""Lift statistics (sync/lift.py) against statsmodels and a worked example, and the too-few
rule. crmsync computes them with scipy; statsmodels is the independent reference here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from crmsync.sync.reports.lift import MIN_GROUP, mean_lift, share_lift


def flags(k: int, n: int) -> np.ndarray:
    return np.arange(n) < k


def test_share_worked_example():
    # 120 of 1,000 sent converted, 100 of 1,000 held out. By hand: pooled p = 0.11,
    # z = 0.02 / sqrt(0.11 * 0.89 * 2 / 1000) = 1.4293, two-sided p = 0.1529; unpooled
    # SE = sqrt(0.12 * 0.88 / 1000 + 0.1 * 0.9 / 1000) = 0.013986, 95% CI 0.02 +- 1.96 SE.
    r = share_lift(flags(120, 1000), flags(100, 1000))
    assert not r.too_few
    assert (r.sent.n, r.sent.value, r.held_out.n, r.held_out.value) == (1000, 0.12, 1000, 0.1)
    assert r.absolute == pytest.approx(0.02)
    assert r.relative == pytest.approx(0.2)
    assert r.p_value == pytest.approx(0.1529, abs=1e-4)
    assert r.ci_low == pytest.approx(-0.00741, abs=1e-5)
    assert r.ci_high == pytest.approx(0.04741, abs=1e-5)


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"), [(120, 1000, 100, 1000), (7, 30, 19, 45),
                                                     (300, 310, 12, 40), (1, 500, 0, 31),
                                                     (5000, 90000, 480, 10000)])
def test_share_matches_statsmodels(k1, n1, k2, n2):
    r = share_lift(flags(k1, n1), flags(k2, n2))
    _, p = proportions_ztest([k1, k2], [n1, n2])              # pooled z, two-sided
    lo, hi = confint_proportions_2indep(k1, n1, k2, n2, method="wald", compare="diff")
    assert r.p_value == pytest.approx(p, rel=1e-9)
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert r.absolute == pytest.approx(k1 / n1 - k2 / n2)
    assert r.relative == (pytest.approx((k1 / n1 - k2 / n2) / (k2 / n2)) if k2 else None)


def test_share_without_any_difference_to_test():
    r = share_lift(flags(0, 40), flags(0, 50))
    assert r.absolute == 0 and r.p_value is None and (r.ci_low, r.ci_high) == (0, 0)
    assert r.relative is None                                  # held out share 0: no ratio


def test_mean_matches_statsmodels_welch():
    rng = np.random.default_rng(7)
    a, b = rng.lognormal(4, 1, 400), rng.lognormal(3.9, 0.7, 90)
    a[::10] = np.nan                                           # unknown: left out
    r = mean_lift(a, b)
    ka = a[~np.isnan(a)]
    cm = CompareMeans(DescrStatsW(ka), DescrStatsW(b))
    _, p, _ = cm.ttest_ind(usevar="unequal")
    lo, hi = cm.tconfint_diff(alpha=0.05, usevar="unequal")
    assert (r.sent.n, r.sent.known, r.held_out.n, r.held_out.known) == (400, 360, 90, 90)
    assert r.sent.value == pytest.approx(ka.mean()) and r.held_out.value == pytest.approx(b.mean())
    assert r.absolute == pytest.approx(ka.mean() - b.mean())
    assert r.relative == pytest.approx((ka.mean() - b.mean()) / b.mean())
    assert r.p_value == pytest.approx(p, rel=1e-9)
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))


def test_mean_worked_example():
    # By hand: means 5 and 3; sample variances 60/29 = 2.0690 and 16/31 = 0.5161;
    # SE = sqrt(2.0690/30 + 0.5161/32) = 0.29171, t = 6.856; Welch's df =
    # 0.085095^2 / (0.068966^2/29 + 0.016129^2/31) = 42.0, t(0.975, 42) = 2.0181, so the
    # 95% CI is 2 +- 0.5887 = [1.4113, 2.5887] and the two-sided p-value 2.3e-8.
    a = np.array([3, 4, 5, 6, 7] * 6, dtype=float)
    b = np.array([2, 3, 3, 4] * 8, dtype=float)
    r = mean_lift(a, b)
    assert (r.sent.value, r.held_out.value, r.absolute) == (5.0, 3.0, 2.0)
    assert r.relative == pytest.approx(2 / 3)
    assert r.ci_low == pytest.approx(1.4113, abs=1e-4)
    assert r.ci_high == pytest.approx(2.5887, abs=1e-4)
    assert r.p_value == pytest.approx(2.3e-8, rel=0.02)


def test_too_few_in_either_group():
    assert share_lift(flags(10, MIN_GROUP - 1), flags(10, 500)).too_few
    assert share_lift(flags(10, 500), flags(10, MIN_GROUP - 1)).too_few
    assert not share_lift(flags(10, MIN_GROUP), flags(10, MIN_GROUP)).too_few
    r = share_lift(flags(3, 12), flags(40, 400))
    d = r.as_dict("vip", "converted")
    assert d == {"segment": "vip", "outcome": "converted", "sent": {"n": 12, "value": 0.25},
                 "held_out": {"n": 400, "value": 0.1}, "too_few": True}
    # means count the known values: 40 contacts, 29 of them known, is too few
    vals = np.arange(40.0)
    vals[:11] = np.nan
    m = mean_lift(vals, np.arange(100.0))
    assert m.too_few and m.sent.known == 29 and "lift" not in m.as_dict("s", "o")


def test_json_shape_is_specs():
    d = share_lift(flags(120, 1000), flags(100, 1000)).as_dict("vip", "converted")
    assert set(d) == {"segment", "outcome", "sent", "held_out", "lift"}
    assert set(d["lift"]) == {"absolute", "relative", "ci_low", "ci_high", "p_value"}
    assert set(d["sent"]) == {"n", "value"}
    json.dumps(d)                                              # plain floats and ints
    m = mean_lift(np.arange(50.0), np.arange(40.0)).as_dict("vip", "revenue")
    assert set(m["sent"]) == {"n", "value", "known"}
