"""The destination conformance battery on the `csv` destination with the shared Postgres
store (a real server, tests/pgserver.py) instead of the embedded DuckDB file."""

from __future__ import annotations

import psycopg
import pytest
from test_conformance_csv import CsvHarness

from crmsync.connectors.testing import DESTINATION_CHECKS as CHECKS


class PgStoreHarness(CsvHarness):
    store_url = "${STORE_URL}"

    def __init__(self, tmp, dsn: str):
        super().__init__(tmp)
        self.dsn = dsn

    def env(self):
        return {"STORE_URL": self.dsn}

    def write_count(self):
        with psycopg.connect(self.dsn) as conn:
            if not conn.execute("SELECT to_regclass('crmsync.run_destinations')").fetchone()[0]:
                return 0
            return conn.execute("SELECT coalesce(sum(calls), 0) FROM crmsync.run_destinations "
                                "WHERE mapping = 'm'").fetchone()[0]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance_on_the_shared_store(check, cli, tmp_path, pg_db):
    h = PgStoreHarness(tmp_path, pg_db)
    check(h, cli, tmp_path)
    assert not (tmp_path / ".crmsync").exists()  # nothing was kept locally
