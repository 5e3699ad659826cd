"""The history the HTML report reads: recorded runs, segment sizes per run, the migration
matrices of exclusive groups, the transitions alerts name, each destination's runs. The
writes are ``History.record_sizes`` and ``History.record_migrations``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import duckdb

#: in a migration matrix: not in any segment of the group (joined it, or left it)
NONE = ""

DEST_COLUMNS = ["run_id", "as_of", "started_at", "status", "segment", "desired", "adds",
                "removes", "updates", "rejected", "no_identifier", "deferred", "unchanged",
                "calls", "retries", "duration_s", "message", "readback"]


class ReportHistory:
    """The report's part of ``Store`` (``con`` is the store's)."""

    con: duckdb.DuckDBPyConnection

    def recorded_runs(self) -> list[dict[str, Any]]:
        """Runs that recorded segment sizes (not dry runs), oldest first."""
        rows = self.con.execute(
            "SELECT run_id, as_of, started_at, status FROM runs WHERE run_id IN "
            "(SELECT run_id FROM segment_sizes) ORDER BY run_id").fetchall()
        return [{"run_id": r, "as_of": a, "started_at": s, "status": st} for r, a, s, st in rows]

    def size_points(self, limit: int = 200
                    ) -> list[tuple[int, datetime, str, int, int, int | None]]:
        """(run_id, as_of, segment, matched, held_out, sent) of the last ``limit`` recorded runs."""
        return self.con.execute(
            "SELECT z.run_id, r.as_of, z.segment, z.matched, z.held_out, z.sent "
            "FROM segment_sizes z JOIN runs r USING (run_id) WHERE z.run_id IN "
            "(SELECT DISTINCT run_id FROM segment_sizes ORDER BY run_id DESC LIMIT ?) "
            "ORDER BY z.run_id, z.segment", [limit]).fetchall()

    def migration_matrix(self, run_id: int) -> dict[str, dict[tuple[str, str], int]]:
        """Group -> {(from, to): contacts} of one run (stays included)."""
        out: dict[str, dict[tuple[str, str], int]] = {}
        for grp, a, b, n in self.con.execute(
                "SELECT grp, from_segment, to_segment, contacts FROM group_migrations "
                "WHERE run_id = ?", [run_id]).fetchall():
            out.setdefault(grp, {})[(a, b)] = int(n)
        return out

    def migrations_since(self, since: datetime
                         ) -> tuple[dict[str, dict[tuple[str, str], int]], int]:
        """Group -> {(from, to): contacts} summed over the runs as of ``since`` or later (moves
        only: a contact who moved twice counts twice; stays are left out), and how many runs."""
        con = self.con
        runs = [r[0] for r in con.execute(
            "SELECT DISTINCT m.run_id FROM group_migrations m JOIN runs r USING (run_id) "
            "WHERE r.as_of >= ?", [since]).fetchall()]
        out: dict[str, dict[tuple[str, str], int]] = {}
        if runs:
            for grp, a, b, n in con.execute(
                    "SELECT grp, from_segment, to_segment, sum(contacts) FROM group_migrations "
                    "WHERE run_id IN (SELECT unnest(?)) AND from_segment <> to_segment "
                    "GROUP BY ALL", [runs]).fetchall():
                out.setdefault(grp, {})[(a, b)] = int(n)
        return out, len(runs)

    def transitions_since(self, pairs: list[tuple[str, str]], since: datetime
                          ) -> dict[tuple[str, str], tuple[int, int, datetime | None]]:
        """For each (from, to) pair: contacts moved in the last recorded run, in the runs as of
        ``since`` or later, and when it last happened (from the transitions alerts read)."""
        con = self.con
        last = con.execute("SELECT max(run_id) FROM segment_sizes").fetchone()[0]
        out = {}
        for a, b in pairs:
            row = con.execute(
                "SELECT coalesce(sum(contacts) FILTER (WHERE t.run_id = ?), 0), "
                "coalesce(sum(contacts) FILTER (WHERE r.as_of >= ?), 0), max(r.as_of) "
                "FROM transitions t JOIN runs r USING (run_id) "
                "WHERE from_segment = ? AND to_segment = ?", [last, since, a, b]).fetchone()
            out[(a, b)] = (int(row[0]), int(row[1]), row[2])
        return out


    def destination_runs(self, limit: int = 500) -> dict[str, list[dict[str, Any]]]:
        """Destination -> its last ``limit`` recorded runs, oldest first (``readback`` parsed)."""
        cols = ", ".join(f"r.{c}" if c in ("as_of", "started_at") else f"d.{c}"
                         for c in DEST_COLUMNS)
        rows = self.con.execute(
            f"SELECT d.dest, {cols} FROM run_destinations d JOIN runs r USING (run_id) "
            f"QUALIFY row_number() OVER (PARTITION BY d.dest ORDER BY d.run_id DESC) <= ? "
            f"ORDER BY d.dest, d.run_id", [limit]).fetchall()
        out: dict[str, list[dict[str, Any]]] = {}
        for dest, *row in rows:
            rec = dict(zip(DEST_COLUMNS, row, strict=True))
            rec["readback"] = json.loads(rec["readback"]) if rec["readback"] else None
            out.setdefault(dest, []).append(rec)
        return out
