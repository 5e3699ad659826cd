"""The snapshot's strip fast path (``store.typed.strip``) equals Python's ``str.strip()``."""

from __future__ import annotations

import duckdb
import pytest

from crmsync.sync.sql.portable import Raw, render
from crmsync.sync.store.typed import strip

CASES = ["a", "ab", " a", "a ", "\ta\n", "a\u00a0", "\u3000a", "\u2028x\u2029", "é", "aé",
         "é ", "~", "!x!", "", " ", "\x1c\x1f", "a b", "\x85a\x85", "\x7fa\x7f", "中文 "]


def _one(sql: str, params: list | None = None):
    with duckdb.connect() as con:  # not the module's default connection other tests use
        return con.execute(sql, params).fetchall()[0][0]


@pytest.mark.parametrize("value", CASES)
def test_strip_matches_python(value: str) -> None:
    sql = render(strip(Raw(this="CAST(? AS VARCHAR)")))
    assert _one(f"SELECT {sql}", [value] * sql.count("?")) == value.strip()


def test_strip_keeps_null() -> None:
    assert _one(f"SELECT {render(strip(Raw(this='CAST(NULL AS VARCHAR)')))}") is None
