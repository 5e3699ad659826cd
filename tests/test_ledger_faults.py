"""The ledger under faults, pinned one by one through the real ``crmsync run`` against the
fakes: a throttled retry keeps who was already there, a refused batch leaves the ledger as it
was, transient row failures are retried and never rejected; the lock names its holder and a
killed run's lock is taken over; history marks every killed run interrupted, with what it did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from conftest import write_csv, write_mapping

KILLPOINT = Path(__file__).with_name("killpoint.py")
LIST = "Ledger (crmsync)"


def _mapping(tmp: Path, conn: dict, dest: dict, rows: list[tuple[str, bool]]) -> Path:
    write_csv(tmp / "contacts.csv", ["id", "email", "stage"],
              [[k, f"{k}@x.example", "in" if member else "out"] for k, member in rows])
    return write_mapping(tmp / "m.yaml", {
        "version": 1, "connections": conn,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "identity": {"email": "email"}}},
        "segments": {"s": {"where": {"field": "stage", "eq": "in"}}},
        "destinations": [{"name": "d", "segment": "s", "identifiers": ["email"],
                          "batch_size": 5, **dest}],
    })


def _ledger(tmp: Path) -> dict[str, str]:
    """The ledger's rows of destination d (each key once: its writes keep it so)."""
    con = duckdb.connect(str(tmp / ".crmsync/state.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT key, state FROM ledger WHERE dest = 'd'").fetchall()
        assert len(rows) == len({k for k, _ in rows}), "a key twice in the ledger"
        return dict(rows)
    finally:
        con.close()


# ---------------------------------------------------------------- HubSpot lists

hubspot = pytest.importorskip("hubspot")
from fakes.hubspot import FakeHubSpot, _error  # noqa: E402


@pytest.fixture
def hs():
    with FakeHubSpot(token="pat-1", rate_limit=1000) as fake:
        yield fake


def _hs_conn(fake):
    return {"hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}", "base_url": fake.url,
                        "rate_limit": 1000, "backoff": 0.01}}


def _hs_list(fake, members=()):
    fake.lists["1"] = {"listId": "1", "name": LIST, "objectTypeId": "0-1",
                       "processingType": "MANUAL",
                       "members": dict.fromkeys(members, "2026-01-01T00:00:00.000Z")}
    fake._next_list = 2


THROTTLED = {"status": "error", "message": "You have reached your secondly limit.",
             "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}
ADD_REMOVE = r"/memberships/add-and-remove$"


@pytest.mark.parametrize("fault, kept", [("429", True), ("503", False), ("drop", False)])
def test_throttled_retry_keeps_who_was_already_there(hs, cli, tmp_path, fault, kept):
    """The first add batch is answered 429 (not applied: its retry's "already a member" is
    believed), or 503 / a dropped connection (may have been applied: README, the member
    counts as crmsync's own). Then the member leaves the segment."""
    keys = [hs.add_contact({"email": f"c{i}@x.example"}) for i in range(8)]
    other = keys[1]
    _hs_list(hs, [other])
    conn, dest = _hs_conn(hs), {"type": "hubspot_list", "connection": "hubspot", "list": LIST}
    env = {"HUBSPOT_TOKEN": "pat-1"}
    fail = {"429": dict(status=429, body=THROTTLED, headers={"Retry-After": "0"}),
            "503": dict(status=503, body="Service Unavailable"),
            "drop": dict(drop=True)}[fault]
    hs.fail_next(1, path=ADD_REMOVE, **fail)
    m = _mapping(tmp_path, conn, dest, [(k, True) for k in keys])
    run = cli.json("run", "-c", m, env=env)
    assert run["exit_code"] == 0 and run["destinations"]["d"]["retries"] == 1, run
    assert _ledger(tmp_path)[other] == ("preexisting" if kept else "member")
    m = _mapping(tmp_path, conn, dest, [(k, k != other) for k in keys])
    cli.json("run", "-c", m, env=env)
    assert (other in hs.members(LIST)) is kept
    assert hs.members(LIST) - {other} == set(keys) - {other}


@pytest.mark.parametrize("refusal", ["expired", "400"])
def test_refused_batch_leaves_the_ledger_as_it_was(hs, cli, tmp_path, refusal):
    """The third batch is refused before it was applied (an expired token; a whole-request
    4xx): its write-ahead marks go back, so when someone else adds one of its contacts
    meanwhile, the next run (token fixed) learns it was already there and keeps it."""
    keys = [hs.add_contact({"email": f"c{i}@x.example"}) for i in range(20)]
    _hs_list(hs)
    conn, dest = _hs_conn(hs), {"type": "hubspot_list", "connection": "hubspot", "list": LIST}
    body = (_error(401, "The OAuth token used to make this call expired.",
                   "EXPIRED_AUTHENTICATION") if refusal == "expired" else
            _error(400, "Invalid request", "VALIDATION_ERROR")).body
    hs.fail_next(1, path=ADD_REMOVE, skip=2, status=401 if refusal == "expired" else 400,
                 body=body)
    m = _mapping(tmp_path, conn, dest, [(k, True) for k in keys])
    res = cli("run", "-c", m, env={"HUBSPOT_TOKEN": "pat-1"})
    assert res.exit_code == 1
    if refusal == "expired":
        assert "HUBSPOT_TOKEN" in res.stderr + res.stdout
    ledger = _ledger(tmp_path)
    batches = sorted(keys)
    assert set(ledger) == set(batches[:10]), ledger  # two batches checkpointed, no marks
    assert set(ledger.values()) == {"member"}
    hist = json.loads(cli("history", "-c", m, "--json").stdout)[0]["destinations"][0]
    assert (hist["status"], hist["adds"]) == ("failed", 10)  # what it did before the stop
    third = batches[10:15]
    hs.lists["1"]["members"][third[0]] = "2026-01-02T00:00:00.000Z"  # someone else adds it
    hs.tokens.add("pat-2")
    run = cli.json("run", "-c", m, env={"HUBSPOT_TOKEN": "pat-2"})
    assert run["exit_code"] == 0 and hs.members(LIST) == set(keys)
    assert _ledger(tmp_path)[third[0]] == "preexisting"
    m = _mapping(tmp_path, conn, dest, [(k, k != third[0]) for k in keys])
    cli.json("run", "-c", m, env={"HUBSPOT_TOKEN": "pat-2"})
    assert third[0] in hs.members(LIST)  # someone else's member: never removed


def test_concurrent_batches_refused_midway_settle_what_landed(hs, cli, tmp_path):
    """Batches written several at once (``concurrency: 4``): the third request is refused
    before it was applied while others are in flight. Each batch in flight is settled by
    its own answer (the applied ones checkpointed, the refused one's marks rolled back), no
    batch is sent after the stop, and the next run sends exactly what did not land."""
    keys = [hs.add_contact({"email": f"c{i}@x.example"}) for i in range(40)]
    _hs_list(hs)
    hs.latency = 0.05  # answers take a while: batches overlap
    conn = _hs_conn(hs)
    dest = {"type": "hubspot_list", "connection": "hubspot", "list": LIST, "concurrency": 4}
    hs.fail_next(1, path=ADD_REMOVE, skip=2, status=400,
                 body=_error(400, "Invalid request", "VALIDATION_ERROR").body)
    m = _mapping(tmp_path, conn, dest, [(k, True) for k in keys])
    assert cli("run", "-c", m, env={"HUBSPOT_TOKEN": "pat-1"}).exit_code == 1
    assert hs.max_in_flight >= 2  # they did overlap
    first = len(hs.calls("PUT", ADD_REMOVE))
    assert first < 8  # the stop sent nothing new
    landed = hs.members(LIST)
    assert 10 <= len(landed) <= 30 and len(landed) % 5 == 0
    ledger = _ledger(tmp_path)
    assert set(ledger) == landed and set(ledger.values()) == {"member"}  # no marks left
    hist = json.loads(cli("history", "-c", m, "--json").stdout)[0]["destinations"][0]
    assert (hist["status"], hist["adds"]) == ("failed", len(landed))
    run = cli.json("run", "-c", m, env={"HUBSPOT_TOKEN": "pat-1"})
    assert run["exit_code"] == 0 and hs.members(LIST) == set(keys)
    assert len(hs.calls("PUT", ADD_REMOVE)) - first == (40 - len(landed)) // 5


def test_meta_expired_token_rolls_back_the_batch(cli, tmp_path):
    pytest.importorskip("facebook_business")
    from fakes.meta import FakeGraph, graph_error

    with FakeGraph(account="act_1234") as fake:
        conn = {"meta": {"type": "meta", "access_token": "${META_TOKEN}",
                         "ad_account_id": "act_1234", "base_url": fake.url}}
        dest = {"type": "meta_custom_audience", "connection": "meta", "audience": LIST}
        keys = [f"k{i:02d}" for i in range(12)]
        e = graph_error(190, "Error validating access token: Session has expired", 463)
        fake.fail_next(1, path=r"/users$", skip=1, status=e.status, body=e.body)
        m = _mapping(tmp_path, conn, dest, [(k, True) for k in keys])
        res = cli("run", "-c", m, env={"META_TOKEN": "EAA1"})
        assert res.exit_code == 1 and "META_TOKEN" in res.stderr + res.stdout
        assert set(_ledger(tmp_path).values()) == {"member"}  # batch 1 only, no marks
        assert len(_ledger(tmp_path)) == 5
        run = cli.json("run", "-c", m, env={"META_TOKEN": "EAA2"})
        assert run["exit_code"] == 0 and run["destinations"]["d"]["adds"] == 7


def test_google_whole_request_refusal_is_no_reject(cli, tmp_path, monkeypatch):
    """A 400 naming no member refuses the request, not its rows: the destination stops,
    the batch's marks go back, and the next run sends the rows (never recorded rejects)."""
    pytest.importorskip("google.ads.datamanager_v1")
    from fakes.google import DataManagerFake, error, service_account_file

    with DataManagerFake() as fake:
        fake.add_account("1234567890")
        conn = {"google": {"type": "google_ads", "credentials_file": "${GOOGLE_CREDS}",
                           "operating_account": "1234567890", "base_url": fake.url}}
        dest = {"type": "google_ads_customer_match", "connection": "google", "list": LIST,
                "terms_of_service": "accepted"}
        keys = [f"k{i:02d}" for i in range(12)]
        e = error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        fake.fail_next(1, path=r":ingest$", skip=1, status=400, body=e.body)
        m = _mapping(tmp_path, conn, dest, [(k, True) for k in keys])
        env = {"GOOGLE_CREDS": str(service_account_file(fake, tmp_path))}
        res = cli("run", "-c", m, env=env)
        assert res.exit_code == 1 and "refused a request" in res.stderr + res.stdout
        assert _ledger(tmp_path) == dict.fromkeys(keys[:5], "member")
        run = cli.json("run", "-c", m, env=env)
        d = run["destinations"]["d"]
        assert run["exit_code"] == 0 and d["adds"] == 7 and d["rejected"] == 0


# ---------------------------------------------------------------- Salesforce rows

simple_salesforce = pytest.importorskip("simple_salesforce")
from crmsync.connectors import salesforce as sfmod  # noqa: E402
from crmsync.connectors.retry import RetryPolicy  # noqa: E402

from fakes.salesforce import FakeSalesforce, tls_pair  # noqa: E402


@pytest.fixture
def sf(tmp_path, monkeypatch):
    monkeypatch.setattr(sfmod, "RETRY", RetryPolicy(attempts=4, initial_wait=0, max_wait=0))
    monkeypatch.setattr(sfmod, "ROW_RETRY_WAIT", 0.0)
    ctx, ca = tls_pair(tmp_path)
    with FakeSalesforce(tls=ctx) as fake:
        fake.ca = ca
        yield fake


def _resent(fake, keys: set[str]) -> int:
    """Collection writes that carried exactly ``keys`` (the rows sent once more)."""
    n = 0
    for r in fake.calls(path=r"/composite/sobjects/?$"):
        if r.method in ("POST", "PATCH"):
            recs = r.json()["records"]
            sent = {x.get("ContactId") or x.get("id") for x in recs}
        elif r.method == "DELETE":
            ids = (r.arg("ids") or "").split(",")
            members = fake.records["CampaignMember"]
            sent = {members[i]["ContactId"] if i in members else i for i in ids}
        else:
            continue
        n += sent == keys
    return n


def _sf_conn(fake):
    return {"sf": {"type": "salesforce", "base_url": fake.url, "username": "${SF_USER}",
                   "password": "${SF_PASSWORD}", "security_token": "${SF_TOKEN}",
                   "ca_file": str(fake.ca), "timeout": 2}}


SF_ENV = {"SF_USER": "sync@acme.example", "SF_PASSWORD": "pw", "SF_TOKEN": "tok"}


@pytest.mark.parametrize("kind", ["salesforce_campaign", "salesforce_field"])
def test_transient_row_failures_are_retried_not_rejected(sf, cli, tmp_path, kind):
    keys = [sf.insert("Contact", LastName=f"L{i}") for i in range(10)]
    dest = ({"type": kind, "connection": "sf", "campaign": LIST} if kind.endswith("campaign")
            else {"type": kind, "connection": "sf", "field": "Segment__c"})

    def remote():
        if kind.endswith("campaign"):
            return sf.members(LIST)
        return {r["Id"] for r in sf.live("Contact") if r["Segment__c"]}

    once, twice = keys[2], keys[7]
    sf.fail_rows([once], "UNABLE_TO_LOCK_ROW", times=1)  # goes through on the second try
    sf.fail_rows([twice], "UNABLE_TO_LOCK_ROW", times=2)  # still locked: next run
    m = _mapping(tmp_path, _sf_conn(sf), dest, [(k, True) for k in keys])
    run = cli.json("run", "-c", m, env=SF_ENV)
    d = run["destinations"]["d"]
    assert run["exit_code"] == 0 and d["rejected"] == 0 and d["deferred"] == 1, run
    assert _resent(sf, {once}) == 1 and _resent(sf, {twice}) == 1  # once more, in the run
    assert remote() == set(keys) - {twice}
    assert twice not in _ledger(tmp_path)  # as it was: never sent, not a reject
    hist = json.loads(cli("history", "-c", m, "--json").stdout)[0]["destinations"][0]
    assert hist["reject_reasons"][0]["reason"].startswith("deferred: UNABLE_TO_LOCK_ROW")
    run = cli.json("run", "-c", m, env=SF_ENV)
    assert run["destinations"]["d"]["adds"] == 1 and remote() == set(keys)
    # a removal whose row is locked twice stays a member, and goes on the next run
    sf.fail_rows([keys[0]], "UNABLE_TO_LOCK_ROW", times=2)
    m = _mapping(tmp_path, _sf_conn(sf), dest, [(k, k != keys[0]) for k in keys])
    run = cli.json("run", "-c", m, env=SF_ENV)
    assert run["destinations"]["d"]["deferred"] == 1 and keys[0] in remote()
    run = cli.json("run", "-c", m, env=SF_ENV)
    assert run["destinations"]["d"]["removes"] == 1 and keys[0] not in remote()


def test_permanent_row_errors_stay_rejects(sf, cli, tmp_path):
    keys = [sf.insert("Contact", LastName=f"L{i}") for i in range(4)]
    sf.fail_rows([keys[1]], "FIELD_CUSTOM_VALIDATION_EXCEPTION", times=5)
    dest = {"type": "salesforce_campaign", "connection": "sf", "campaign": LIST}
    m = _mapping(tmp_path, _sf_conn(sf), dest, [(k, True) for k in keys])
    run = cli.json("run", "-c", m, env=SF_ENV)
    assert run["exit_code"] == 1 and run["destinations"]["d"]["rejected"] == 1
    assert _resent(sf, {keys[1]}) == 0 and _ledger(tmp_path)[keys[1]] == "rejected"
    run = cli.json("run", "-c", m, env=SF_ENV)
    assert run["destinations"]["d"]["adds"] == 0  # same fingerprint: not sent again


def test_salesforce_concurrency_limit_keeps_who_was_already_there(sf, cli, tmp_path):
    keys = [sf.insert("Contact", LastName=f"L{i}") for i in range(6)]
    camp = sf.insert("Campaign", Name=LIST, IsActive=True)
    sf.insert("CampaignMember", CampaignId=camp, ContactId=keys[0])
    sf.fail_next(1, status=403, path=r"/composite/sobjects/?$", headers={"Retry-After": "0"},
                 body=[{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                        "message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded."}])
    dest = {"type": "salesforce_campaign", "connection": "sf", "campaign": LIST}
    m = _mapping(tmp_path, _sf_conn(sf), dest, [(k, True) for k in keys])
    run = cli.json("run", "-c", m, env=SF_ENV)
    assert run["exit_code"] == 0 and run["destinations"]["d"]["retries"] == 1
    assert _ledger(tmp_path)[keys[0]] == "preexisting"


# ---------------------------------------------------------------- lock and history


def _files_mapping(tmp: Path, n: int = 60, batch: int = 5) -> Path:
    write_csv(tmp / "contacts.csv", ["id", "email", "stage"],
              [[f"k{i:03d}", f"u{i}@x.example", "in"] for i in range(n)])
    return write_mapping(tmp / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "identity": {"email": "email"}}},
        "segments": {"s": {"where": {"field": "stage", "eq": "in"}}},
        "destinations": [{"name": "d", "segment": "s", "type": "csv", "path": "out.csv",
                          "identifiers": ["email"], "batch_size": batch}],
    })


def _hold_lock(store: Path) -> subprocess.Popen:
    """Another process that takes the run lock (as a run does) and waits."""
    code = textwrap.dedent(f"""
        import sys, time
        from crmsync.sync.store.database import Store
        s = Store.open({str(store)!r}); s.acquire(); print("held", flush=True)
        time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"held"
    return p


def test_second_run_names_the_lock_holder(cli, tmp_path):
    m = _files_mapping(tmp_path)
    store = tmp_path / ".crmsync/state.duckdb"
    cli("run", "-c", m)
    holder = _hold_lock(store)
    try:
        res = cli("run", "-c", m)
        text = res.stderr + res.stdout
        assert res.exit_code == 4, text
        assert f"{store}.lock" in text and str(store) in text
        assert f"pid {holder.pid}" in text and socket.gethostname() in text
        assert "started 20" in text and "Traceback" not in text
    finally:
        holder.kill()
        holder.wait()
    # killed: the OS released its lock; the next run takes it over and names itself
    assert json.loads((tmp_path / ".crmsync/state.duckdb.lock").read_text())["pid"] == holder.pid
    res = cli("run", "-c", m)
    assert res.exit_code == 0 and "taking over the lock" in res.stderr
    assert (tmp_path / ".crmsync/state.duckdb.lock").read_text() == ""  # released cleanly


def test_lock_taken_in_this_process_names_its_holder(tmp_path):
    """The OS lock itself (a second store handle on the same file) says who holds it."""
    from crmsync.sync.errors import LockHeld
    from crmsync.sync.store.database import Store

    a, b = Store.open(tmp_path / "s.duckdb"), Store.open(tmp_path / "s.duckdb")
    a.acquire()
    assert a.holder()["pid"] == os.getpid() and a.holder()["host"] == socket.gethostname()
    with pytest.raises(LockHeld, match=rf"pid {os.getpid()} on .*, started 20\d\d-"):
        b.acquire()
    a.release()
    assert a.holder() == {}
    b.acquire()  # free again
    b.release()
    a.close()
    b.close()


def _killed_run(m: Path, spec: str) -> None:
    p = subprocess.run([sys.executable, str(KILLPOINT), spec, "--", "run", "-c", str(m)],
                       capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()


def _history(cli, m: Path) -> list[dict]:
    return json.loads(cli("history", "-c", m, "--json").stdout)


def test_killed_after_its_last_batch_is_interrupted_with_its_figures(cli, tmp_path):
    """Killed after every batch was checkpointed, before it recorded its figures: history,
    read before any other run, says interrupted and what it did."""
    m = _files_mapping(tmp_path, n=60, batch=5)
    _killed_run(m, "before:record:1")
    runs = _history(cli, m)
    assert [r["status"] for r in runs] == ["interrupted"]
    d = runs[0]["destinations"][0]
    assert (d["status"], d["adds"]) == ("interrupted", 60)
    run = cli.json("run", "-c", m)
    assert run["destinations"]["d"]["adds"] == 0  # nothing left to send
    assert [r["status"] for r in _history(cli, m)] == ["ok", "interrupted"]


def test_killed_mid_push_keeps_its_checkpointed_adds_in_history(cli, tmp_path):
    m = _files_mapping(tmp_path, n=60, batch=5)
    _killed_run(m, "after:checkpoint:5")
    run = cli.json("run", "-c", m)
    assert run["destinations"]["d"]["adds"] == 35
    runs = _history(cli, m)
    assert [r["status"] for r in runs] == ["ok", "interrupted"]
    assert runs[1]["destinations"][0]["adds"] == 25  # five checkpointed batches of 5
