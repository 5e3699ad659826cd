"""The battery every source must pass, run through the real `crmsync plan` (which pulls).

A platform's test module defines a ``SourceHarness`` (its fake, how to create, change and
delete contacts there) and one line per check::

    @pytest.mark.parametrize("check", SOURCE_CHECKS)
    def test_source_conformance(check, tmp_path): check(MyHarness(...), Cli(), tmp_path)
"""

from __future__ import annotations

from typing import Any, Protocol

from .files import write_mapping


class SourceHarness(Protocol):
    stage_field: str  #: a text field of the contacts the harness can write
    deletes: bool  #: whether ``delete`` removes a contact where the source sees it

    def source(self) -> dict[str, Any]: ...  # the source's section: type/connection, options
    def connections(self) -> dict[str, Any]: ...
    def env(self) -> dict[str, str]: ...
    def put(self, stages: list[str]) -> list[str]: ...  # one contact per stage; their keys
    def set(self, key: str, stage: str) -> None: ...  # change one contact's stage
    def delete(self, key: str) -> None: ...


def _mapping(h: SourceHarness, tmp) -> Any:
    return write_mapping(tmp / "m.yaml", {
        "version": 1,
        "connections": h.connections(),
        "sources": {"crm": h.source()},
        "segments": {"s": {"where": {"field": h.stage_field, "eq": "in"}}},
        "destinations": [{"name": "d", "segment": "s", "type": "csv", "path": "out/d.csv"}],
    })


def _matched(h: SourceHarness, cli, m) -> int:
    plan = cli.json("plan", "-c", m, env=h.env())
    return plan["segments"]["s"]["matched"]


def first_pull_reads_every_contact(h: SourceHarness, cli, tmp) -> None:
    h.put(["in"] * 4 + ["out"] * 3)
    assert _matched(h, cli, _mapping(h, tmp)) == 4


def a_change_is_seen_by_the_next_pull(h: SourceHarness, cli, tmp) -> None:
    keys = h.put(["in"] * 3 + ["out"] * 3)
    m = _mapping(h, tmp)
    assert _matched(h, cli, m) == 3
    h.set(keys[4], "in")
    h.set(keys[0], "out")
    h.set(keys[5], "in")
    assert _matched(h, cli, m) == 4


def a_pull_without_change_moves_nothing(h: SourceHarness, cli, tmp) -> None:
    h.put(["in"] * 2 + ["out"])
    m = _mapping(h, tmp)
    first = cli.json("plan", "-c", m, env=h.env())
    again = cli.json("plan", "-c", m, env=h.env())
    assert again["segments"] == first["segments"]
    assert again["destinations"] == first["destinations"]


def a_deletion_is_seen(h: SourceHarness, cli, tmp) -> None:
    keys = h.put(["in"] * 3)
    m = _mapping(h, tmp)
    assert _matched(h, cli, m) == 3
    if not h.deletes:
        return
    h.delete(keys[1])
    assert _matched(h, cli, m) == 2


CHECKS = [first_pull_reads_every_contact, a_change_is_seen_by_the_next_pull,
          a_pull_without_change_moves_nothing, a_deletion_is_seen]
