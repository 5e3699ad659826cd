"""`crmsync run` end to end against the Data Manager fake: create, the consent and suppression
gate, incremental add and remove, quota errors, call counts, no raw PII in logs or history,
and a SIGKILL mid-upload followed by a re-run."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import write_csv, write_mapping

pytest.importorskip("google.ads.datamanager_v1")

from crmsync.connectors.google import CustomerMatchDestination  # noqa: E402

from fakes.google import DataManagerFake, quota_error, service_account_file  # noqa: E402

ACCOUNT = "1234567890"
ENV = {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json"}
HEADER = ["id", "email", "phone", "first", "last", "country", "zip", "stage", "optout", "ads_ok"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def contact(i: int, *, stage: str = "champion", optout: str = "false", ads_ok: str = "true",
            email: str | None = None) -> list[str]:
    return [f"k{i:05d}", email or f"First.Last{i}@GMail.com", f"(650) 555-{1000 + i % 9000:04d}",
            f"Ana{i}", "López", "US", "94043", stage, optout, ads_ok]


def expected_member(i: int) -> list[dict]:
    # normal forms per Google's formatting guide (see tests/test_identity_google.py)
    return sorted([{"emailAddress": sha(f"firstlast{i}@gmail.com")},
                   {"phoneNumber": sha(f"+1650555{1000 + i % 9000:04d}")}],
                  key=lambda d: next(iter(d)))


def members(fake: DataManagerFake) -> list[list[dict]]:
    ul = fake.list_named("Champions (crmsync)")
    assert ul is not None
    return sorted((sorted(r, key=lambda d: next(iter(d))) for r in fake.member_rows(ul.id)),
                  key=lambda r: r[0]["emailAddress"])


def want(ids) -> list[list[dict]]:
    return sorted((expected_member(i) for i in ids), key=lambda r: r[0]["emailAddress"])


@pytest.fixture
def fake(tmp_path_factory):
    with DataManagerFake() as f:
        f.add_account(ACCOUNT)
        # real service-account credentials: a throwaway key, tokens from the fake's token_uri
        ENV["GOOGLE_APPLICATION_CREDENTIALS"] = str(service_account_file(f, tmp_path_factory.mktemp("sa")))
        f.expect("emailAddress", [f"firstlast{i}@gmail.com" for i in range(1000)])
        f.expect("phoneNumber", [f"+1650555{1000 + i:04d}" for i in range(1000)])
        yield f
        assert f.invalid == [], "a hash of an un-normalised value reached the fake"


def setup(tmp_path, fake, rows, **dest):
    write_csv(tmp_path / "contacts.csv", HEADER, rows)
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "connections": {"google": {"type": "google_ads",
                                   "credentials_file": "${GOOGLE_APPLICATION_CREDENTIALS}",
                                   "operating_account": ACCOUNT, "base_url": fake.url}},
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "schema": {"optout": "bool", "ads_ok": "bool"},
                            "identity": {"email": "email", "phone": "phone",
                                         "first_name": "first", "last_name": "last",
                                         "country": "country", "zip": "zip",
                                         "phone_region": "US"}}},
        "segments": {"champions": {"description": "best", "owner": "revops@x.example",
                                   "where": {"field": "stage", "eq": "champion"}}},
        "suppressions": {"unsub": {"where": {"field": "optout", "eq": True}}},
        "destinations": [{"name": "champions-google", "segment": "champions",
                          "type": "google_ads_customer_match", "connection": "google",
                          "list": "Champions (crmsync)", "terms_of_service": "accepted",
                          "mode": "mirror", "identifiers": ["email", "phone"],
                          "consent": "ads_ok", **dest}],
    })


def test_gate_then_incremental_mirror_with_minimum_calls(cli, tmp_path, fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.google_users = {sha("firstlast1@gmail.com"), sha("firstlast2@gmail.com")}
    rows = [contact(i) for i in range(1, 6)]
    rows += [contact(6, optout="true"),  # suppressed
             contact(7, ads_ok="false"),  # no consent
             contact(8, ads_ok=""),  # consent unknown
             contact(9, stage="lead")]  # not in the segment
    m = setup(tmp_path, fake, rows)

    first = cli.json("run", "-c", m, env=ENV)
    d = first["destinations"]["champions-google"]
    assert first["exit_code"] == 0, first
    assert d["adds"] == 5 and d["calls"] == 4  # list, create, one ingest, readback
    assert members(fake) == want(range(1, 6))
    sent = {i["emailAddress"] for r in fake.calls("POST", ":ingest$")
            for mbr in r.json()["audienceMembers"] for i in mbr["userData"]["userIdentifiers"]
            if "emailAddress" in i}
    assert not sent & {sha(f"firstlast{i}@gmail.com") for i in (6, 7, 8, 9)}

    # the next run reads the status of the last upload once (one call), then no more
    status = cli.json("run", "-c", m, env=ENV)["destinations"]["champions-google"]
    assert (status["add"], status["remove"], status["calls"]) == (0, 0, 1)
    before = len(fake.requests)
    again = cli.json("run", "-c", m, env=ENV)["destinations"]["champions-google"]
    assert (again["add"], again["remove"], again["calls"]) == (0, 0, 0)
    assert len(fake.requests) == before  # nothing changed: no API call at all
    planned = cli.json("plan", "-c", m, env=ENV)["destinations"]["champions-google"]
    assert {"size", "match_rate"} <= set(planned["readback"])  # as last reported, no call
    assert len(fake.requests) == before

    rows = [r for r in rows if r[0] != "k00002"] + [contact(10)]
    write_csv(tmp_path / "contacts.csv", HEADER, rows)
    third = cli.json("run", "-c", m, env=ENV)["destinations"]["champions-google"]
    assert (third["adds"], third["removes"], third["calls"]) == (1, 1, 3)  # ingest, remove, get
    assert members(fake) == want([1, 3, 4, 5, 10])

    history = cli("history", "-c", m, env=ENV).stdout
    assert "match_rate" in history and "request_ids" in history
    logs = "\n".join(r.getMessage() for r in caplog.records) + history
    for i in range(1, 11):
        for needle in (f"firstlast{i}@gmail.com", f"first.last{i}@gmail.com",
                       f"555-{1000 + i:04d}", f"555{1000 + i:04d}"):
            assert needle not in logs.lower()


def test_quota_429_is_retried_and_converges(cli, tmp_path, fake):
    m = setup(tmp_path, fake, [contact(i) for i in range(1, 4)])
    q = quota_error("IngestionMutateRequestsPerMinutePerProject", retry_after=0)
    fake.fail_next(2, status=429, body=q.body, headers=q.headers, path=":ingest$")
    res = cli.json("run", "-c", m, env=ENV)
    d = res["destinations"]["champions-google"]
    assert res["exit_code"] == 0, res
    assert d["adds"] == 3 and d["retries"] == 2 and d["calls"] == 6
    assert members(fake) == want(range(1, 4))


def test_terms_not_accepted_fails_the_destination_with_the_fix(cli, tmp_path, fake):
    m = setup(tmp_path, fake, [contact(1)], terms_of_service="not_accepted")
    res = cli.json("run", "-c", m, env=ENV)
    d = res["destinations"]["champions-google"]
    assert res["exit_code"] == 1 and d["status"] == "failed"
    assert "terms_of_service: accepted" in d["message"]
    assert not fake.calls("POST", ":ingest$")


def _run(m, env):
    return subprocess.Popen([sys.executable, "-m", "crmsync.cli", "run", "-c", str(m)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **env})


@pytest.mark.slow
def test_sigkill_mid_upload_then_rerun_converges(tmp_path, fake):
    n = 600
    in_flight = CustomerMatchDestination.max_concurrency  # several ingests at once
    m = setup(tmp_path, fake, [contact(i) for i in range(n)], batch_size=50,
              concurrency=in_flight)
    fake.latency = 0.02  # slow enough to kill mid-upload
    p = _run(m, ENV)
    deadline = time.monotonic() + 60
    while len(fake.calls("POST", ":ingest$")) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    partial = len(fake.calls("POST", ":ingest$"))
    assert 0 < partial < n // 50
    fake.latency = 0
    p = _run(m, ENV)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()[-2000:]
    assert members(fake) == want(range(n))
    assert len(fake.lists) == 1
    # batches acknowledged before the kill are not sent again (at most those in flight,
    # the destination's concurrency, repeat)
    assert len(fake.calls("POST", ":ingest$")) <= n // 50 + in_flight + 1
