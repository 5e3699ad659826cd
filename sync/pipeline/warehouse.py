"""``engine: postgres``: a destination's diff computed in the database that evaluated it.

The desired members (``push.Candidates`` over the evaluation's flags) are compared, in that
database, with the destination's rows of the shared store's ledger there
(``crmsync.ledger``, this mapping's): the embedded diff's SQL (``Ledger.diff``), so the same
semantics (adds, updates by fingerprint, removes in mirror mode, unacknowledged batches sent
again, rejects sent again only when their value changed). Only the counts and the changed
rows leave it, into the store's working copy (temp table ``_d<i>_diff``), from where the push
and its checkpoints run as on the embedded engine.

Values and fingerprints are the embedded engine's: a destination's ``encode_sql`` in the
Postgres dialect, or for identity encoders that run in Python (hashing for the ad platforms)
the fingerprint of the identifier input as the same JSON text, the fetched rows then encoded
through the identity cache.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ...connectors.base import Destination
from ..mapping.model import DestinationConfig
from ..segments.engine import Evaluation
from ..segments.warehouse import materialize
from ..sql import q
from ..store.figures import DestinationFigures
from ..store.shared import copy_out, read_copied
from .push import DestinationSync, DestPlan

DIFF_COLUMNS = ("op", "key", "label", "value", "previous", "fp")


def json_object(columns: dict[str, str]) -> str:
    """Postgres SQL: the text DuckDB's ``to_json`` gives a struct of these text columns
    (name -> SQL), e.g. ``{"email":"a@b.example","phone":null}``."""
    parts = [f"'{json.dumps(n)[:-1]}\":' || coalesce(to_json(CAST({c} AS text))::text, 'null')"
             for n, c in columns.items()]
    return "('{' || " + " || ',' || ".join(parts) + " || '}')" if parts else "'{}'"


class WarehouseSync(DestinationSync):
    """``DestinationSync`` whose diff runs in the Postgres database holding the contacts
    (``Evaluation.con``) against the store's ledger there."""

    def __init__(self, ev: Evaluation, cfg: DestinationConfig, dest: Destination, index: int):
        super().__init__(ev, cfg, dest, index)
        self.pg = ev.con
        self.con = ev.store.con  # the working copy: the diff's rows, the ledger, the push
        self.fetched = self.fetched_bytes = 0  # rows and bytes read from the database

    def plan(self, figures: DestinationFigures | None = None) -> DestPlan:
        cfg, pg, t = self.cfg, self.pg, self.t
        p = self._figures(figures)
        materialize(pg, f"{t}_desired", self.cands.desired(self.ev.table(self.source)),
                    analyze=True)
        icols = {n: f"d.{q('i:' + n)}" for n in self.cands.id_cols}
        sent = self._value_fp(icols, "postgres")
        python = sent is None  # the identifier input, encoded in Python once fetched
        value, fp = sent or (json_object(icols), f"md5({json_object(icols)})")
        diff = self.ledger.diff(f"SELECT * FROM {q(t + '_desired')}", value, fp,
                                cfg.mode == "mirror", rows=self.ledger.in_database())
        row = pg.execute(diff.counts).fetchone()
        p.desired, p.add, p.update, p.unchanged, p.remove, p.ledger = (int(x) for x in row)
        ops = {op for op, n in (("add", p.add), ("update", p.update), ("remove", p.remove))
               if n}
        # in the database: the changed rows, and the rows drop_gone forgets
        materialize(pg, f"{t}_changes", diff.only(ops))
        materialize(pg, f"{t}_forget", self.ledger.forgettable_in_database(q(t + "_desired")))
        changes, forget = q(f"{t}_changes"), q(f"{t}_forget")
        self._fetch(f"SELECT * FROM {changes}", f"{t}_raw" if python else f"{t}_diff")
        self._fetch(f"SELECT key FROM {forget}", f"{t}_gone", ("key",))
        if python:
            self._encode_fetched(p)
        return DestPlan(p, self.ledger.kept_but(f"{t}_gone"), f"{t}_diff", "", made=True)

    def push(self, plan: DestPlan, *args: Any, **kw: Any) -> DestinationFigures:
        """As ``DestinationSync.push``, once the store holds the ledger rows it reads and
        writes: those of the changed and forgotten keys (a ``whole`` destination, e.g. a
        file, is written from all of them)."""
        t = self.t
        self.ledger.need(None if self.dest.whole else f"SELECT key FROM {q(t + '_changes')} "
                         f"UNION ALL SELECT key FROM {q(t + '_forget')}", self.pg)
        return super().push(plan, *args, **kw)

    def _fetch(self, select: str, table: str, columns: tuple[str, ...] = DIFF_COLUMNS
               ) -> None:
        rows, size = fetch(self.pg, self.con, select, table, columns)
        self.fetched += rows
        self.fetched_bytes += size

    def _encode_fetched(self, p: DestinationFigures) -> None:
        """The fetched adds and updates carry the identifier input as ``value``: encode each
        distinct one once, through the store's identity cache. One that does not encode is
        not desired, as on the embedded engine: counted as no identifier (and an update of
        it becomes a remove in mirror mode)."""
        con, t = self.con, self.t
        con.execute(f"CREATE OR REPLACE TEMP TABLE {t}_in AS SELECT key, label, value AS "
                    f"ident, fp FROM {t}_raw WHERE op <> 'remove'")
        cache = self.ev.store.identity_cache(self.encoder_id())
        cache.fill(f"{t}_in", self.encode)
        refused = cache.refused(f"{t}_in")
        mirror = self.cfg.mode == "mirror"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {t}_diff AS "
            f"SELECT r.op, r.key, r.label, e.value, r.previous, r.fp FROM {t}_raw r "
            f"JOIN ({cache.encoded(f'{t}_in')}) e USING (key) WHERE r.op <> 'remove' "
            f"UNION ALL SELECT * FROM {t}_raw WHERE op = 'remove' "
            + (f"UNION ALL SELECT 'remove', r.key, NULL, NULL, r.previous, r.fp FROM {t}_raw r "
               f"WHERE r.op = 'update' AND r.key IN (SELECT unnest(?))" if mirror else ""),
            [[k for k, _ in refused]] if mirror else None)
        ops = dict(con.execute(f"SELECT op, count(*) FROM {t}_raw WHERE key IN "
                               f"(SELECT unnest(?)) GROUP BY op", [[k for k, _ in refused]]
                               ).fetchall())
        p.desired -= len(refused)
        p.add -= ops.get("add", 0)
        p.update -= ops.get("update", 0)
        p.remove += ops.get("update", 0) if mirror else 0
        p.no_identifier += len(refused)
        p.rejects = [(k, f"no_identifier: {r}") for k, r in refused]
        con.execute(f"INSERT INTO {t}_gone SELECT unnest(?)", [[k for k, _ in refused]])


def fetch(pg: Any, duck: Any, select: str, table: str, columns: tuple[str, ...]
          ) -> tuple[int, int]:
    """The rows of ``select`` (Postgres; ``columns``, text) into DuckDB temp table ``table``,
    through COPY (NULL and the empty text kept apart); returns how many, and their bytes
    as sent."""
    names = ", ".join(q(c) for c in columns)
    with tempfile.TemporaryDirectory(prefix="crmsync-fetch-") as tmp:
        path = Path(tmp) / "rows.csv"
        copy_out(pg, f"SELECT {names} FROM ({select}) AS _f", path)
        cols = ", ".join(f"c{i} AS {q(c)}" for i, c in enumerate(columns))
        duck.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {cols} FROM "
                     f"{read_copied(path, len(columns))}")
        size = path.stat().st_size
    return int(duck.execute(f"SELECT count(*) FROM {table}").fetchone()[0]), size


def into_store(ev: Evaluation, select: str, table: str, columns: tuple[str, ...]) -> None:
    """The rows of ``select`` (over the evaluation's tables; ``columns``, text) as temp table
    ``table`` of the store's connection: made there on the embedded engine, fetched from
    the database with ``engine: postgres``."""
    if ev.engine == "postgres":
        fetch(ev.con, ev.store.con, select, table, columns)
    else:
        ev.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {select}")


def sync_for(ev: Evaluation, cfg: DestinationConfig, dest: Destination, index: int
             ) -> DestinationSync:
    """The destination's diff and push for the evaluation's engine."""
    cls = WarehouseSync if ev.engine == "postgres" else DestinationSync
    return cls(ev, cfg, dest, index)

