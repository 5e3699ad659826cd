"""The identity cache: per encoder (a destination type and its identifiers), each distinct
identity input already encoded in Python (hashed, normalised) and its value or why it was
refused, so each input is encoded once, not on every plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb

from ..sql import lit


class IdentityCache:
    """``Store.identity_cache(encoder)``; ``inputs``: a table of key, label, ident (JSON of
    the identifier values), fp (its md5)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, encoder: str):
        self.con, self.encoder = con, encoder

    def fill(self, inputs: str, encode: Callable[[str], tuple[Any, str | None]]) -> None:
        """Encode (``encode(ident) -> (value, reason)``) the inputs not cached yet."""
        new = self.con.execute(f"SELECT DISTINCT i.fp, i.ident FROM {inputs} i ANTI JOIN "
                               f"(SELECT fp FROM identity_cache WHERE encoder = ?) c "
                               f"USING (fp)", [self.encoder]).fetchall()
        if not new:
            return
        fps, vals, reasons = [], [], []
        for fp, ident in new:
            v, r = encode(ident)
            fps.append(fp)
            vals.append(v)
            reasons.append(r)
        self.con.execute("INSERT OR REPLACE INTO identity_cache SELECT ?, unnest(?), unnest(?), "
                         "unnest(?)", [self.encoder, fps, vals, reasons])

    def encoded(self, inputs: str) -> str:
        """SELECT key, label, value, fp of the inputs that encoded."""
        return (f"SELECT i.key, i.label, c.value, i.fp FROM {inputs} i JOIN identity_cache c "
                f"ON c.encoder = {lit(self.encoder)} AND c.fp = i.fp WHERE c.reason IS NULL")

    def refused(self, inputs: str) -> list[tuple[str, str]]:
        """(key, reason) of the inputs that did not encode, by key."""
        return self.con.execute(
            f"SELECT i.key, c.reason FROM {inputs} i JOIN identity_cache c ON c.encoder = "
            f"{lit(self.encoder)} AND c.fp = i.fp WHERE c.reason IS NOT NULL "
            f"ORDER BY i.key").fetchall()
