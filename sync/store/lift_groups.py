"""Who was sent and who was held out, per segment, for `crmsync lift` (SPEC "Measuring
lift"): each contact's group as of the first run that sent it (to any destination of the
segment) or held it out (when it would otherwise have been sent). A contact keeps that group
for good, after it leaves the segment too. Written by `run` and `apply`, never by a dry run
(it sends nothing)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from ..sql import lit, q
from .snapshot import snap

if TYPE_CHECKING:
    import numpy as np

SENT, HELD_OUT = "sent", "held_out"


class LiftGroups:
    """The lift part of ``Store`` (``con`` and ``transaction`` are the store's)."""

    con: duckdb.DuckDBPyConnection

    def transaction(self) -> Any: ...

    def shared_table(self, table: str) -> str: ...

    def record_lift_groups(self, run_id: int, segment: str, sent: list[tuple[str, str]],
                           held_out: list[str]) -> int:
        """Give the contacts this run sent or held out of ``segment`` their group, unless
        they have one. ``sent``: per destination pushed, (its name, SQL selecting ``key``
        of the members it was to receive), less the rows it rejected in this run;
        ``held_out``: SQL selecting ``key`` of the members held out who would otherwise
        have been sent. Returns how many contacts joined a group."""
        parts = [f"SELECT key, {lit(SENT)} AS grp FROM ({sql}) ANTI JOIN (SELECT key FROM "
                 f"rejects WHERE run_id = {int(run_id)} AND dest = {lit(dest)}) USING (key)"
                 for dest, sql in sent]
        parts += [f"SELECT key, {lit(HELD_OUT)} AS grp FROM ({sql})" for sql in held_out]
        if not parts:
            return 0
        with self.transaction() as con:
            before = self._lift_count(segment)
            con.execute(
                f"INSERT INTO lift_groups SELECT {lit(segment)}, key, grp, {int(run_id)} FROM "
                f"(SELECT DISTINCT ON (key) key, grp FROM ({' UNION ALL '.join(parts)}) "
                f"ORDER BY key, grp DESC) ANTI JOIN (SELECT key FROM lift_groups "
                f"WHERE segment = {lit(segment)}) USING (key)")
            return self._lift_count(segment) - before

    def without_group(self, segment: str, select: str) -> str:
        """Postgres SQL (the shared store's database): the keys of ``select`` with no group
        for ``segment`` yet, what ``engine: postgres`` fetches for ``record_lift_groups``."""
        return (f"SELECT key FROM ({select}) AS _s WHERE NOT EXISTS (SELECT 1 FROM "
                f"{self.shared_table('lift_groups')} g WHERE g.segment = {lit(segment)} "
                f"AND g.key = _s.key)")

    def _lift_count(self, segment: str) -> int:
        return int(self.con.execute("SELECT count(*) FROM lift_groups WHERE segment = ?",
                                    [segment]).fetchone()[0])

    def lift_outcomes(self, segment: str, source: str, field: str, kind: str,
                      since: datetime | None = None, contacts: tuple[Any, str] | None = None
                      ) -> dict[str, np.ndarray]:
        """Per group (``sent``, ``held_out``), the outcome of each of its contacts from the
        stored snapshot of ``source``: ``kind`` "bool" (true, unknown as false), "date"
        (after ``since``, unknown as false) or "number" (NaN unknown). A contact gone from
        the snapshot has an unknown outcome. ``contacts``: (connection, table) of the typed
        contacts to read instead, in the shared store's database (``engine: postgres``:
        the source evaluated in place), with the groups as that database holds them."""
        import numpy as np  # only `lift` and the report need it (not every run)

        col = f"s.{q(field)}"
        value = {"bool": f"coalesce({col}, FALSE)",
                 "date": f"coalesce({col} > {lit(since)}, FALSE)",
                 "number": f"coalesce(CAST({col} AS FLOAT8), 'NaN'::FLOAT8)"}[kind]
        con, table, groups = self.con, snap(source), "lift_groups"
        if contacts is not None:
            (con, table), groups = contacts, self.shared_table("lift_groups")
        cur = con.execute(f"SELECT g.grp, {value} AS v FROM {groups} g LEFT JOIN {table} s "
                          f"ON s._key = g.key WHERE g.segment = {lit(segment)}")
        if contacts is None:
            rows = cur.fetchnumpy()
            grp, v = np.asarray(rows["grp"]), np.asarray(rows["v"])
        else:
            fetched = cur.fetchall()
            grp = np.asarray([r[0] for r in fetched], dtype=object)
            v = np.asarray([r[1] for r in fetched], dtype=float if kind == "number" else bool)
        return {g: v[grp == g] for g in (SENT, HELD_OUT)}
