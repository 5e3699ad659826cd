"""explain, segments, report and logging through the CLI."""

from __future__ import annotations

import json

from conftest import write_csv, write_mapping

HEADER = ["id", "email", "phone", "stage", "revenue", "optout", "consent"]


def _setup(tmp_path):
    write_csv(tmp_path / "c.csv", HEADER, [
        ["1", "Ann@X.example", "+14155550123", "customer", "900", "false", "true"],
        ["2", "bob@x.example", "", " Customer ", "10", "true", "true"],
        ["3", "cy@x.example", "", "lead", "", "false", "false"],
        ["4", "", "", "customer", "50", "false", "true"],
    ])
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id",
                            "schema": {"revenue": "number", "optout": "bool", "consent": "bool"},
                            "identity": {"email": "email", "phone": "phone"}}},
        "segments": {
            "customers": {"where": {"field": "stage", "eq": "customer"}},
            "big": {"where": {"all": [{"segment": "customers"},
                                      {"field": "revenue", "gte": 100}]}},
            "leads": {"where": {"field": "stage", "eq": "lead"}}},
        "groups": {"life": {"segments": ["big", "customers", "leads"]}},
        "suppressions": {"unsub": {"where": {"field": "optout", "eq": True}}},
        "destinations": [
            {"name": "cust", "segment": "customers", "type": "csv", "path": "o/c.csv",
             "identifiers": ["email"], "consent": "consent"},
            {"name": "life", "group": "life", "type": "csv", "path": "o/l.csv",
             "identifiers": ["email", "phone"]}]})


def test_explain_names_conditions_group_suppression_and_identifiers(cli, tmp_path):
    m = _setup(tmp_path)
    cli("run", "-c", m)
    one = cli.json("explain", "1", "-c", m)["segments"]["customers"]
    assert one["matched_where"] and not one["member"]
    assert one["group"] == "exclusive group life: in big first"
    data = cli.json("explain", "2", "-c", m)
    seg = data["segments"]
    assert seg["customers"]["member"] and not seg["big"]["member"]
    assert seg["big"]["where"]["items"][1] == {"condition": "revenue gte 100", "holds": False,
                                                "value": "10.0"}
    assert data["destinations"]["life"]["reasons"] == ["suppressed by unsub"]
    by_email = cli.json("explain", "ann@x.example", "-c", m)
    assert by_email["key"] == "1" and by_email["destinations"]["cust"]["reasons"] == [
        "not a member"]  # customers lost it to big in the exclusive group
    four = cli.json("explain", "4", "-c", m)
    assert four["destinations"]["cust"]["reasons"] == ["no identifier"]
    text = cli("explain", "1", "-c", m).stdout
    assert "✓ in segment customers" in text and "destination life: sent" in text


def test_segments_and_report(cli, tmp_path):
    m = _setup(tmp_path)
    cli("run", "-c", m)
    data = cli.json("segments", "-c", m)
    assert data["segments"]["customers"]["matched"] == 2  # 2 and 4; 1 is in big first
    assert data["segments"]["big"]["matched"] == 1
    # sent: to at least one destination (2 is suppressed, 4 has no identifier)
    assert {s: v["sent"] for s, v in data["segments"].items()} == {
        "customers": 0, "big": 1, "leads": 1}
    assert any("tiny" in f["message"] or "empty" in f["message"] for f in data["findings"])
    text = cli("segments", "-c", m).stdout
    assert "overlap" in text and "[1] customers" in text
    res = cli("report", "-c", m, "-o", tmp_path / "sub" / "r.html")
    assert res.exit_code == 0
    html = (tmp_path / "sub" / "r.html").read_text()
    assert "<script" not in html and "Segment sizes over time" in html and "cust" in html


def test_json_logs_carry_no_email_or_phone(tmp_path):
    import subprocess
    import sys

    m = _setup(tmp_path)
    p = subprocess.run([sys.executable, "-m", "crmsync.cli", "run", "-c", str(m),
                        "--log-format", "json"], capture_output=True, text=True, check=False)
    lines = [json.loads(x) for x in p.stderr.splitlines() if x.strip()]
    assert lines and all({"ts", "level", "msg"} <= set(x) for x in lines)
    assert "@" not in p.stderr and "4155550123" not in p.stderr
