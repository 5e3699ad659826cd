"""The destination conformance battery on the embedded `csv` destination."""

from __future__ import annotations

import shutil

import pytest

from conformance import CHECKS
from conftest import read_csv_keys


class CsvHarness:
    batch_limit = 1 << 62

    def __init__(self, tmp):
        self.path = tmp / "out" / "d.csv"

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

    def writes(self, run):
        return run["destinations"]["d"]["calls"]

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
