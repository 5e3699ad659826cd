"""Quoting for the DuckDB SQL that crmsync writes (identifiers and literals), in one place.

Shared by every layer that builds SQL: the store, the segment compiler, the pipeline and the
file connectors (whose pulls are DuckDB SELECTs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def q(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: Any) -> str:
    """A SQL literal for a Python value (text for anything but None, bool, number, datetime)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    return "'" + str(value).replace("'", "''") + "'"
