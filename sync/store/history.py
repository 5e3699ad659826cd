"""Run history: runs, each destination's figures and rejects per run, segment sizes and
the moves between segments from one run to the next."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import duckdb

from ..clock import iso
from ..logs import one_line, redact
from ..sql import lit
from .figures import COLUMNS, DestinationFigures
from .snapshot import KEY_SAMPLE


class History:
    """The history part of ``Store`` (``con`` and ``transaction`` are the store's)."""

    con: duckdb.DuckDBPyConnection

    def transaction(self) -> Any: ...

    def _committed(self) -> None: ...

    def shared_table(self, table: str) -> str: ...

    def replace_shared(self, table: str, select: str, via: Any) -> None: ...

    def record_sizes(self, run_id: int, sizes: dict[str, dict[str, int]]) -> None:
        """Each segment's matched, held-out and sent (if given) counts in run ``run_id``."""
        rows = [[run_id, s, v["matched"], v["held_out"], v.get("sent")]
                for s, v in sizes.items()]
        if rows:
            self.con.executemany("INSERT INTO segment_sizes (run_id, segment, matched, "
                                 "held_out, sent) VALUES (?, ?, ?, ?, ?)", rows)

    def record_migrations(self, run_id: int, current: str, groups: dict[str, list[str]],
                          via: Any = None) -> list[tuple[str, str, int, list]]:
        """Per exclusive group, the from -> to counts between the last recorded run's
        memberships and this run's (temp table ``current``: segment, key), stays and
        joins/leaves (``''``) included, in one pass per group. Call before
        ``record_memberships`` replaces them; the first run of a store has nothing to compare
        with and records nothing. Returns the moves between two segments of a group, with
        the first few keys: (from, to, contacts, keys). ``via``: the connection to the shared
        store's database where ``current`` is (``engine: postgres``): the memberships are
        compared there, only the counts leave it."""
        con = self.con
        if not con.execute("SELECT count(*) FROM segment_sizes WHERE run_id < ?",
                           [run_id]).fetchone()[0]:
            return []
        prev, db = (self.shared_table("memberships"), via) if via else ("memberships", con)
        sample = (f"(array_agg(key ORDER BY key))[1:{KEY_SAMPLE}]" if via
                  else f"min(key, {KEY_SAMPLE})")
        moves: dict[tuple[str, str], tuple[str, str, int, list]] = {}
        for grp, segs in groups.items():
            listed = ", ".join(lit(s) for s in segs)
            rows = db.execute(
                f"""SELECT coalesce(p.segment, ''), coalesce(c.segment, ''), count(*), {sample}
                    FROM (SELECT key, segment FROM {prev} AS _p
                          WHERE segment IN ({listed})) AS p
                    FULL JOIN (SELECT key, segment FROM {current}
                               WHERE segment IN ({listed})) AS c USING (key)
                    GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
            if rows:
                con.executemany("INSERT INTO group_migrations VALUES (?, ?, ?, ?, ?)",
                                [[run_id, grp, a, b, int(n)] for a, b, n, _ in rows])
            for a, b, n, keys in rows:
                if a and b and a != b:
                    moves.setdefault((a, b), (a, b, int(n), sorted(keys)))
        return list(moves.values())

    def record_memberships(self, run_id: int, current: str, pairs: list[tuple[str, str]],
                           known: Iterable[tuple[str, str, int, list]] = (), via: Any = None
                           ) -> list[tuple[str, str, int, list]]:
        """Compare this run's memberships (temp table ``current``: segment, key) with the last
        run's; record moves for ``pairs`` (from, to) and the ``known`` ones (e.g. those of
        ``record_migrations``, not counted again); keep the current ones for next time.
        ``via``: as for ``record_migrations`` (the memberships are replaced there too)."""
        moves = list(known)
        con = self.con
        prev, db = (self.shared_table("memberships"), via) if via else ("memberships", con)
        sample = (f"(array_agg(key ORDER BY key))[1:{KEY_SAMPLE}]" if via
                  else f"list(key ORDER BY key)[1:{KEY_SAMPLE}]")
        for a, b, n, keys in moves:
            con.execute("INSERT INTO transitions VALUES (?, ?, ?, ?, ?)",
                        [run_id, a, b, n, keys])
        done = {(a, b) for a, b, _, _ in moves}
        for a, b in (p for p in pairs if p not in done):
            row = db.execute(
                f"""SELECT count(*), {sample} FROM (
                    SELECT key FROM {prev} AS _p WHERE segment = {lit(a)}
                    EXCEPT SELECT key FROM {prev} AS _p WHERE segment = {lit(b)}) AS _was
                  JOIN (SELECT key FROM {current} WHERE segment = {lit(b)}
                    EXCEPT SELECT key FROM {current} WHERE segment = {lit(a)}) AS _now
                  USING (key)""").fetchone()
            if row[0]:
                moves.append((a, b, int(row[0]), list(row[1])))
                con.execute("INSERT INTO transitions VALUES (?, ?, ?, ?, ?)",
                            [run_id, a, b, int(row[0]), list(row[1])])
        if via:
            self.replace_shared("memberships", f"SELECT segment, key FROM {current}", via)
            return moves
        with self.transaction():
            con.execute("DELETE FROM memberships")
            con.execute(f"INSERT INTO memberships SELECT segment, key FROM {current}")
        return moves

    def mark_interrupted(self) -> None:
        """Runs (and their destinations) still 'running' died, e.g. killed: what they pushed
        is in the ledger, checkpointed, and in their history rows up to the last checkpoint."""
        with self.transaction() as con:
            con.execute("UPDATE run_destinations SET status = 'interrupted' WHERE status = "
                        "'running'")
            con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")

    def begin_run(self, command: str, started: datetime, as_of: datetime) -> int:
        """Record a run's start (under the lock: a run still 'running' died, e.g. killed; what
        it pushed is in the ledger, checkpointed, and the next run goes on from there)."""
        self.mark_interrupted()
        run_id = self.con.execute("SELECT nextval('run_ids')").fetchone()[0]
        self.con.execute("INSERT INTO runs VALUES (?, ?, ?, NULL, ?, 'running', NULL)",
                         [run_id, command, started, as_of])
        self._committed()
        return int(run_id)

    def end_run(self, run_id: int, finished: datetime, status: str, exit_code: int) -> None:
        self.con.execute("UPDATE runs SET finished_at = ?, status = ?, exit_code = ? "
                         "WHERE run_id = ?", [finished, status, exit_code, run_id])
        self._committed()

    def begin_destination(self, run_id: int, dest: str, segment: str | None) -> None:
        """A destination's history row while it pushes ('running'), moved on by ``progress``
        at each checkpoint: a run killed mid-push keeps what it did."""
        self.con.execute("DELETE FROM run_destinations WHERE run_id = ? AND dest = ?",
                         [run_id, dest])
        self.con.execute("INSERT INTO run_destinations (run_id, dest, status, segment, adds, "
                         "removes, updates, rejected, deferred) VALUES (?, ?, 'running', ?, 0, "
                         "0, 0, 0, 0)", [run_id, dest, segment])

    def progress(self, run_id: int, dest: str, op: str, done: int, rejected: int,
                 deferred: int) -> None:
        """Count one checkpointed batch (called inside the checkpoint's transaction)."""
        col = {"add": "adds", "remove": "removes", "update": "updates"}[op]
        self.con.execute(f"UPDATE run_destinations SET {col} = {col} + ?, rejected = rejected "
                         f"+ ?, deferred = deferred + ? WHERE run_id = ? AND dest = ? AND "
                         f"status = 'running'", [done, rejected, deferred, run_id, dest])

    def record_destination(self, run_id: int, figures: DestinationFigures,
                           rejects: Iterable[tuple[str, str]] = ()) -> None:
        """A destination's figures in run ``run_id`` and its (key, reason) rejects."""
        self.con.execute("DELETE FROM run_destinations WHERE run_id = ? AND dest = ? AND "
                         "status = 'running'", [run_id, figures.name])  # progress rows
        row = figures.row()
        if row["message"]:  # a platform's error text may quote a value
            row["message"] = redact(row["message"])
        if row["readback"] is not None:
            row["readback"] = json.dumps(row["readback"])
        self.con.execute(f"INSERT INTO run_destinations (run_id, {', '.join(COLUMNS)}) "
                         f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                         [run_id, *(row[c] for c in COLUMNS)])
        rejects = list(rejects)
        if rejects:
            keys, reasons = zip(*rejects, strict=True)
            self.con.execute("INSERT INTO rejects SELECT ?, ?, unnest(?), unnest(?)",
                             [run_id, figures.name, list(keys), [one_line(r) for r in reasons]])
        self._committed()

    def last_readback(self, dest: str) -> dict[str, Any] | None:
        """The platform's own figures (size, match rate) from the last run that had them."""
        row = self.con.execute(
            "SELECT readback FROM run_destinations WHERE dest = ? AND readback IS NOT NULL "
            "ORDER BY run_id DESC LIMIT 1", [dest]).fetchone()
        return json.loads(row[0]) if row else None

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        runs = self.con.execute(
            "SELECT run_id, command, started_at, finished_at, as_of, status, exit_code FROM runs "
            "ORDER BY run_id DESC LIMIT ?", [limit]).fetchall()
        out = []
        for r in runs:
            dests = self.con.execute(
                "SELECT * FROM run_destinations WHERE run_id = ? ORDER BY dest", [r[0]])
            names = [d[0] for d in dests.description]
            rows = [{k: (json.loads(v) if k == "readback" and v else v)
                     for k, v in zip(names, d, strict=True) if k != "run_id"}
                    for d in dests.fetchall()]
            for d in rows:
                d["reject_reasons"] = self.reject_reasons(r[0], d["dest"])
            out.append({
                "run_id": r[0], "command": r[1], "started_at": _iso(r[2]),
                "finished_at": _iso(r[3]), "as_of": _iso(r[4]), "status": r[5],
                "exit_code": r[6], "destinations": rows,
            })
        return out

    def reject_reasons(self, run_id: int, dest: str) -> list[dict[str, Any]]:
        """A run's rejected and unsendable contacts of one destination, per reason: how many,
        and the first few contact keys."""
        rows = self.con.execute(
            f"SELECT reason, count(*), list(key ORDER BY key)[1:{KEY_SAMPLE}] FROM rejects "
            f"WHERE run_id = ? AND dest = ? GROUP BY reason ORDER BY count(*) DESC, reason",
            [run_id, dest]).fetchall()
        return [{"reason": r, "count": int(n), "keys": list(k)} for r, n, k in rows]


def _iso(v: datetime | None) -> str | None:
    return iso(v) if v else None
