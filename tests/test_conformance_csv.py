"""The destination conformance battery on the embedded `csv` destination."""

from __future__ import annotations

import shutil

import pytest

from crmsync.connectors.testing import DESTINATION_CHECKS as CHECKS

from conftest import read_csv_keys


class CsvHarness:
    batch_limit = 1 << 62

    def __init__(self, tmp):
        self.path = tmp / "out" / "d.csv"
        self.store = tmp / ".crmsync" / "state.duckdb"

    def destination(self):
        return {"type": "csv", "path": "out/d.csv"}

    def connections(self):
        return {}

    def env(self):
        return {}

    def keys(self, n):
        return [f"k{i:03d}" for i in range(n)]

    def remote(self):
        return read_csv_keys(self.path) if self.path.is_file() else set()

    def write_count(self):
        import duckdb

        if not self.store.exists():
            return 0
        con = duckdb.connect(str(self.store), read_only=True)
        try:
            return con.execute("SELECT coalesce(sum(calls), 0) FROM run_destinations").fetchone()[0]
        finally:
            con.close()

    def fail_next_writes(self, n):
        # a directory where the file should be: every write fails until healed
        if self.path.exists():
            self.path.unlink()
        self.path.mkdir(parents=True)

    def heal(self):
        shutil.rmtree(self.path)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check, cli, tmp_path):
    check(CsvHarness(tmp_path), cli, tmp_path)
