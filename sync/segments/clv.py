"""Predicted customer value: BG/NBD and Gamma-Gamma fitted by maximum likelihood.

BG/NBD (Fader, Hardie, Lee 2005, "Counting your customers the easy way") gives the
expected number of purchases in a horizon and P(alive); Gamma-Gamma (Fader, Hardie 2013,
"The Gamma-Gamma model of monetary value") gives the expected average spend. Both
log-likelihoods are written on scipy's special functions (gammaln, digamma, hyp2f1) and
maximised over the log of the parameters with analytic gradients (scipy's L-BFGS-B, on a
seeded sample above 20,000 contacts, then BFGS over every contact); tests/test_clv.py checks
them against the `lifetimes` library and the papers' CDNOW figures.

Time is in days throughout. Everything is vectorised over numpy arrays (one element per
contact); nothing here raises on data: a fit that cannot be made (population too small, no
convergence) is returned as not fitted with its reason, and the scores are then NaN (unknown).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import approx_fprime, minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

__all__ = ["MIN_POPULATION", "ClvFit", "ClvResult", "evaluate", "fit", "quintile_tier", "score"]

#: below this many contacts (BG/NBD) or repeat buyers (Gamma-Gamma) no fit is attempted
MIN_POPULATION = 100
#: log-parameters are bounded to exp(+-_BOUND); a fit that ends on a bound has not converged
_BOUND = 15.0
#: an unbounded step beyond exp(+-_FAR) is answered with an infinite negative log-likelihood
_FAR = 40.0
_DAY_NS = 86_400e9


@dataclass(frozen=True)
class ClvFit:
    """The fitted parameters (time in days). ``purchases_reason`` / ``spend_reason`` say why
    a model is not fitted (its parameters are then None)."""

    n: int = 0                             # BG/NBD population (all inputs known, consistent)
    n_repeat: int = 0                      # Gamma-Gamma population (x > 0, positive spend)
    r: float | None = None
    alpha: float | None = None
    a: float | None = None
    b: float | None = None
    log_likelihood: float | None = None    # BG/NBD, summed over the population
    p: float | None = None
    q: float | None = None
    gamma: float | None = None
    spend_log_likelihood: float | None = None
    purchases_reason: str | None = None
    spend_reason: str | None = None

    @property
    def purchases_fitted(self) -> bool:
        return self.r is not None

    @property
    def spend_fitted(self) -> bool:
        return self.p is not None

    def as_dict(self) -> dict[str, float | int | None]:
        """SPEC's ``segments --json`` form, plus ``n_repeat`` and the Gamma-Gamma likelihood."""
        d = asdict(self)
        for k in ("purchases_reason", "spend_reason"):
            d.pop(k)
        return d


@dataclass
class ClvResult:
    """Per-contact scores (NaN = unknown) with the fit and the counts behind the warnings."""

    fit: ClvFit
    p_alive: np.ndarray
    purchases: np.ndarray
    value: np.ndarray
    tier: np.ndarray                       # float: 1-5, NaN unknown
    inconsistent: int = 0                  # purchases < 1 or not whole, last < first, date > now
    bad_revenue: int = 0                   # revenue known but negative: value unknown
    warnings: list[str] = field(default_factory=list)


def _dot(u: np.ndarray, v: np.ndarray) -> float:
    """Inner product without BLAS: OpenBLAS threads a long ddot, which costs far more than
    it saves when the cores are busy (measured 4x slower at 450k on a loaded 2-core box)."""
    return np.einsum("i,i->", u, v)


# -- BG/NBD ------------------------------------------------------------------------------------

class _BgNbd:
    """Negative mean log-likelihood of BG/NBD (FHL 2005, eq. 6) and its gradient over
    log(r, alpha, a, b).

    Terms in x alone go through the distinct values of x (purchases are whole numbers), so
    gammaln/digamma run on a few hundred values, not on every contact; per contact there are
    two logs, two reciprocals and the log-sum of A3 and A4."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> None:
        self.n = len(x)
        self.ux, inv = np.unique(x, return_inverse=True)
        self.cnt = np.bincount(inv).astype(float)
        rep = x > 0
        self.T0 = T[~rep]                           # no repeat purchase: only A3
        self.xr, self.txr, self.Tr = x[rep], t_x[rep], T[rep]
        self.inv_r = inv[rep]
        self.sum_x, self.sum_T = float(x.sum()), float(T.sum())

    def subset(self, idx: np.ndarray) -> _BgNbd:
        x = np.concatenate([np.zeros(len(self.T0)), self.xr])
        t_x = np.concatenate([np.zeros(len(self.T0)), self.txr])
        T = np.concatenate([self.T0, self.Tr])
        return _BgNbd(x[idx], t_x[idx], T[idx])

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if not np.all(np.abs(theta) < _FAR):       # a step far outside: no likelihood there
            return math.inf, np.zeros_like(theta)
        r, alpha, a, b = np.exp(theta)
        ux, cnt, n = self.ux, self.cnt, self.n
        # contacts without repeat purchases: A3 = -r log(alpha + T)
        aT0 = alpha + self.T0
        s_lT0, s_iT0 = np.log(aT0).sum(), (1 / aT0).sum()
        # repeat buyers: A3 + log(1 + exp(d)), d = A4 - A3
        xr = self.xr
        aT, atx = alpha + self.Tr, alpha + self.txr
        lT, ltx = np.log(aT), np.log(atx)
        D = lT - ltx
        rx = r + xr
        c_u = math.log(a) - np.log(b + np.maximum(ux, 1) - 1)   # log a - log(b + x - 1)
        d = c_u[self.inv_r] + rx * D
        s_lT = lT.sum()
        ll = ((gammaln(r + ux) - gammaln(r) + gammaln(a + b) + gammaln(b + ux) - gammaln(b)
               - gammaln(a + b + ux)) @ cnt + n * r * math.log(alpha)
              - r * s_lT0 - r * s_lT - _dot(xr, lT) + np.logaddexp(0, d).sum())
        w = expit(d)                                # weight of A4 in the log-sum
        iT, itx = 1 / aT, 1 / atx
        w_u = np.bincount(self.inv_r, weights=w, minlength=len(ux))
        g_r = ((digamma(r + ux) - digamma(r)) @ cnt + n * math.log(alpha) - s_lT0 - s_lT
               + _dot(w, D))
        g_alpha = (n * r / alpha - r * s_iT0 - r * iT.sum() - _dot(xr, iT)
                   + _dot(rx * w, iT - itx))
        dab = digamma(a + b)
        g_a = n * dab - digamma(a + b + ux) @ cnt + w.sum() / a
        g_b = (n * (dab - digamma(b)) + (digamma(b + ux) - digamma(a + b + ux)) @ cnt
               - w_u @ (1 / (b + np.maximum(ux, 1) - 1)))
        grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
        return -ll / n, -grad / n

    def starts(self) -> list[np.ndarray]:
        # alpha is a time scale: start it at the population's time per repeat purchase
        scale = max(self.sum_T / max(self.sum_x, 1.0), 1.0)
        return [np.log([1.0, scale, 1.0, 1.0]), np.log([0.5, scale / 2, 0.5, 2.0]),
                np.zeros(4)]


# -- Gamma-Gamma -------------------------------------------------------------------------------

class _GammaGamma:
    """Negative mean log-likelihood of Gamma-Gamma (Fader, Hardie 2013, eq. 3 with the
    Jacobian of the average) and its gradient over log(p, q, gamma), x > 0 and m > 0."""

    def __init__(self, x: np.ndarray, m: np.ndarray) -> None:
        self.n = len(x)
        self.ux, inv = np.unique(x, return_inverse=True)
        self.cnt = np.bincount(inv).astype(float)
        self.x, self.m = x, m
        self.xm = x * m
        lm = np.log(m)
        self.sum_xlogm, self.sum_logm = float(_dot(x, lm)), float(lm.sum())
        self.sum_xlogx = float(_dot(x, np.log(x)))

    def subset(self, idx: np.ndarray) -> _GammaGamma:
        return _GammaGamma(self.x[idx], self.m[idx])

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if not np.all(np.abs(theta) < _FAR):
            return math.inf, np.zeros_like(theta)
        p, q, g = np.exp(theta)
        ux, cnt, n = self.ux, self.cnt, self.n
        gxm = g + self.xm
        lxm, ixm = np.log(gxm), 1 / gxm
        x_lxm, s_lxm = _dot(self.x, lxm), lxm.sum()
        ll = ((gammaln(p * ux + q) - gammaln(p * ux)) @ cnt - n * gammaln(q)
              + n * q * math.log(g) + p * self.sum_xlogm - self.sum_logm
              + p * self.sum_xlogx - p * x_lxm - q * s_lxm)
        dq = digamma(p * ux + q)
        g_p = (ux * (dq - digamma(p * ux))) @ cnt + self.sum_xlogm + self.sum_xlogx - x_lxm
        g_q = dq @ cnt - n * digamma(q) + n * math.log(g) - s_lxm
        g_g = n * q / g - p * (_dot(self.x, ixm)) - q * ixm.sum()
        grad = np.array([g_p * p, g_q * q, g_g * g])
        return -ll / n, -grad / n

    def starts(self) -> list[np.ndarray]:
        mean_m = max(float(self.m.mean()), 1e-9)
        return [np.log([1.0, 2.0, mean_m]), np.log([5.0, 3.0, mean_m * 2]), np.zeros(3)]


#: a fit has converged when every component of the gradient of the mean negative
#: log-likelihood over the log-parameters is below this
_GTOL = 1e-7
#: above this many contacts the fit starts from a fit on a seeded sample of this size
_SAMPLE = 20_000


def _maximise(model: _BgNbd | _GammaGamma) -> tuple[np.ndarray | None, float, str | None]:
    """Maximise the likelihood; (log-parameters, log-likelihood, None) or (None, nan, why).

    L-BFGS-B from each start on at most _SAMPLE contacts, then the full likelihood from
    that optimum by BFGS in coordinates whitened with the sample's Hessian (over a large
    population that takes a few steps, each over every contact). The first start whose
    result has a vanishing gradient inside the bounds wins."""
    small = model.n <= _SAMPLE
    sub = model if small else model.subset(
        np.random.default_rng(0).choice(model.n, _SAMPLE, replace=False))
    reason = "did not converge"
    for x0 in sub.starts():
        try:
            with np.errstate(all="ignore"):
                res = minimize(sub, x0, jac=True, method="L-BFGS-B",
                               bounds=[(-_BOUND, _BOUND)] * len(x0),
                               options={"maxiter": 1000, "ftol": 1e-15, "gtol": _GTOL / 10})
                theta = _polish(model, sub, res.x) if np.all(np.isfinite(res.x)) else None
        except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
            reason = f"did not converge ({type(exc).__name__}: {exc})"
            continue
        if theta is None or np.any(np.abs(theta) > _BOUND - 1e-3):
            off = np.abs(res.x if theta is None else theta) > _BOUND - 1
            reason = ("did not converge (a parameter ran off to 0 or infinity: the model "
                      "does not describe these purchases)" if np.any(off)
                      else f"did not converge ({res.message})")
            continue
        return theta, -float(model(theta)[0]) * model.n, None
    return None, math.nan, reason


def _converged(model: _BgNbd | _GammaGamma, theta: np.ndarray) -> bool:
    with np.errstate(all="ignore"):
        f, g = model(theta)
    return bool(np.isfinite(f) and np.all(np.isfinite(g)) and np.abs(g).max() < _GTOL)


def _polish(model: _BgNbd | _GammaGamma, sub: _BgNbd | _GammaGamma,
            theta0: np.ndarray) -> np.ndarray | None:
    """Maximise the full likelihood from the sample's optimum theta0."""
    with np.errstate(all="ignore"):
        try:
            H = approx_fprime(theta0, lambda t: sub(t)[1], 1e-6)
            L = np.linalg.cholesky(np.linalg.inv((H + H.T) / 2))
        except np.linalg.LinAlgError:
            L = np.eye(len(theta0))

        def whitened(u: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = model(theta0 + L @ u)
            return f, L.T @ g

        res = minimize(whitened, np.zeros(len(theta0)), jac=True, method="BFGS",
                       options={"gtol": _GTOL / 10, "maxiter": 200})
    theta = theta0 + L @ res.x
    return theta if _converged(model, theta) else None


def fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, m: np.ndarray | None = None) -> ClvFit:
    """Fit BG/NBD over all given contacts and Gamma-Gamma over those with x > 0 and m > 0.

    x: repeat purchases (whole, >= 0); t_x: time of the last purchase since the first;
    T: age (now - first); m: average order (NaN where unknown). Inputs must be consistent
    (``evaluate`` filters them); time in any unit, the parameters come out in that unit.
    """
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    out: dict = {"n": len(x)}
    if len(x) < MIN_POPULATION:
        out["purchases_reason"] = (f"population too small ({len(x)} contacts with all inputs "
                                   f"known, {MIN_POPULATION} needed)")
    else:
        theta, ll, why = _maximise(_BgNbd(x, t_x, T))
        if theta is None:
            out["purchases_reason"] = why
        else:
            out.update(zip(("r", "alpha", "a", "b"), map(float, np.exp(theta)), strict=True),
                       log_likelihood=ll)
    if m is None:
        out["spend_reason"] = "no revenue"
        return ClvFit(**out)
    m = np.asarray(m, dtype=float)
    gg = (x > 0) & (m > 0)
    out["n_repeat"] = n_rep = int(gg.sum())
    if n_rep < MIN_POPULATION:
        out["spend_reason"] = (f"population too small ({n_rep} repeat buyers with revenue, "
                               f"{MIN_POPULATION} needed)")
        return ClvFit(**out)
    theta, ll, why = _maximise(_GammaGamma(x[gg], m[gg]))
    if theta is not None and math.exp(theta[1]) <= 1:
        theta, why = None, "the fitted q is not above 1: the expected spend is unbounded"
    if theta is None:
        out["spend_reason"] = why
    else:
        out.update(zip(("p", "q", "gamma"), map(float, np.exp(theta)), strict=True),
                   spend_log_likelihood=ll)
    return ClvFit(**out)


# -- scoring -----------------------------------------------------------------------------------

def p_alive(f: ClvFit, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P(alive | x, t_x, T) (FHL 2005, eq. 13); 1 for a contact without repeat purchases."""
    r, alpha, a, b = f.r, f.alpha, f.a, f.b
    with np.errstate(all="ignore"):
        log_div = ((r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
                   + np.log(a / (b + np.maximum(x, 1) - 1)))
        return np.where(x > 0, expit(-log_div), 1.0)


def expected_purchases(f: ClvFit, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray,
                       alive: np.ndarray | None = None) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10); ``alive`` is p_alive's
    result when already computed (it is the reciprocal of eq. 10's denominator)."""
    r, alpha, a, b = f.r, f.alpha, f.a, f.b
    A, B, C = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    with np.errstate(all="ignore"):
        ln_hyp = np.log(hyp2f1(A, B, C, z))
        bad = ~np.isfinite(ln_hyp)
        if bad.any():  # Euler's transformation where the series overflows
            ln_hyp[bad] = (np.log(hyp2f1(C[bad] - A[bad], C[bad] - B[bad], C[bad], z[bad]))
                           + (C[bad] - A[bad] - B[bad]) * np.log1p(-z[bad]))
        second = -np.expm1(A * np.log1p(-z) + ln_hyp)   # (alpha+T)/(alpha+T+t) = 1 - z
        if alive is None:
            alive = p_alive(f, x, t_x, T)
        return C / (a - 1) * second * alive


def expected_spend(f: ClvFit, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E[average order | x, m] (Fader, Hardie 2013, eq. 5); the population mean when x = 0."""
    p, q, g = f.p, f.q, f.gamma
    w = p * x / (p * x + q - 1)
    return (1 - w) * (g * p / (q - 1)) + w * m


def quintile_tier(v: np.ndarray) -> np.ndarray:
    """SPEC's RFM rule over the known values of v: 1 + floor(5 b / n), b = the number of
    known values strictly smaller, n = the number known (ties share a tier); NaN stays NaN.

    Tier >= k exactly when b >= ceil((k-1) n / 5), i.e. when v exceeds the value of rank
    ceil((k-1) n / 5) (1-based): four order statistics, found by partition."""
    out = np.full(len(v), np.nan)
    known = ~np.isnan(v)
    kv = v[known]
    n = len(kv)
    if n:
        ranks = sorted({-(-(k - 1) * n // 5) - 1 for k in range(2, 6)})
        cut = np.partition(kv, ranks)[[-(-(k - 1) * n // 5) - 1 for k in range(2, 6)]]
        out[known] = 1 + np.searchsorted(cut, kv, side="left")
    return out


def score(f: ClvFit, horizon: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray,
          m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p_alive, purchases, value, tier) for consistent inputs; NaN where a model is not
    fitted or m is NaN. value = purchases x expected spend, undiscounted."""
    nan = np.full(len(x), np.nan)
    if not f.purchases_fitted:
        return nan, nan.copy(), nan.copy(), nan.copy()
    pa = p_alive(f, x, t_x, T)
    ep = expected_purchases(f, horizon, x, t_x, T, alive=pa)
    value = ep * expected_spend(f, x, m) if f.spend_fitted else nan
    return pa, ep, value, quintile_tier(value)


def evaluate(first: np.ndarray, last: np.ndarray, purchases: np.ndarray, revenue: np.ndarray,
             now: float, horizon: float) -> ClvResult:
    """Fit and score every contact from its mapped fields, as SPEC's "Predictive value (CLV)".

    first, last, now: times in days on any common origin (NaN = unknown), or datetime64
    arrays (NaT = unknown) with ``now`` a numpy datetime64; purchases, revenue: numbers
    (NaN = unknown); horizon: days. A contact with any of first/last/purchases unknown, or
    inconsistent, has all fields unknown; with revenue unknown (or negative) only value/tier.
    """
    first, last = _days(first), _days(last)
    now_d = float(_days(np.asarray([now]))[0])
    purchases = np.asarray(purchases, dtype=float)
    revenue = np.asarray(revenue, dtype=float)
    n_all = len(first)
    known = ~(np.isnan(first) | np.isnan(last) | np.isnan(purchases))
    with np.errstate(invalid="ignore"):
        bad = known & ((purchases < 1) | (purchases != np.floor(purchases)) | (last < first)
                       | (last > now_d) | (first > now_d))
    ok = known & ~bad
    x = purchases[ok] - 1
    T = now_d - first[ok]
    t_x = np.where(x > 0, last[ok] - first[ok], 0.0)
    rev = revenue[ok]
    with np.errstate(invalid="ignore"):
        neg = rev < 0
    m = np.where(neg, np.nan, rev / (x + 1))
    f = fit(x, t_x, T, m)
    cols = score(f, horizon, x, t_x, T, m)
    full = []
    for c in cols:
        col = np.full(n_all, np.nan)
        col[ok] = c
        full.append(col)
    warnings = []
    if f.purchases_reason:
        warnings.append(f"purchases model not fitted: {f.purchases_reason}; CLV fields unknown")
    elif f.spend_reason:
        warnings.append(f"spend model not fitted: {f.spend_reason}; value and tier unknown")
    n_bad, n_neg = int(bad.sum()), int(neg.sum())
    if n_bad:
        warnings.append(f"{n_bad} contacts with inconsistent purchase fields (purchases < 1 "
                        f"or not whole, last before first, or a date after now): CLV unknown")
    if n_neg:
        warnings.append(f"{n_neg} contacts with negative revenue: value unknown")
    return ClvResult(f, *full, inconsistent=n_bad, bad_revenue=n_neg, warnings=warnings)


def _days(a: np.ndarray) -> np.ndarray:
    """Float days from a datetime64 array (NaT -> NaN) or a number array."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.datetime64):
        ns = a.astype("datetime64[ns]")
        out = ns.astype(np.int64).astype(float) / _DAY_NS
        out[np.isnat(ns)] = np.nan
        return out
    return a.astype(float)
