"""`crmsync lift` through the CLI: the groups as of the run that sent or held them out, the
outcome from the stored snapshot, exit 2 for what cannot be measured, dry runs record
nothing. The expected groups are computed here from the data and SPEC's holdout hash."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from crmsync.sync.reports.lift import mean_lift, share_lift

from conftest import write_csv, write_mapping

HEADER = ["id", "email", "stage", "optout", "converted", "ordered", "spend", "city"]
HOLDOUT = 30


def held(segment: str, key: str, percent: float = HOLDOUT) -> bool:
    h = hashlib.md5(f"{segment}:{key}".encode()).hexdigest()
    return int(h[:8], 16) < percent / 100 * 2**32


def people(n: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        stage = "customer" if rng.random() < 0.6 else "lead"
        email = "" if rng.random() < 0.05 else f"p{i}@x.example"
        rows.append([f"k{i:04d}", email, stage, "true" if rng.random() < 0.05 else "false",
                     rng.choice(["true", "false", ""]),
                     f"2026-10-{rng.integers(1, 29):02d}" if rng.random() < 0.7 else "",
                     f"{rng.gamma(2, 50):.2f}" if rng.random() < 0.8 else "", "Paris"])
    return rows


def setup(tmp_path, rows, holdout=HOLDOUT):
    write_csv(tmp_path / "c.csv", HEADER, rows)
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id",
                            "schema": {"optout": "bool", "converted": "bool", "ordered": "date",
                                       "spend": "number"},
                            "identity": {"email": "email"}}},
        "segments": {"customers": {"where": {"field": "stage", "eq": "customer"},
                                   "holdout": holdout},
                     "leads": {"where": {"field": "stage", "eq": "lead"}}},
        "suppressions": {"unsub": {"where": {"field": "optout", "eq": True}}},
        "destinations": [
            {"name": "out", "segment": "customers", "type": "csv", "path": "o/c.csv",
             "identifiers": ["email"]},
            {"name": "leads", "segment": "leads", "type": "csv", "path": "o/l.csv",
             "identifiers": ["email"]}]})


def groups_of(rows) -> tuple[set[str], set[str]]:
    """(sent, held out) of one run: customers with an email, not opted out."""
    ok = [r[0] for r in rows if r[2] == "customer" and r[1] and r[3] != "true"]
    return ({k for k in ok if not held("customers", k)}, {k for k in ok if held("customers", k)})


def test_lift_groups_stay_as_first_sent_or_held(cli, tmp_path):
    rows = people(600, seed=1)
    m = setup(tmp_path, rows)
    assert cli("run", "-c", m, "--as-of", "2026-11-01T00:00:00Z").exit_code == 0
    sent1, held1 = groups_of(rows)
    # the next export: a third of the customers became leads, some leads customers, and
    # the outcome changed; who was sent or held out stays so
    rng = np.random.default_rng(2)
    later = [list(r) for r in rows]
    for r in later:
        if r[2] == "customer" and rng.random() < 0.33:
            r[2] = "lead"
        elif r[2] == "lead" and rng.random() < 0.2:
            r[2] = "customer"
        r[4] = "true" if rng.random() < (0.5 if not held("customers", r[0]) else 0.3) else "false"
    write_csv(tmp_path / "c.csv", HEADER, later)
    # a dry run sends nothing and records nobody
    assert cli("run", "-c", m, "--dry-run", "--as-of", "2026-11-02T00:00:00Z").exit_code == 0
    first = cli.json("lift", "customers", "--outcome", "converted", "-c", m)
    assert (first["sent"]["n"], first["held_out"]["n"]) == (len(sent1), len(held1))
    assert cli("run", "-c", m, "--as-of", "2026-11-02T00:00:00Z").exit_code == 0
    sent2, held2 = groups_of(later)
    sent, held_out = sent1 | sent2, held1 | held2
    assert not sent & held_out
    got = cli.json("lift", "customers", "--outcome", "converted", "-c", m)
    assert got["segment"] == "customers" and got["outcome"] == "converted"
    assert (got["sent"]["n"], got["held_out"]["n"]) == (len(sent), len(held_out))
    assert len(held_out) >= 30 and len(sent - sent2) > 0      # some left, still counted
    conv = {r[0]: r[4] == "true" for r in later}              # unknown ("") is not true
    want = share_lift(np.array([conv[k] for k in sorted(sent)]),
                      np.array([conv[k] for k in sorted(held_out)])).as_dict("customers",
                                                                             "converted")
    assert got == want
    assert got["lift"]["absolute"] > 0 and got["lift"]["p_value"] < 0.05
    text = cli("lift", "customers", "--outcome", "converted", "-c", m).stdout
    assert f"sent:     {len(sent)} contacts" in text and "95% CI" in text

    # a number: the mean over known values, with their count
    spend = {r[0]: float(r[6]) if r[6] else np.nan for r in later}
    got = cli.json("lift", "customers", "--outcome", "spend", "-c", m)
    want = mean_lift(np.array([spend[k] for k in sorted(sent)]),
                     np.array([spend[k] for k in sorted(held_out)]))
    assert got["sent"]["known"] == want.sent.known < len(sent)
    assert got["lift"]["absolute"] == want.absolute and got["lift"]["p_value"] == want.p_value

    # a date: the share after --since, which it needs
    res = cli("lift", "customers", "--outcome", "ordered", "-c", m)
    assert res.exit_code == 2 and "--since" in res.stderr
    got = cli.json("lift", "customers", "--outcome", "ordered", "--since", "2026-10-15", "-c", m)
    after = {r[0]: bool(r[5]) and r[5] > "2026-10-15" for r in later}
    assert got["sent"]["value"] == sum(after[k] for k in sent) / len(sent)


def test_lift_refuses_what_it_cannot_measure(cli, tmp_path):
    m = setup(tmp_path, people(100, seed=3))
    assert cli("run", "-c", m).exit_code == 0
    res = cli("lift", "custmers", "--outcome", "converted", "-c", m)
    assert res.exit_code == 2 and "did you mean 'customers'?" in res.stderr
    res = cli("lift", "customers", "--outcome", "convrted", "-c", m)
    assert res.exit_code == 2 and "did you mean 'converted'?" in res.stderr
    res = cli("lift", "customers", "--outcome", "city", "-c", m)
    assert res.exit_code == 2 and "is string" in res.stderr
    res = cli("lift", "leads", "--outcome", "converted", "-c", m)
    assert res.exit_code == 2 and "has no holdout" in res.stderr
    res = cli("lift", "customers", "--outcome", "converted", "--since", "2026-10-01", "-c", m)
    assert res.exit_code == 2 and "applies to a date" in res.stderr
    res = cli("lift", "customers", "--outcome", "ordered", "--since", "soon", "-c", m)
    assert res.exit_code == 2 and "cannot read 'soon'" in res.stderr


def test_too_few_to_judge(cli, tmp_path):
    m = setup(tmp_path, people(100, seed=4))
    assert cli("run", "-c", m).exit_code == 0
    res = cli("lift", "customers", "--outcome", "converted", "-c", m, "--json")
    assert res.exit_code == 0
    got = json.loads(res.stdout)
    assert got["too_few"] is True and "lift" not in got and got["held_out"]["n"] < 30
    assert "too few to judge" in cli("lift", "customers", "--outcome", "converted",
                                     "-c", m).stdout
