"""The kill-and-fault matrix (faultmatrix.py) on every platform destination, through the real
``crmsync run``: two kill points and four faults per platform in CI; the whole sweep (174
cases, ~30 min) only when asked for with ``-m slow`` (``python bench/bench_faults.py``
prints its table)."""

from __future__ import annotations

import pytest

from faultmatrix import CI_CASES, NotApplicable, run_case, sweep
from matrix_harnesses import PLATFORMS, harness

pytest.importorskip("hubspot")
pytest.importorskip("simple_salesforce")
pytest.importorskip("facebook_business")
pytest.importorskip("google.ads.datamanager_v1")


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch):
    """No real back-off in the run under test (in-process runs only; kills need none)."""
    from crmsync.connectors import google, meta
    from crmsync.connectors import salesforce as sf
    from crmsync.connectors.ratelimit import RollingWindow
    from crmsync.connectors.retry import RetryPolicy

    quick = RetryPolicy(attempts=4, initial_wait=0.0, max_wait=0.0)
    monkeypatch.setattr(sf, "RETRY", quick)
    monkeypatch.setattr(sf, "ROW_RETRY_WAIT", 0.0)
    monkeypatch.setattr(meta.CustomAudienceDestination, "policy", quick)
    monkeypatch.setattr(google.CustomerMatchDestination, "policy", quick)
    # the 300 requests/min limiter is per process: the fake's own quota is per fake
    monkeypatch.setattr(google.CustomerMatchDestination, "limiter", RollingWindow(10_000, 60))


def _case(platform, case, tmp_path, cli):
    phase, event, n = case
    with harness(platform, tmp_path) as h:
        try:
            f = run_case(h, tmp_path, cli, phase, event, n, seed=n)
        except NotApplicable as exc:
            pytest.skip(str(exc))
    assert f.ok(), (f.row(), f.notes)
    if event in ("request", "applied", "answer", "random"):
        assert f.kills == 1, f.notes


@pytest.mark.parametrize("case", CI_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("platform", PLATFORMS)
def test_matrix(platform, case, tmp_path, cli):
    _case(platform, case, tmp_path, cli)


@pytest.mark.slow
@pytest.mark.parametrize("case", sweep(), ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("platform", PLATFORMS)
def test_matrix_sweep(platform, case, tmp_path, cli, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the sweep runs with -m slow, or as python bench/bench_faults.py")
    _case(platform, case, tmp_path, cli)
