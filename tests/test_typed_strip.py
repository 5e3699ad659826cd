"""The snapshot's strip fast path (``store.typed.strip``) equals Python's ``str.strip()``."""

from __future__ import annotations

import duckdb
import pytest

from crmsync.sync.sql.portable import Raw, render
from crmsync.sync.store.typed import strip

CASES = ["a", "ab", " a", "a ", "\ta\n", "a\u00a0", "\u3000a", "\u2028x\u2029", "é", "aé",
         "é ", "~", "!x!", "", " ", "\x1c\x1f", "a b", "\x85a\x85", "\x7fa\x7f", "中文 "]


@pytest.mark.parametrize("value", CASES)
def test_strip_matches_python(value: str) -> None:
    sql = render(strip(Raw(this="CAST(? AS VARCHAR)")))
    assert duckdb.execute(f"SELECT {sql}", [value] * sql.count("?")).fetchone()[0] == value.strip()


def test_strip_keeps_null() -> None:
    assert duckdb.execute(f"SELECT {render(strip(Raw(this='CAST(NULL AS VARCHAR)')))}"
                          ).fetchone()[0] is None
