"""Connector rules are found by ``validate`` (``Source.check`` / ``Destination.check`` and
``target_option``), with file:line, before any API call: not halfway through a run."""

from __future__ import annotations

import pytest

from crmsync.sync.pipeline.checks import check_project

from conftest import write_csv, write_mapping

pytest.importorskip("google.ads.datamanager_v1")


def _mapping(tmp_path, *dests):
    write_csv(tmp_path / "c.csv", ["id", "email", "dob"], [["1", "a@x.example", "1990-01-01"]])
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "connections": {"google": {"type": "google_ads", "operating_account": "1234567890"},
                        "hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}"}},
        "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id",
                            "identity": {"email": "email", "date_of_birth": "dob"}}},
        "segments": {"s": {"description": "d", "owner": "o@x.example",
                           "where": {"field": "email", "is_known": True}}},
        "destinations": list(dests)})


def test_google_identifier_support_is_a_validate_error_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBSPOT_TOKEN", "t")
    m = _mapping(tmp_path, {"name": "g", "segment": "s", "type": "google_ads_customer_match",
                            "connection": "google", "list": "L",
                            "identifiers": ["email", "date_of_birth"]})
    found = [p for p in check_project(m) if p.severity == "error"]
    assert [(p.path, p.message) for p in found] == [
        ("destinations[0].identifiers[1]", "Customer Match does not take date_of_birth")]
    assert found[0].line == m.read_text().splitlines().index("  - date_of_birth") + 1


def test_two_destinations_naming_one_list_are_found(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBSPOT_TOKEN", "t")
    pytest.importorskip("hubspot")
    m = _mapping(tmp_path,
                 {"name": "a", "segment": "s", "type": "hubspot_list", "connection": "hubspot",
                  "list": "Champions"},
                 {"name": "b", "segment": "s", "type": "hubspot_list", "connection": "hubspot",
                  "list": "Champions", "chunk_size": 500})
    found = [p for p in check_project(m) if p.severity == "error"]
    assert [p.message for p in found] == [
        "destination 'b' writes to the same place as destinations[0]"]
