"""The report's history (sizes with sent, the migration matrix of each exclusive group), its
view model and its rendering; the browser test is test_report_browser.py."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from crmsync.sync.mapping.loader import load
from crmsync.sync.reports import view as report_view
from crmsync.sync.reports.charts import nice_ticks, time_ticks
from crmsync.sync.reports.html import render
from crmsync.sync.store.database import Store

from conftest import write_csv, write_mapping

HEADER = ["id", "email", "stage"]
WEEK1 = [["1", "a1@x.example", "x"], ["2", "a2@x.example", "y"], ["3", "a3@x.example", "x"],
         ["4", "a4@x.example", "x"], ["5", "", "y"], ["6", "a6@x.example", "y"]]
#: 1 x->y, 2 y->x, 3 x->z (leaves the group), 4 and 5 stay, 6 deleted, 7 new
WEEK2 = [["1", "a1@x.example", "y"], ["2", "a2@x.example", "x"], ["3", "a3@x.example", "z"],
         ["4", "a4@x.example", "x"], ["5", "", "y"], ["7", "a7@x.example", "x"]]


def _mapping(tmp_path, alerts: bool = False):
    m = {"version": 1,
         "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id",
                             "identity": {"email": "email"}}},
         "segments": {"ex": {"where": {"field": "stage", "eq": "x"}},
                      "wy": {"where": {"field": "stage", "eq": "y"}},
                      "any": {"where": {"field": "stage", "in": ["x", "y", "z"]}}},
         "groups": {"g": {"segments": ["ex", "wy"]}},
         "destinations": [
             {"name": "g-out", "group": "g", "type": "csv", "path": "o/g.csv",
              "identifiers": ["email"]},
             {"name": "any-out", "segment": "any", "type": "csv", "path": "o/a.csv",
              "identifiers": ["email"]}]}
    return write_mapping(tmp_path / "m.yaml", m)


def _two_runs(cli, tmp_path):
    m = _mapping(tmp_path)
    write_csv(tmp_path / "c.csv", HEADER, WEEK1)
    assert cli("run", "-c", m, "--as-of", "2026-11-01T00:00:00Z").exit_code == 0
    write_csv(tmp_path / "c.csv", HEADER, WEEK2)
    assert cli("run", "-c", m, "--as-of", "2026-11-08T00:00:00Z").exit_code == 0
    return m


def test_each_run_records_sent_and_the_whole_migration_matrix(cli, tmp_path):
    m = _two_runs(cli, tmp_path)
    store = Store.open(load(m, env={}).store_path, read_only=True)
    try:
        runs = store.recorded_runs()
        assert [r["as_of"] for r in runs] == [datetime(2026, 11, 1), datetime(2026, 11, 8)]
        # the first run had nothing to compare with
        assert store.migration_matrix(runs[0]["run_id"]) == {}
        assert store.migration_matrix(runs[1]["run_id"]) == {"g": {
            ("ex", "wy"): 1, ("wy", "ex"): 1, ("ex", ""): 1, ("ex", "ex"): 1, ("wy", "wy"): 1,
            ("wy", ""): 1, ("", "ex"): 1}}
        hist = {(t, s): (mt, sent) for _, t, s, mt, _, sent in store.size_points()}
        # week 1: wy = 2, 5, 6; 5 has no email, so is not sent
        assert hist[(datetime(2026, 11, 1), "wy")] == (3, 2)
        assert hist[(datetime(2026, 11, 8), "any")] == (6, 5)
        moved, n = store.migrations_since(datetime(2026, 11, 2))
        assert n == 1 and ("ex", "ex") not in moved["g"] and moved["g"][("ex", "wy")] == 1
        assert store.migrations_since(datetime(2026, 11, 9)) == ({}, 0)
        # the transitions alerts read (recorded for every pair of an exclusive group)
        assert store.transitions_since([("ex", "wy"), ("ex", "any")], datetime(2026, 11, 1)) \
            == {("ex", "wy"): (1, 1, datetime(2026, 11, 8)), ("ex", "any"): (0, 0, None)}
    finally:
        store.close()


def test_view_model_and_page(cli, tmp_path):
    m = _two_runs(cli, tmp_path)
    project = load(m, env={})
    store = Store.open(project.store_path)
    try:
        # a platform's read-back (as Google reports it) on the last run of g-out
        store.con.execute("UPDATE run_destinations SET readback = ? WHERE dest = 'g-out' AND "
                          "run_id = (SELECT max(run_id) FROM runs)",
                          ['{"size": 1200, "match_rate": 63}'])
        sizes = {"ex": {"matched": 3, "held_out": 0, "sent": 3},
                 "wy": {"matched": 2, "held_out": 0, "sent": 1},
                 "any": {"matched": 6, "held_out": 0, "sent": 5}}
        view = report_view.build(store, project, sizes, {("ex", "any"): 3}, title="t")
        lift = [{"segment": "ex", "outcome": "stage", "sent": {"n": 400, "value": 0.24},
                 "held_out": {"n": 90, "value": 0.08},
                 "lift": {"absolute": 0.16, "relative": 2.0, "ci_low": 0.09, "ci_high": 0.23,
                          "p_value": 0.0004}},
                {"segment": "wy", "outcome": "stage", "too_few": True,
                 "sent": {"n": 12}, "held_out": {"n": 3}}]
        clv = {"value": {"r": 0.243, "alpha": 30.9, "a": 0.793, "b": 2.426, "p": 6.25,
                         "q": 3.74, "gamma": 15.44, "n": 2357, "log_likelihood": -9582.4}}
        with_value = report_view.build(store, project, sizes, {}, title="t", clv=clv,
                                       lift=lift)
    finally:
        store.close()
    assert view.as_of == datetime(2026, 11, 8) and view.since == datetime(2026, 11, 1)
    g = view.groups[0]
    assert g.last.counts[("ex", "wy")] == 1 and g.window.counts == {
        k: 1 for k in [("ex", "wy"), ("wy", "ex"), ("ex", ""), ("wy", ""), ("", "ex")]}
    dest = {d.name: d for d in view.destinations}
    # week 1: all but 5 (no email); week 2: 7 added, 3 and 6 removed (a csv file holds
    # the group's members, not their segment: 1 and 2 stay as they are)
    assert [(r.figures.adds, r.figures.removes, r.figures.updates)
            for r in dest["g-out"].runs] == [(5, 0, 0), (1, 2, 0)]
    assert dest["g-out"].readback["match_rate"] == 63
    assert dest["any-out"].rejects == [{"reason": "no_identifier: no value for email",
                                        "count": 1, "keys": ["5"]}]
    assert dest["any-out"].last.figures.status == "ok"

    page = render(view)
    assert "size 1,200, match rate 63%" in page
    assert "1 no_identifier: no value for email" in page
    assert "none: no clv score" in page and "none: no lift measured" in page
    assert re.search(r'id="group-g".*\(joined\).*\(left\)', page)
    assert "Nov 1" in page and "Nov 8" in page
    valued = render(with_value)
    assert "+200.0%" in valued and "[0.09, 0.23]" in valued and "0.0004" in valued
    assert "too few to judge" in valued and "15.44" in valued and "2,357" in valued


def test_report_since_option(cli, tmp_path):
    m = _two_runs(cli, tmp_path)
    res = cli("report", "-c", m, "-o", tmp_path / "r.html", "--since", "2026-11-09")
    assert res.exit_code == 0, res.output
    assert "none: no moves recorded in the window" in (tmp_path / "r.html").read_text()
    bad = cli("report", "-c", m, "-o", tmp_path / "r.html", "--since", "next week")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_ticks():
    assert nice_ticks(0, 264) == [0, 100, 200, 300]
    assert nice_ticks(-61, 136, 3)[0] <= -61 and nice_ticks(-61, 136, 3)[-1] >= 136
    d1, d8 = datetime(2026, 11, 1), datetime(2026, 11, 8)
    assert [lab for _, lab in time_ticks(d1, d8, at=[d1, d8])] == ["Nov 1", "Nov 8"]
    many = [d1 + timedelta(hours=6 * i) for i in range(60)]
    labels = [lab for _, lab in time_ticks(many[0], many[-1], at=many)]
    assert 2 <= len(labels) <= 4 and all(re.fullmatch(r"[A-Z][a-z]{2} \d+", x) for x in labels)
    hour = [d1 + timedelta(minutes=10 * i) for i in range(7)]
    assert all(re.fullmatch(r"\d\d:\d\d", lab) for _, lab in time_ticks(hour[0], hour[-1],
                                                                         at=hour))
