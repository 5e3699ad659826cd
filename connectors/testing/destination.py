"""The battery every destination must pass, run through the real `crmsync run`.

A platform's test module (a third party's too) defines a ``Harness`` (its fake, how to read
the remote membership, how to inject faults) and one line per check::

    from crmsync.connectors.testing import DESTINATION_CHECKS, Cli
    @pytest.mark.parametrize("check", DESTINATION_CHECKS)
    def test_conformance(check, tmp_path): check(MyHarness(...), Cli(), tmp_path)

``Cli`` runs ``crmsync`` in a subprocess; any object with the same ``json`` method will do
(crmsync's own tests run it in-process).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Protocol

from .files import write_csv, write_mapping


class Harness(Protocol):
    batch_limit: int  # the platform's largest batch

    def destination(self) -> dict[str, Any]: ...  # type, connection, options
    def connections(self) -> dict[str, Any]: ...
    def env(self) -> dict[str, str]: ...
    def keys(self, n: int) -> list[str]: ...  # contact keys the platform knows
    def remote(self) -> set[str]: ...  # keys the platform holds now
    def write_count(self) -> int: ...  # write calls the platform has received so far
    def fail_next_writes(self, n: int) -> None: ...  # transient failures
    def heal(self) -> None: ...  # stop injecting


def email_of(key: str) -> str:
    """The email the battery's mapping gives each contact."""
    return f"{key}@x.example"


class HashedKeys:
    """For harnesses of destinations that receive SHA-256 hashed emails: ``keys`` remembers
    each key's hash so that ``key_of`` maps what the platform holds back to contact keys."""

    def __init__(self) -> None:
        self._by_hash: dict[str, str] = {}

    def keys(self, n: int) -> list[str]:
        keys = [f"k{i:03d}" for i in range(n)]
        for k in keys:
            self._by_hash[hashlib.sha256(email_of(k).encode()).hexdigest()] = k
        return keys

    def key_of(self, hashed: str) -> str:
        return self._by_hash[hashed]


def _setup(h: Harness, tmp, members: set[str], keys: list[str], **dest: Any):
    write_csv(tmp / "contacts.csv", ["id", "email", "stage"],
              [[k, email_of(k), "in" if k in members else "out"] for k in keys])
    return write_mapping(tmp / "m.yaml", {
        "version": 1,
        # a harness may name the store (e.g. the shared Postgres one)
        **({"store": h.store_url} if getattr(h, "store_url", None) else {}),
        "connections": h.connections(),
        "sources": {"crm": {"type": "csv", "path": "contacts.csv", "key": "id",
                            "identity": {"email": "email"}}},
        "segments": {"s": {"where": {"field": "stage", "eq": "in"}}},
        "destinations": [{"name": "d", "segment": "s", "identifiers": ["email"],
                          **h.destination(), **dest}],
    })


def _run(cli, m, h: Harness) -> dict[str, Any]:
    before = h.write_count()
    run = cli.json("run", "-c", m, env=h.env())
    run["writes"] = h.write_count() - before
    return run


def first_run_sends_all_in_fewest_batches(h: Harness, cli, tmp) -> None:
    keys = h.keys(25)
    want = set(keys[:21])
    m = _setup(h, tmp, want, keys, batch_size=10)
    run = _run(cli, m, h)
    assert run["exit_code"] == 0, run
    assert h.remote() == want
    assert run["writes"] == math.ceil(21 / min(10, h.batch_limit))


def rerun_without_changes_makes_no_call(h: Harness, cli, tmp) -> None:
    keys = h.keys(10)
    m = _setup(h, tmp, set(keys[:6]), keys)
    _run(cli, m, h)
    run = _run(cli, m, h)
    assert run["writes"] == 0  # (it may read the status of the previous upload, once)
    run = _run(cli, m, h)
    assert run["destinations"]["d"]["calls"] == 0 and run["writes"] == 0


def mirror_removes_only_what_left(h: Harness, cli, tmp) -> None:
    keys = h.keys(12)
    m = _setup(h, tmp, set(keys[:8]), keys)
    _run(cli, m, h)
    m = _setup(h, tmp, set(keys[4:10]), keys)
    run = _run(cli, m, h)
    d = run["destinations"]["d"]
    assert (d["adds"], d["removes"]) == (2, 4)
    assert h.remote() == set(keys[4:10])


def add_only_keeps_members(h: Harness, cli, tmp) -> None:
    keys = h.keys(8)
    m = _setup(h, tmp, set(keys[:5]), keys, mode="add_only")
    _run(cli, m, h)
    m = _setup(h, tmp, set(keys[3:8]), keys, mode="add_only")
    run = _run(cli, m, h)
    assert run["destinations"]["d"]["removes"] == 0
    assert h.remote() == set(keys)


def transient_failure_converges_on_rerun(h: Harness, cli, tmp) -> None:
    keys = h.keys(30)
    want = set(keys[:20])
    m = _setup(h, tmp, want, keys, batch_size=5)
    h.fail_next_writes(100)
    run = _run(cli, m, h)
    assert run["exit_code"] == 1 and run["destinations"]["d"]["status"] == "failed"
    h.heal()
    run = _run(cli, m, h)
    assert run["exit_code"] == 0 and h.remote() == want
    run = _run(cli, m, h)
    assert run["destinations"]["d"]["add"] == 0 and run["writes"] == 0


def batches_at_once_land_like_one_by_one(h: Harness, cli, tmp) -> None:
    """``concurrency: 4`` (capped at what the connector allows): the same members, writes
    and figures as one batch at a time; under transient failures, the rerun converges."""
    keys = h.keys(40)
    m = _setup(h, tmp, set(keys[:30]), keys, batch_size=5, concurrency=4)
    run = _run(cli, m, h)
    assert run["exit_code"] == 0, run
    assert h.remote() == set(keys[:30]) and run["destinations"]["d"]["adds"] == 30
    assert run["writes"] == math.ceil(30 / min(5, h.batch_limit))
    m = _setup(h, tmp, set(keys[10:]), keys, batch_size=5, concurrency=4)
    h.fail_next_writes(3)
    _run(cli, m, h)
    h.heal()
    run = _run(cli, m, h)
    assert run["exit_code"] == 0 and h.remote() == set(keys[10:]), run
    assert _run(cli, m, h)["writes"] == 0


CHECKS = [first_run_sends_all_in_fewest_batches, rerun_without_changes_makes_no_call,
          mirror_removes_only_what_left, add_only_keeps_members,
          transient_failure_converges_on_rerun, batches_at_once_land_like_one_by_one]
