"""`crmsync run` end to end against the Graph fake: create, incremental add and remove, the
consent and suppression gate, call counts, and no raw PII in logs or history."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import write_csv, write_mapping

pytest.importorskip("facebook_business")

from tests.fakes.meta import FakeGraph, sha  # noqa: E402

HEADER = ["id", "email", "phone", "first", "last", "country", "stage", "optout", "ads_ok"]
ENV = {"META_ACCESS_TOKEN": "EAAe2e-secret"}


def contact(i: int, *, stage="champion", optout="false", ads_ok="true", email=None):
    return [f"k{i:03d}", email or f"User{i}@Example.com", f"(650) 555-{1000 + i:04d}",
            f"Ana{i}", "López", "US", stage, optout, ads_ok]


def expected_row(i: int) -> tuple:
    # normal forms per Meta's hashing table (see tests/test_identity_meta.py for the citations)
    norm = {"EMAIL": f"user{i}@example.com", "PHONE": f"1650555{1000 + i:04d}",
            "FN": f"ana{i}".rstrip("0123456789"), "LN": "lópez", "COUNTRY": "us"}
    return tuple(sorted((k, sha(v)) for k, v in norm.items()))


@pytest.fixture
def fake():
    with FakeGraph(account="act_1234") as f:
        for i in range(100):
            f.expect("EMAIL", [f"user{i}@example.com"])
            f.expect("PHONE", [f"1650555{1000 + i:04d}"])
        f.expect("FN", ["ana"])
        f.expect("LN", ["lópez"])
        f.expect("COUNTRY", ["us"])
        yield f
        assert not f.calls(path=r"/usersreplace$") and not f.calls("DELETE")
        assert f.invalid == []


def setup(tmp_path, fake, rows):
    write_csv(tmp_path / "contacts.csv", HEADER, rows)
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "connections": {"meta": {"type": "meta", "access_token": "${META_ACCESS_TOKEN}",
                                 "ad_account_id": "act_1234", "base_url": fake.url}},
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "schema": {"optout": "bool", "ads_ok": "bool"},
                            "identity": {"email": "email", "phone": "phone",
                                         "first_name": "first", "last_name": "last",
                                         "country": "country", "phone_region": "US"}}},
        "segments": {"champions": {"description": "best", "owner": "revops@x.example",
                                   "where": {"field": "stage", "eq": "champion"}}},
        "suppressions": {"unsub": {"where": {"field": "optout", "eq": True}}},
        "destinations": [{"name": "champions-meta", "segment": "champions",
                          "type": "meta_custom_audience", "connection": "meta",
                          "audience": "Champions (crmsync)", "mode": "mirror",
                          "identifiers": ["email", "phone", "first_name", "last_name",
                                          "country"],
                          "consent": "ads_ok"}],
    })


def sent_hashes(fake: FakeGraph) -> set[str]:
    out: set[str] = set()
    for r in fake.calls("POST", r"/users$"):
        for row in json.loads(r.form()["payload"])["data"]:
            out.update(v for v in row if v)
    return out


def test_consent_suppression_gate_then_incremental_mirror(cli, tmp_path, fake, caplog):
    caplog.set_level(logging.DEBUG)
    rows = [contact(i) for i in range(1, 6)]
    rows += [contact(6, optout="true"),  # suppressed, would otherwise be sent
             contact(7, ads_ok="false"),  # consent not true
             contact(8, ads_ok=""),  # consent unknown
             contact(9, stage="lead")]  # not in the segment
    m = setup(tmp_path, fake, rows)

    first = cli.json("run", "-c", m, env=ENV)
    d = first["destinations"]["champions-meta"]
    assert first["exit_code"] == 0, first
    assert d["adds"] == 5 and d["calls"] == 4  # find, create, one users POST, readback
    aud = fake.by_name("Champions (crmsync)")
    assert aud.members == {expected_row(i) for i in range(1, 6)}
    never = {sha(f"user{i}@example.com") for i in (6, 7, 8, 9)}
    assert not never & sent_hashes(fake), "suppressed / no-consent contacts reached Meta"

    before = len(fake.requests)
    again = cli.json("run", "-c", m, env=ENV)["destinations"]["champions-meta"]
    assert (again["add"], again["remove"], again["calls"]) == (0, 0, 0)
    assert len(fake.requests) == before  # nothing changed: no API call at all
    # plan shows the audience's own reported size, as of the last push, with no call
    planned = cli.json("plan", "-c", m, env=ENV)["destinations"]["champions-meta"]
    assert planned["readback"]["approximate_count_lower_bound"] == 5
    assert len(fake.requests) == before

    theirs = (("EMAIL", sha("someone@else.example")),)
    aud.members.add(theirs)  # added in Ads Manager by someone else
    rows = [r for r in rows if r[0] != "k002"] + [contact(10)]
    write_csv(tmp_path / "contacts.csv", HEADER, rows)
    third = cli.json("run", "-c", m, env=ENV)["destinations"]["champions-meta"]
    assert (third["adds"], third["removes"], third["calls"]) == (1, 1, 3)
    assert aud.members == {expected_row(i) for i in (1, 3, 4, 5, 10)} | {theirs}
    methods = sorted(r.form().get("method", "POST") for r in fake.calls("POST", r"/users$")[-2:])
    assert methods == ["DELETE", "POST"]

    history = cli("history", "-c", m, env=ENV).stdout
    assert "approximate_count_lower_bound" in history
    logs = "\n".join(r.getMessage() for r in caplog.records) + history
    for i in range(1, 11):
        for needle in (f"user{i}@example.com", f"555-{1000 + i:04d}", f"555{1000 + i:04d}"):
            assert needle not in logs.lower()
    assert "EAAe2e-secret" not in logs


def test_invalid_identifiers_are_counted_as_rejects(cli, tmp_path, fake):
    rows = [contact(1), contact(2, email="not-an-email")]
    rows[1][2] = "12"  # no usable phone either
    rows[1][3] = ""  # and a last name without a first name cannot match alone
    m = setup(tmp_path, fake, rows)
    res = cli.json("run", "-c", m, env=ENV)
    d = res["destinations"]["champions-meta"]
    assert d["adds"] == 1 and d["no_identifier"] == 1
    assert fake.by_name("Champions (crmsync)").members == {expected_row(1)}
    h = cli.json("history", "-c", m)[0]["destinations"][0]  # no secret needed
    assert h["no_identifier"] == 1 and h["rejected"] == 0
    [why] = h["reject_reasons"]
    assert why["count"] == 1 and why["reason"].startswith("no_identifier") and why["keys"]


def _email_mapping(tmp_path, fake, n, member, batch_size=None):
    write_csv(tmp_path / "contacts.csv", ["id", "email", "stage"],
              [[f"k{i:05d}", f"u{i}@x.example", "in" if member(i) else "out"] for i in range(n)])
    dest = {"name": "d", "segment": "s", "type": "meta_custom_audience", "connection": "meta",
            "audience": "A", "identifiers": ["email"]}
    if batch_size:
        dest["batch_size"] = batch_size
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "connections": {"meta": {"type": "meta", "access_token": "${META_ACCESS_TOKEN}",
                                 "ad_account_id": "act_1234", "base_url": fake.url}},
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "identity": {"email": "email"}}},
        "segments": {"s": {"where": {"field": "stage", "eq": "in"}}},
        "destinations": [dest],
        "safeguards": {"max_remove_fraction": 1.0},
    })


def _hashes(n, member) -> set[tuple]:
    return {(("EMAIL", sha(f"u{i}@x.example")),) for i in range(n) if member(i)}


@pytest.mark.slow
def test_removing_more_than_10000_members_uses_post_bodies(cli, tmp_path, fake):
    n = 10_500
    fake.known = None
    fake.expect("EMAIL", [f"u{i}@x.example" for i in range(n)])
    m = _email_mapping(tmp_path, fake, n, lambda i: True)
    d = cli.json("run", "-c", m, env=ENV)["destinations"]["d"]
    assert d["adds"] == n and len(fake.calls("POST", r"/users$")) == 2
    m = _email_mapping(tmp_path, fake, n, lambda i: i < 100)
    d = cli.json("run", "-c", m, env=ENV)["destinations"]["d"]
    assert d["removes"] == n - 100 and d["calls"] == 3  # two removal POSTs + readback
    removals = fake.calls("POST", r"/users$")[2:]
    assert [r.form()["method"] for r in removals] == ["DELETE", "DELETE"]
    assert fake.by_name("A").members == _hashes(n, lambda i: i < 100)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_posts", [1, 4])
def test_sigkill_mid_upload_then_rerun_converges(tmp_path, fake, kill_after_posts):
    import os
    import signal
    import subprocess
    import sys
    import time

    n = 1200
    fake.known = None
    fake.expect("EMAIL", [f"u{i}@x.example" for i in range(n)])
    fake.latency = 0.02
    m = _email_mapping(tmp_path, fake, n, lambda i: i % 2 == 0, batch_size=100)
    env = {**os.environ, **ENV}
    cmd = [sys.executable, "-m", "crmsync.cli", "run", "-c", str(m)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    aud = None
    while p.poll() is None and time.monotonic() < deadline:
        aud = aud or fake.by_name("A")
        if aud is not None and len(aud.members) >= 100 * kill_after_posts:
            break
        time.sleep(0.002)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    assert 0 < len(fake.by_name("A").members) < n // 2  # killed mid-upload

    fake.latency = 0

    def member(i: int) -> bool:  # the data changes too: adds and removes on the re-run
        return i % 3 == 0

    m = _email_mapping(tmp_path, fake, n, member, batch_size=100)
    out = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert fake.by_name("A").members == _hashes(n, member)
    before = len(fake.requests)
    out = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0 and len(fake.requests) == before  # third run: nothing to send
    for i in range(0, n, 97):
        assert f"u{i}@x.example".encode() not in out.stderr


def test_removal_below_minimum_size_is_deferred_then_retried(cli, tmp_path, fake):
    fake.known = None
    m = _email_mapping(tmp_path, fake, 10, lambda i: True)
    cli.json("run", "-c", m, env=ENV)
    aud = fake.by_name("A")
    aud.min_size = 9
    m = _email_mapping(tmp_path, fake, 10, lambda i: i < 7)
    res = cli.json("run", "-c", m, env=ENV)
    d = res["destinations"]["d"]
    assert (d["removes"], d["deferred"]) == (0, 3)
    assert len(aud.members) == 10  # nothing removed, nothing lost
    aud.min_size = 0
    d = cli.json("run", "-c", m, env=ENV)["destinations"]["d"]
    assert (d["remove"], d["removes"], d["deferred"]) == (3, 3, 0)  # retried next run
    assert aud.members == _hashes(10, lambda i: i < 7)
