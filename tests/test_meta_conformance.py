"""The destination conformance battery on meta_custom_audience, against the fake Graph API."""

from __future__ import annotations

import pytest

from crmsync.connectors.testing import DESTINATION_CHECKS as CHECKS
from crmsync.connectors.testing import HashedKeys

pytest.importorskip("facebook_business")

from fakes.meta import FakeGraph  # noqa: E402

NAME = "Conformance (crmsync)"


class MetaHarness(HashedKeys):
    batch_limit = 10_000  # rows per call

    def __init__(self, fake: FakeGraph):
        super().__init__()
        self.fake = fake

    def destination(self):
        return {"type": "meta_custom_audience", "connection": "meta", "audience": NAME}

    def connections(self):
        return {"meta": {"type": "meta", "access_token": "${META_ACCESS_TOKEN}",
                         "ad_account_id": "act_1234", "base_url": self.fake.url}}

    def env(self):
        return {"META_ACCESS_TOKEN": "EAAconformance"}

    def remote(self):
        aud = self.fake.by_name(NAME)
        if aud is None:
            return set()
        return {self.key_of(v) for row in aud.members for k, v in row if k == "EMAIL" and v}

    def write_count(self):
        return len(self.fake.calls("POST", r"/\d+/users$"))

    def fail_next_writes(self, n):
        self.fake.fail_next(n, status=503, body="Service Unavailable", path=r"/\d+/users$")

    def heal(self):
        self.fake.scripted.clear()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, cli, tmp_path):
    with FakeGraph(account="act_1234") as fake:
        check(MetaHarness(fake), cli, tmp_path)
