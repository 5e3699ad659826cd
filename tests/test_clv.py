"""CLV (BG/NBD + Gamma-Gamma): the papers' CDNOW figures, the `lifetimes` reference
library per customer, SPEC's input rules, tiers, and fits that cannot be made.

CDNOW sample (2,357 customers, weeks) as shipped by lifetimes 0.11.3 (MIT):
lifetimes.datasets.load_cdnow_summary_data_with_monetary_value(). Figures: Fader, Hardie,
Lee (2005) "Counting your customers the easy way", Marketing Science 24(2), section 5:
r=0.243, alpha=4.414, a=0.793, b=2.426, LL=-9582.4; Fader, Hardie (2013) "The Gamma-Gamma
model of monetary value", p=6.25, q=3.74, gamma=15.44 over the 946 repeat buyers.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():  # lifetimes 0.11.3 sets a pandas option pandas 3 deprecates
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

from crmsync.sync.segments import clv


def sig3(v: float) -> float:
    return float(f"{v:.3g}")


@pytest.fixture(scope="module")
def cdnow():
    d = load_cdnow_summary_data_with_monetary_value()
    x, t_x, T, mv = (d[c].to_numpy(float) for c in ("frequency", "recency", "T",
                                                      "monetary_value"))
    return x, t_x, T, mv


@pytest.fixture(scope="module")
def weeks_fit(cdnow):
    x, t_x, T, mv = cdnow
    return clv.fit(x, t_x, T, np.where(x > 0, mv, np.nan))


def test_cdnow_reproduces_the_papers(weeks_fit):
    f = weeks_fit
    assert f.n == 2357 and f.n_repeat == 946
    assert (sig3(f.r), sig3(f.alpha), sig3(f.a), sig3(f.b)) == (0.243, 4.41, 0.793, 2.43)
    # the papers' 4-digit figures, to the digit they print
    assert round(f.alpha, 3) == 4.414 and round(f.b, 3) == 2.426
    assert round(f.log_likelihood, 1) == -9582.4
    assert (sig3(f.p), sig3(f.q), sig3(f.gamma)) == (6.25, 3.74, 15.4)
    assert round(f.gamma, 1) in (15.4, 15.5) and abs(f.gamma - 15.445) < 0.005


def test_parameters_agree_with_lifetimes(cdnow, weeks_fit):
    x, t_x, T, mv = cdnow
    ref = BetaGeoFitter().fit(x, t_x, T).params_
    f = weeks_fit
    np.testing.assert_allclose([f.r, f.alpha, f.a, f.b], ref[["r", "alpha", "a", "b"]],
                               rtol=1e-6)
    rep = x > 0
    gg = GammaGammaFitter().fit(x[rep], mv[rep]).params_
    np.testing.assert_allclose([f.p, f.q, f.gamma], gg[["p", "q", "v"]], rtol=1e-6)


def test_per_customer_scores_agree_with_lifetimes(cdnow, weeks_fit):
    x, t_x, T, mv = cdnow
    f = weeks_fit
    horizon = 90 / 7                                      # SPEC's 90 days, in weeks
    # each library with its own fit: P(alive) to 1e-6, expected purchases to 1e-6
    own = BetaGeoFitter().fit(x, t_x, T)
    pa = clv.p_alive(f, x, t_x, T)
    ep = clv.expected_purchases(f, horizon, x, t_x, T)
    assert np.abs(pa - own.conditional_probability_alive(x, t_x, T)).max() < 1e-6
    ref_ep = own.conditional_expected_number_of_purchases_up_to_time(horizon, x, t_x, T)
    assert np.abs(ep - ref_ep).max() < 1e-6
    # the same parameters in both: the formulas agree to rounding, at the paper's 39 weeks too
    own.params_[["r", "alpha", "a", "b"]] = [f.r, f.alpha, f.a, f.b]
    assert np.abs(pa - own.conditional_probability_alive(x, t_x, T)).max() < 1e-12
    for t in (horizon, 39.0, 78.0):
        got = clv.expected_purchases(f, t, x, t_x, T)
        want = own.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Gamma-Gamma's conditional expected average order
    rep = x > 0
    gg = GammaGammaFitter().fit(x[rep], mv[rep])
    gg.params_[["p", "q", "v"]] = [f.p, f.q, f.gamma]
    np.testing.assert_allclose(clv.expected_spend(f, x[rep], mv[rep]),
                               gg.conditional_expected_average_profit(x[rep], mv[rep]),
                               rtol=1e-12)


def test_one_time_buyers_are_alive(cdnow, weeks_fit):
    x, t_x, T, _ = cdnow
    pa = clv.p_alive(weeks_fit, x, t_x, T)
    assert np.all(pa[x == 0] == 1.0) and np.all((pa[x > 0] > 0) & (pa[x > 0] < 1))


def test_days_scale_alpha_by_seven(cdnow, weeks_fit):
    x, t_x, T, mv = cdnow
    d = clv.fit(x, 7 * t_x, 7 * T, np.where(x > 0, mv, np.nan))
    w = weeks_fit
    assert d.alpha == pytest.approx(7 * w.alpha, rel=1e-6)
    for k in ("r", "a", "b", "p", "q", "gamma"):
        assert getattr(d, k) == pytest.approx(getattr(w, k), rel=1e-6), k
    # a time density: the log-likelihood shifts by the Jacobian, log 7 per repeat purchase
    assert d.log_likelihood == pytest.approx(w.log_likelihood - x.sum() * math.log(7),
                                             abs=1e-4)
    # and the scores do not depend on the unit
    np.testing.assert_allclose(clv.p_alive(d, x, 7 * t_x, 7 * T),
                               clv.p_alive(w, x, t_x, T), atol=1e-7)
    np.testing.assert_allclose(clv.expected_purchases(d, 90, x, 7 * t_x, 7 * T),
                               clv.expected_purchases(w, 90 / 7, x, t_x, T), atol=1e-6)


def cdnow_fields(cdnow, now: float = 10_000.0):
    """The CDNOW summary as SPEC's mapped fields, in days: first/last purchase, the number
    of purchases and the total revenue (the average order stands for the repeat one)."""
    x, t_x, T, mv = cdnow
    first = now - 7 * T
    return first, first + 7 * t_x, x + 1, mv * (x + 1), now


def test_evaluate_derives_x_tx_T_and_m_as_spec(cdnow, weeks_fit):
    first, last, purchases, revenue, now = cdnow_fields(cdnow)
    res = clv.evaluate(first, last, purchases, revenue, now, horizon=90)
    f, w = res.fit, weeks_fit
    assert f.n == 2357 and f.n_repeat == 946 and res.inconsistent == 0
    assert f.alpha == pytest.approx(7 * w.alpha, rel=1e-6)
    assert f.p == pytest.approx(w.p, rel=1e-6) and f.gamma == pytest.approx(w.gamma, rel=1e-6)
    x, t_x, T, mv = cdnow
    np.testing.assert_allclose(res.purchases, clv.expected_purchases(w, 90 / 7, x, t_x, T),
                               atol=1e-6)
    spend = clv.expected_spend(w, x, mv)
    np.testing.assert_allclose(res.value, res.purchases * spend, rtol=1e-6)
    assert set(np.unique(res.tier)) == {1, 2, 3, 4, 5}
    assert res.warnings == []


def test_evaluate_takes_datetime64(cdnow):
    first, last, purchases, revenue, now = cdnow_fields(cdnow)
    epoch = np.datetime64("1970-01-01T00:00:00", "us")

    def dt(days):
        return epoch + (np.asarray(days) * 86_400e6).round().astype("timedelta64[us]")

    a = clv.evaluate(first, last, purchases, revenue, now, 90)
    b = clv.evaluate(dt(first), dt(last), purchases, revenue, dt([now])[0], 90)
    np.testing.assert_allclose(b.purchases, a.purchases, atol=1e-6)
    first_nat = dt(first)
    first_nat[:5] = np.datetime64("NaT")
    c = clv.evaluate(first_nat, dt(last), purchases, revenue, dt([now])[0], 90)
    assert np.isnan(c.p_alive[:5]).all() and c.fit.n == 2357 - 5


def test_unknown_and_inconsistent_inputs(cdnow):
    first, last, purchases, revenue, now = (np.array(v, dtype=float, copy=True)
                                            if i < 4 else v
                                            for i, v in enumerate(cdnow_fields(cdnow)))
    first[0] = np.nan                          # unknown: not counted, CLV unknown
    purchases[1] = 0                           # purchases < 1
    purchases[2] = 2.5                         # not a whole number of purchases
    last[3] = first[3] - 1                     # last before first
    last[4] = now + 1                          # a date after now
    revenue[5] = np.nan                        # revenue unknown: in the fit, value unknown
    revenue[6] = -10                           # negative revenue: value unknown, counted
    res = clv.evaluate(first, last, purchases, revenue, now, 90)
    assert res.inconsistent == 4 and res.bad_revenue == 1
    assert res.fit.n == 2357 - 5
    for i in range(5):
        assert np.isnan([res.p_alive[i], res.purchases[i], res.value[i], res.tier[i]]).all()
    for i in (5, 6):
        assert not np.isnan(res.p_alive[i]) and not np.isnan(res.purchases[i])
        assert np.isnan(res.value[i]) and np.isnan(res.tier[i])
    assert not np.isnan(res.value[7:]).any()
    assert any("4 contacts with inconsistent" in w for w in res.warnings)
    assert any("1 contacts with negative revenue" in w for w in res.warnings)


def test_population_too_small_is_not_fitted(cdnow):
    first, last, purchases, revenue, now = (v[:99] if i < 4 else v
                                            for i, v in enumerate(cdnow_fields(cdnow)))
    res = clv.evaluate(first, last, purchases, revenue, now, 90)
    assert not res.fit.purchases_fitted and "population too small (99" in res.fit.purchases_reason
    assert np.isnan(res.p_alive).all() and np.isnan(res.value).all()
    assert res.warnings and "not fitted" in res.warnings[0]


def test_too_few_repeat_buyers_fits_purchases_only(cdnow):
    x, t_x, T, mv = cdnow
    keep = (x == 0) | (np.cumsum(x > 0) <= 60)      # 60 repeat buyers
    f = clv.fit(x[keep], t_x[keep], T[keep], np.where(x > 0, mv, np.nan)[keep])
    assert f.purchases_fitted and not f.spend_fitted
    assert "60 repeat buyers" in f.spend_reason


def simulate(n: int, seed: int, r=0.25, alpha=30.0, a=0.8, b=2.4):
    """(x, t_x, T) drawn from BG/NBD itself, in days."""
    rng = np.random.default_rng(seed)
    lam, drop = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    T = rng.uniform(1, 730, n)
    arrivals = rng.poisson(lam * T)
    x = np.minimum(arrivals, rng.geometric(drop)).astype(float)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    return x, t_x, T


def test_simulated_population_recovers_its_parameters():
    x, t_x, T = simulate(30_000, seed=5)            # above the sample size: warm start path
    f = clv.fit(x, t_x, T)
    assert f.purchases_fitted and f.spend_reason == "no revenue"
    np.testing.assert_allclose([f.r, f.alpha, f.a, f.b], [0.25, 30.0, 0.8, 2.4], rtol=0.15)
    # the fit over every contact, not the warm start's sample: the gradient vanishes there
    g = clv._BgNbd(x, t_x, T)(np.log([f.r, f.alpha, f.a, f.b]))[1]
    assert np.abs(g).max() < 1e-7
    # and a plain L-BFGS-B from the same start on all of them lands on the same optimum
    from scipy.optimize import minimize
    m = clv._BgNbd(x, t_x, T)
    res = minimize(m, m.starts()[0], jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 1000})
    np.testing.assert_allclose(np.exp(res.x), [f.r, f.alpha, f.a, f.b], rtol=1e-5)


def test_a_fit_that_cannot_converge_is_reported_not_raised():
    rng = np.random.default_rng(3)
    n = 500
    T = rng.uniform(10, 400, n)
    # nobody ever buys again: the likelihood grows as r -> 0, there is no maximum
    f = clv.fit(np.zeros(n), np.zeros(n), T, np.full(n, np.nan))
    assert not f.purchases_fitted and f.purchases_reason.startswith("did not converge")
    # everybody buys again and keeps buying: no dropout, a and b run off to infinity
    x = rng.integers(1, 5, n).astype(float)
    t_x = T * rng.uniform(0.1, 0.9, n)
    f = clv.fit(x, t_x, T, np.full(n, 25.0))
    assert not f.purchases_fitted and "ran off" in f.purchases_reason
    res = clv.score(f, 90, x, t_x, T, np.full(n, 25.0))
    assert all(np.isnan(c).all() for c in res)
    # every repeat buyer spends the same: Gamma-Gamma's p runs off to infinity
    x, t_x, T = simulate(2000, seed=4)
    m = np.full(len(x), 25.0)
    f = clv.fit(x, t_x, T, m)
    assert f.purchases_fitted and not f.spend_fitted and "ran off" in f.spend_reason
    pa, ep, value, tier = clv.score(f, 90, x, t_x, T, m)
    assert not np.isnan(pa).any() and not np.isnan(ep).any()
    assert np.isnan(value).all() and np.isnan(tier).all()


@pytest.mark.parametrize("seed", range(3))
def test_counts_unrelated_to_age_are_not_fitted_and_never_raise(seed):
    """Order counts that do not grow with a customer's age (a 200-order customer of one
    day, everybody's last order recent) have no maximum: alpha runs off to 0. The unbounded
    polish stepped into exp() underflow there (math domain error) before steps that far out
    were answered with an infinite negative log-likelihood."""
    rng = np.random.default_rng(seed)
    n = 4000
    T = np.ceil(rng.exponential(150, n))
    x = np.minimum(np.floor(rng.pareto(1.0, n) * 2), 200)
    x[rng.random(n) < 0.5] = 0
    t_x = np.where(x > 0, T - np.minimum(np.ceil(rng.exponential(50, n)), T), 0)
    f = clv.fit(x, t_x, T, np.full(n, 20.0))
    assert not f.purchases_fitted and "ran off" in f.purchases_reason


def test_as_dict_carries_specs_keys(weeks_fit):
    d = weeks_fit.as_dict()
    assert {"r", "alpha", "a", "b", "p", "q", "gamma", "n", "log_likelihood"} <= set(d)
    assert d["n"] == 2357


def naive_tier(v: np.ndarray) -> np.ndarray:
    known = v[~np.isnan(v)]
    n = len(known)
    return np.array([np.nan if math.isnan(x) else 1 + (5 * int((known < x).sum())) // n
                     for x in v])


@pytest.mark.parametrize("seed", range(20))
def test_quintile_tier_is_specs_rule(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    v = rng.integers(0, int(rng.integers(1, 12)), n).astype(float)    # many ties
    v[rng.random(n) < 0.2] = np.nan
    np.testing.assert_array_equal(clv.quintile_tier(v), naive_tier(v))


def test_quintile_tier_of_distinct_values_is_even():
    t = clv.quintile_tier(np.arange(1000.0)[::-1])
    assert np.bincount(t.astype(int)).tolist() == [0, 200, 200, 200, 200, 200]
    assert t[0] == 5 and t[-1] == 1
