"""The destination conformance battery on hubspot_list, against the fake HubSpot."""

from __future__ import annotations

import pytest

from crmsync.connectors.testing import DESTINATION_CHECKS as CHECKS

pytest.importorskip("hubspot")

from fakes.hubspot import FakeHubSpot  # noqa: E402

NAME = "crmsync · conformance"


class HubSpotListHarness:
    batch_limit = 10_000  # the connector's default chunk for add-and-remove

    def __init__(self, fake: FakeHubSpot):
        self.fake = fake

    def destination(self):
        return {"type": "hubspot_list", "connection": "hubspot", "list": NAME}

    def connections(self):
        return {"hubspot": {"type": "hubspot", "token": "${HUBSPOT_TOKEN}",
                            "base_url": self.fake.url, "rate_limit": 1000, "backoff": 0.01}}

    def env(self):
        return {"HUBSPOT_TOKEN": "pat-conformance"}

    def keys(self, n):
        return [self.fake.add_contact({"email": f"c{i}@x.example"}) for i in range(n)]

    def remote(self):
        return self.fake.members(NAME) if self.fake.list_named(NAME) else set()

    def write_count(self):
        return len(self.fake.calls("PUT", r"/memberships/add-and-remove$"))

    def fail_next_writes(self, n):
        self.fake.fail_next(n, status=502, body="Bad Gateway",
                            path=r"/memberships/add-and-remove$")

    def heal(self):
        self.fake.scripted.clear()


class HubSpotPropertyHarness(HubSpotListHarness):
    """hubspot_property: a member is a contact whose property holds the segment name."""

    batch_limit = 100  # inputs per batch update

    def destination(self):
        return {"type": "hubspot_property", "connection": "hubspot", "property": "crmsync_seg"}

    def remote(self):
        return {cid for cid, c in self.fake.contacts.items()
                if c["props"].get("crmsync_seg") == "s"}

    def write_count(self):
        return len(self.fake.calls("POST", r"/crm/v3/objects/contacts/batch/update$"))

    def fail_next_writes(self, n):
        self.fake.fail_next(n, status=502, body="Bad Gateway",
                            path=r"/crm/v3/objects/contacts/batch/update$")


@pytest.mark.parametrize("harness", [HubSpotListHarness, HubSpotPropertyHarness],
                         ids=["hubspot_list", "hubspot_property"])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, harness, cli, tmp_path):
    with FakeHubSpot(token="pat-conformance", rate_limit=1000) as fake:
        check(harness(fake), cli, tmp_path)
