"""``engine: postgres``: a destination's diff computed in the database that evaluated it.

Desired members (``push.Candidates`` over the evaluation's flags) against a ledger table of
the same connection; only the adds (key, label, identifiers) and removes (key, value) are
fetched, the rest is counted there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mapping.model import DestinationConfig
from ..segments.engine import Evaluation
from ..segments.warehouse import materialize
from ..sql import lit, q
from .push import Candidates


@dataclass
class Diff:
    """One destination's changes, as fetched from the database."""

    desired: int
    unchanged: int
    adds: list[tuple]  # (key, label, identifier texts in the order of ``id_names``)
    removes: list[tuple]  # (key, ledger value)
    id_names: list[str]


def diff(ev: Evaluation, cfg: DestinationConfig, ledger: str, dest_column: str = "dest",
         extra: dict[str, str] | None = None) -> Diff:
    """Desired members of ``cfg`` against the ledger table ``ledger`` (columns ``dest``,
    ``key``, ``value``, ``state``; ``extra``: more column = value filters, e.g. the mapping
    name of a shared store), computed in the database: only the adds (key, label,
    identifiers) and the removes (key, value) are fetched; the rest are counted there.
    A ledger row in state ``member``/``preexisting`` counts as synced, ``pending``/
    ``removing``/``rejected`` as not (re-sent), as in the embedded engine's diff."""
    c = Candidates.of(ev, cfg)
    ids = list(c.id_cols)
    desired = c.desired(ev.table(c.source))
    where = " AND ".join([f"{q(dest_column)} = {lit(cfg.name)}",
                          *(f"{q(k)} = {lit(v)}" for k, v in (extra or {}).items())])
    led = f"(SELECT key, value, state FROM {ledger} WHERE {where})"
    con = ev.con
    if ev.engine == "postgres":
        materialize(con, "_desired", desired, analyze=True)
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _desired AS {desired}")
    synced = "l.state IN ('member', 'preexisting')"
    n, unchanged = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {synced}) FROM _desired d "
        f"LEFT JOIN {led} l USING (key)").fetchone()
    cols = "".join(f", d.{q('i:' + i)}" for i in ids)
    adds = con.execute(
        f"SELECT d.key, d.label{cols} FROM _desired d LEFT JOIN {led} l USING (key) "
        f"WHERE l.key IS NULL OR NOT {synced} ORDER BY d.key").fetchall()
    removes = []
    if cfg.mode == "mirror":
        removes = con.execute(
            f"SELECT l.key, l.value FROM {led} l WHERE l.state IN ('member', 'pending', "
            f"'removing') AND NOT EXISTS (SELECT 1 FROM _desired d WHERE d.key = l.key) "
            f"ORDER BY l.key").fetchall()
    return Diff(int(n), int(unchanged), adds, removes, ids)
