"""`type: clv` through the CLI: validate, plan/segments (the fit, warnings), rules on the
CLV fields, explain; generated contacts drawn from BG/NBD itself."""

from __future__ import annotations

import numpy as np
import yaml

from crmsync.sync.segments import clv

from conftest import write_csv, write_mapping

AS_OF = "2026-11-01T00:00:00Z"
NOW = np.datetime64("2026-11-01T00:00:00", "s")
HEADER = ["id", "email", "first_order", "last_order", "orders", "revenue", "converted"]


def contacts(n: int = 600, seed: int = 11) -> list[list[str]]:
    """BG/NBD in days (r=0.25, alpha=30, a=0.8, b=2.4), dates at a whole day."""
    rng = np.random.default_rng(seed)
    lam, drop = rng.gamma(0.25, 1 / 30, n), rng.beta(0.8, 2.4, n)
    T = rng.integers(30, 730, n).astype(float)
    arrivals = rng.poisson(lam * T)
    x = np.minimum(arrivals, rng.geometric(drop))
    t_x = np.where(x > 0, np.floor(T * rng.beta(np.maximum(x, 1), arrivals - x + 1)), 0)
    revenue = rng.gamma(6.0 * (x + 1), 1 / rng.gamma(3.8, 1 / 15, n))
    day = np.timedelta64(1, "D")
    first = (NOW - T.astype(int) * day).astype("datetime64[D]")
    last = first + t_x.astype(int) * day
    rows = []
    for i in range(n):
        rows.append([f"c{i:04d}", f"u{i}@x.example", str(first[i]), str(last[i]),
                     str(int(x[i]) + 1), f"{revenue[i]:.2f}",
                     "true" if rng.random() < 0.3 else "false"])
    return rows


def mapping(tmp_path, rows, score=None, segments=None):
    write_csv(tmp_path / "c.csv", HEADER, rows)
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id",
                            "schema": {"first_order": "date", "last_order": "date",
                                       "orders": "number", "revenue": "number",
                                       "converted": "bool"},
                            "identity": {"email": "email"}}},
        "scores": {"value": score or {
            "type": "clv", "first_purchase": "first_order", "last_purchase": "last_order",
            "purchases": "orders", "revenue": "revenue", "horizon": "90d"}},
        "segments": segments or {
            "churn_risk": {"description": "likely gone", "owner": "crm",
                           "where": {"field": "value.p_alive", "lt": 0.3}},
            "top_value": {"description": "best predicted value", "owner": "crm",
                          "where": {"field": "value.tier", "eq": 5}}},
        "destinations": [
            {"name": "risk", "segment": "churn_risk", "type": "csv", "path": "o/r.csv",
             "identifiers": ["email"]},
            {"name": "top", "segment": "top_value", "type": "csv", "path": "o/t.csv",
             "identifiers": ["email"]}]})


def reference(rows):
    """The same contacts straight through sync/clv.py."""
    first = np.array([r[2] for r in rows], dtype="datetime64[D]")
    last = np.array([r[3] for r in rows], dtype="datetime64[D]")
    return clv.evaluate(first, last, np.array([float(r[4]) for r in rows]),
                        np.array([float(r[5]) for r in rows]), NOW, 90.0)


def test_segments_on_clv_fields_and_the_fit_in_segments_json(cli, tmp_path):
    rows = contacts()
    m = mapping(tmp_path, rows)
    plan = cli.json("plan", "-c", m, "--as-of", AS_OF)
    ref = reference(rows)
    assert ref.fit.purchases_fitted and ref.fit.spend_fitted
    assert plan["segments"]["churn_risk"]["matched"] == int((ref.p_alive < 0.3).sum())
    assert plan["segments"]["top_value"]["matched"] == int((ref.tier == 5).sum())
    assert 0 < plan["segments"]["churn_risk"]["matched"] < len(rows)
    seg = cli.json("segments", "-c", m, "--as-of", AS_OF)
    fit = seg["scores"]["value"]
    assert set(fit) >= {"r", "alpha", "a", "b", "p", "q", "gamma", "n", "log_likelihood"}
    assert fit["n"] == len(rows)
    for k in ("r", "alpha", "a", "b", "p", "q", "gamma"):
        assert abs(fit[k] - getattr(ref.fit, k)) <= 1e-6 * abs(fit[k]), k
    text = cli("segments", "-c", m, "--as-of", AS_OF).stdout
    assert "score value (clv" in text and "alpha=" in text


def test_explain_shows_the_clv_fields(cli, tmp_path):
    rows = contacts()
    m = mapping(tmp_path, rows)
    ref = reference(rows)
    i = int(np.nanargmin(ref.p_alive))
    data = cli.json("explain", rows[i][0], "-c", m, "--as-of", AS_OF, "--pull")
    cond = data["segments"]["churn_risk"]["where"]
    assert cond["holds"] is True
    assert abs(float(cond["value"]) - ref.p_alive[i]) < 1e-9
    assert abs(data["scores"]["value.purchases"] - ref.purchases[i]) < 1e-9
    assert data["scores"]["value.tier"] == ref.tier[i]


def test_too_small_population_warns_and_leaves_fields_unknown(cli, tmp_path):
    rows = contacts(60)
    m = mapping(tmp_path, rows)
    plan = cli.json("plan", "-c", m, "--as-of", AS_OF)
    assert plan["segments"]["churn_risk"]["matched"] == 0
    assert any("score value: purchases model not fitted: population too small (60" in w
               for w in plan["warnings"])
    seg = cli.json("segments", "-c", m, "--as-of", AS_OF)
    assert seg["scores"]["value"]["r"] is None and seg["scores"]["value"]["n"] == 60


def test_inconsistent_inputs_are_counted(cli, tmp_path):
    rows = contacts()
    rows[0][4] = "0"                       # no purchase
    rows[1][3] = "2020-01-01"              # last before first
    rows[1][2] = "2021-01-01"
    rows[2][3] = "2027-01-01"              # after now
    rows[3][5] = ""                        # revenue unknown: value unknown only
    m = mapping(tmp_path, rows)
    plan = cli.json("plan", "-c", m, "--as-of", AS_OF)
    assert any("score value: 3 contacts with inconsistent purchase fields" in w
               for w in plan["warnings"])
    res = cli.json("explain", rows[3][0], "-c", m, "--as-of", AS_OF)
    assert res["scores"]["value.value"] is None and res["scores"]["value.p_alive"] is not None


def test_validate_names_bad_clv_fields(cli, tmp_path):
    rows = contacts(20)
    m = mapping(tmp_path, rows, score={
        "type": "clv", "first_purchase": "first_ordr", "last_purchase": "orders",
        "purchases": "first_order", "revenue": "revenue", "horizon": "3 months"})
    res = cli("validate", "-c", m)
    assert res.exit_code == 2
    err = res.stderr
    line = next(i for i, ln in enumerate(m.read_text().splitlines(), 1) if "3 months" in ln)
    assert f"m.yaml:{line}: scores.value.horizon:" in err and "say days" in err
    m = mapping(tmp_path, rows, score={
        "type": "clv", "first_purchase": "first_ordr", "last_purchase": "orders",
        "purchases": "first_order", "revenue": "revenue", "horizon": "90d", "discount": 0.1})
    err = cli("validate", "-c", m).stderr
    assert "unknown key 'discount'" in err
    del_key = yaml.safe_load(m.read_text())
    del del_key["scores"]["value"]["discount"]
    write_mapping(m, del_key)
    res = cli("validate", "-c", m)
    assert res.exit_code == 2
    err = res.stderr
    lines = m.read_text().splitlines()
    line = next(i for i, ln in enumerate(lines, 1) if "first_ordr" in ln)
    assert f"m.yaml:{line}: scores.value.first_purchase: unknown field 'first_ordr'" in err
    assert "did you mean 'first_order'?" in err
    assert "last_purchase field 'orders' is number, not date or datetime" in err
    assert "purchases field 'first_order' is date, not number" in err
    # a segment on a CLV field that does not exist
    m = mapping(tmp_path, rows, segments={"s": {"where": {"field": "value.p_alive2", "lt": 1}}})
    err = cli("validate", "-c", m).stderr
    assert "value.p_alive2" in err and "value.p_alive" in err


def test_scores_line_up_with_their_contacts_over_many_row_groups(tmp_path):
    """The scores join the snapshot by position: over a table of several row groups, in no
    key order, read with DuckDB's threads, each key gets its own contact's scores."""
    from datetime import datetime
    from types import SimpleNamespace

    import duckdb

    from crmsync.sync.mapping.model import ClvScore
    from crmsync.sync.segments.engine import Evaluation

    n = 300_000
    rng = np.random.default_rng(8)
    lam, drop = rng.gamma(0.25, 1 / 30, n), rng.beta(0.8, 2.4, n)
    T = rng.uniform(1, 730, n)
    arrivals = rng.poisson(lam * T)
    x = np.minimum(arrivals, rng.geometric(drop)).astype(float)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    now = 20_000.0
    first, last = now - T, now - T + t_x
    revenue = rng.gamma(6.0 * (x + 1), 2.0)
    ref = clv.evaluate(first, last, x + 1, revenue, now, 90.0)
    epoch = np.datetime64("1970-01-01T00:00:00", "us")
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    con.execute("SET threads = 4")
    con.register("gen", {"_key": np.arange(n), "first": epoch + (first * 86_400e6).astype(
        "timedelta64[us]"), "last": epoch + (last * 86_400e6).astype("timedelta64[us]"),
        "orders": x + 1, "revenue": revenue})
    con.execute("SET preserve_insertion_order = false")      # as the store writes snapshots
    con.execute("CREATE TABLE snap AS SELECT * FROM gen ORDER BY hash(_key)")
    con.execute("RESET preserve_insertion_order")
    score = ClvScore(type="clv", first_purchase="first", last_purchase="last",
                     purchases="orders", revenue="revenue")
    ev = SimpleNamespace(con=con, now=datetime(1970, 1, 1) + np.timedelta64(
        int(now * 86_400e6), "us").item(), clv_fits={}, warnings=[])
    view = Evaluation._clv(ev, "crm", "value", score, "snap")
    got = con.execute(f'SELECT _key, "value.p_alive", "value.value", "value.tier" '
                      f'FROM {view}').fetchnumpy()
    k = got["_key"]
    assert not np.array_equal(k, np.arange(n))                # not in key order
    # (the times went through microseconds and the warm start drew another sample: the fit
    # agrees to ~1e-8; a contact with another's scores would be off by far more)
    np.testing.assert_allclose(got["value.p_alive"], ref.p_alive[k], rtol=1e-6)
    np.testing.assert_allclose(got["value.value"], ref.value[k], rtol=1e-6)
    assert (got["value.tier"] != ref.tier[k]).sum() <= 5      # only ties at a cut-off
