"""The destination conformance battery on google_ads_customer_match, against the fake."""

from __future__ import annotations

import pytest

from crmsync.connectors.testing import DESTINATION_CHECKS as CHECKS
from crmsync.connectors.testing import HashedKeys

pytest.importorskip("google.ads.datamanager_v1")

from fakes.google import DataManagerFake, quota_error, service_account_file  # noqa: E402

ACCOUNT = "1234567890"
LIST = "Conformance (crmsync)"


class GoogleHarness(HashedKeys):
    batch_limit = 10_000  # audience members per request

    def __init__(self, fake: DataManagerFake):
        import tempfile

        super().__init__()
        self.fake = fake
        # real service-account credentials: a throwaway key, tokens from the fake's token_uri
        self.key_file = service_account_file(fake, tempfile.mkdtemp())

    def destination(self):
        return {"type": "google_ads_customer_match", "connection": "google", "list": LIST,
                "terms_of_service": "accepted"}

    def connections(self):
        return {"google": {"type": "google_ads",
                           "credentials_file": "${GOOGLE_APPLICATION_CREDENTIALS}",
                           "operating_account": ACCOUNT, "base_url": self.fake.url}}

    def env(self):
        return {"GOOGLE_APPLICATION_CREDENTIALS": str(self.key_file)}

    def remote(self):
        ul = self.fake.list_named(LIST)
        if ul is None:
            return set()
        return {self.key_of(i["emailAddress"]) for row in self.fake.member_rows(ul.id)
                for i in row if "emailAddress" in i}

    def write_count(self):
        return len(self.fake.calls("POST", r":(ingest|remove)$"))

    def fail_next_writes(self, n):
        q = quota_error("IngestionMutateRequestsPerMinutePerProject", retry_after=0)
        self.fake.fail_next(n, status=429, body=q.body, headers=q.headers,
                            path=r":(ingest|remove)$")

    def heal(self):
        self.fake.scripted.clear()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, cli, tmp_path):
    with DataManagerFake() as fake:
        fake.add_account(ACCOUNT)
        check(GoogleHarness(fake), cli, tmp_path)
