"""Shared test helpers: run the real CLI in-process and write small mappings."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crmsync.cli import app
from crmsync.connectors.testing import write_csv, write_mapping

__all__ = ["Cli", "read_csv_keys", "write_csv", "write_mapping"]


@pytest.fixture(autouse=True)
def _fresh_salesforce_orgs():
    """Salesforce's per-org API allocation is kept per process, by login URL: a fake that
    reuses an earlier fake's port must not inherit its exhausted allocation."""
    yield
    sf = sys.modules.get("crmsync.connectors.salesforce")
    if sf is not None:
        sf._ORGS.clear()


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI points the root logger at the stderr of its run; a later test must not log
    into that closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Cli:
    def __init__(self, folder: Path):
        self.folder = folder
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None):
        return self.runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

    def json(self, *args: str, env: dict[str, str] | None = None) -> dict:
        res = self(*args, "--json", env=env)
        assert res.stdout.strip(), res.stderr
        return json.loads(res.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def read_csv_keys(path: Path) -> set[str]:
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return {r["key"] for r in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def pg():
    """A real, throwaway PostgreSQL server (see tests/pgserver.py): skips when no server
    binaries exist, fails under CI=true."""
    import os

    from pgserver import NoServer, start_server

    try:
        server = start_server()
    except NoServer as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must test against PostgreSQL: {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_db(pg):
    """The DSN of a fresh database owned by the test role, dropped after the test."""
    dsn = pg.create_database()
    yield dsn
    pg.drop_database(dsn.rsplit("/", 1)[1])
