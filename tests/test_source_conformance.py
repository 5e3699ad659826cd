"""The source conformance battery on the embedded `csv` and `jsonl` sources."""

from __future__ import annotations

import json

import pytest

from crmsync.connectors.testing import SOURCE_CHECKS, write_csv


class FileHarness:
    stage_field, deletes = "stage", True

    def __init__(self, tmp, kind: str):
        self.kind, self.path = kind, tmp / f"contacts.{kind}"
        self.rows: dict[str, str] = {}

    def source(self):
        return {"type": self.kind, "path": self.path.name, "key": "id"}

    def connections(self):
        return {}

    def env(self):
        return {}

    def _write(self):
        if self.kind == "csv":
            write_csv(self.path, ["id", "stage"], [[k, v] for k, v in self.rows.items()])
        else:
            self.path.write_text("".join(json.dumps({"id": k, "stage": v}) + "\n"
                                         for k, v in self.rows.items()), encoding="utf-8")

    def put(self, stages):
        keys = [f"k{len(self.rows) + i:03d}" for i in range(len(stages))]
        self.rows.update(zip(keys, stages, strict=True))
        self._write()
        return keys

    def set(self, key, stage):
        self.rows[key] = stage
        self._write()

    def delete(self, key):
        del self.rows[key]
        self._write()


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
def test_source_conformance(check, kind, cli, tmp_path):
    check(FileHarness(tmp_path, kind), cli, tmp_path)
