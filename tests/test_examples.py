"""Every example mapping in mappings/examples/ passes `crmsync validate` with dummy secrets,
so an example that drifts from the code (a renamed key, a new rule) fails here. Together they
cover every registered destination type and every source type and Salesforce login."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crmsync.connectors import names

EXAMPLES = Path(__file__).resolve().parent.parent / "mappings" / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
ENV = {name: f"dummy-{name.lower()}-value" for name in (
    "HUBSPOT_TOKEN", "SF_USERNAME", "SF_PASSWORD", "SF_SECURITY_TOKEN", "SF_CLIENT_ID",
    "SF_CLIENT_SECRET", "SF_PRIVATE_KEY_FILE", "META_ACCESS_TOKEN", "META_APP_SECRET",
    "GOOGLE_APPLICATION_CREDENTIALS", "SLACK_WEBHOOK_URL")}
ENV["SLACK_WEBHOOK_URL"] = "https://hooks.slack.example/services/T0/B0/x"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_validates_strictly(cli, path):
    res = cli("validate", "--strict", "-c", path, env=ENV)
    assert res.exit_code == 0, res.output


def _mappings() -> list[dict]:
    return [yaml.safe_load(p.read_text(encoding="utf-8")) for p in FILES]


def test_examples_cover_every_destination_and_source_type():
    dests = {d["type"] for m in _mappings() for d in m.get("destinations", [])}
    assert set(names("destination")) <= dests, set(names("destination")) - dests
    sources = set()
    logins = set()
    for m in _mappings():
        for s in m["sources"].values():
            sources.add(s.get("type") or m["connections"][s["connection"]]["type"])
        for c in m.get("connections", {}).values():
            if c["type"] == "salesforce":
                logins.add("jwt" if "private_key_file" in c else
                           "client_credentials" if "client_secret" in c else "password")
    assert {"csv", "jsonl", "hubspot", "salesforce"} <= sources
    assert logins == {"password", "jwt", "client_credentials"}


def test_readme_links_every_example():
    readme = (EXAMPLES.parent.parent / "README.md").read_text(encoding="utf-8")
    for p in FILES:
        assert f"mappings/examples/{p.name}" in readme, p.name
