"""The ledger: per destination, what crmsync last synced there (one row per contact, in a
``LedgerState``), and what the destination asked to remember (``dest_state``). The only SQL
over these tables is here.

The diff is desired minus ledger = adds, ledger minus desired = removes (mirror mode), a
changed fingerprint = update. Batches are written ahead (``intend``) and checkpointed after
each acknowledgement (``checkpoint``), so a crash or kill at any point followed by a re-run
converges with nothing lost and nothing sent twice that matters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import duckdb

from ...connectors.base import BatchResult, Op
from ..sql import lit


class _Store(Protocol):
    con: duckdb.DuckDBPyConnection

    def transaction(self, touched: tuple[str, str, list[Any]] | None = None) -> Any: ...

    def shared_table(self, table: str) -> str: ...

    def need_rows(self, table: str, where: str, via: Any = None) -> None: ...

    def _committed(self) -> None: ...


class LedgerState(StrEnum):
    """Where one contact stands with one destination."""

    member = "member"  #: the platform acknowledged it
    pending = "pending"  #: an add was sent, its answer never checkpointed (a crash)
    removing = "removing"  #: a remove was sent, its answer never checkpointed
    rejected = "rejected"  #: the platform refused the add (tried again when its value changes)
    preexisting = "preexisting"  #: the platform already had it before crmsync's add


def _in(*states: LedgerState) -> str:
    return "(" + ", ".join(lit(s.value) for s in states) + ")"


S = LedgerState
#: 'pending' / 'removing': a batch was sent but its ack never checkpointed, so the platform
#: may or may not hold them: they are added or removed again (idempotent on every platform)
UNSETTLED = _in(S.pending, S.removing)
KEPT = _in(S.member, S.preexisting)
HELD = _in(S.member, S.pending, S.removing)
FORGETTABLE = _in(S.rejected, S.preexisting)


@dataclass(frozen=True)
class SavedState:
    """What the store remembers of a destination between runs."""

    state: dict[str, Any]  #: what its ``open`` returned last time (e.g. the remote id)
    last_synced: datetime | None  #: the last run that pushed to it
    resync: bool  #: ``crmsync resync`` asked to reconcile it from the remote


@dataclass(frozen=True)
class Diff:
    """A destination's diff against its ledger: per op the SELECT of its rows (op, key,
    label, value, previous, fp), and the query counting desired, add, update, unchanged,
    remove, ledger (``counts``; or ``tally`` once the rows are a table)."""

    parts: dict[str, str]
    counts: str
    rest: str  #: SELECT desired, desired rejects not sent again, ledger members

    def tally(self, table: str) -> str:
        """``counts`` from the diff's rows made into ``table``: one join with the ledger (the
        rows') instead of two. Unchanged = desired less adds, updates and the rejects not
        sent again."""
        n = ", ".join(f"count(*) FILTER (WHERE op = {lit(op)})" for op in ("add", "update",
                                                                         "remove"))
        return (f"SELECT r.desired, c.a, c.u, r.desired - c.a - c.u - r.resting, c.r, r.members "
                f"FROM ({self.rest}) r, (SELECT {n} FROM {table}) c(a, u, r)")

    @property
    def rows(self) -> str:
        """Every row of the diff."""
        return self.only(set(self.parts))

    def only(self, ops: set[str]) -> str:
        """The rows of ``ops`` alone: the others need not be computed when ``counts`` found
        none of them (the update rows compare every member's fingerprint)."""
        parts = [sql for op, sql in self.parts.items() if op in ops]
        return " UNION ALL ".join(parts) if parts else f"{self.parts['add']} LIMIT 0"


class Ledger:
    """One destination's ledger in the store (``Store.ledger(name)``)."""

    def __init__(self, store: _Store, dest: str):
        self.store, self.dest, self.con = store, dest, store.con
        self._flying = 0  # batches intended and not yet checkpointed or restored

    def _rows(self) -> str:
        return f"(SELECT * FROM ledger WHERE dest = {lit(self.dest)})"

    # ------------------------------------------------------------ diff
    def diff(self, desired: str, value: str, fp: str, mirror: bool,
             rows: str | None = None) -> Diff:
        """``desired``: a SELECT of key and label (and what ``value`` / ``fp`` read, as
        columns of ``d``); ``value`` and ``fp``: SQL of what is sent and its fingerprint.
        ``rows``: the destination's ledger rows as another database holds them (the same
        diff, as SQL Postgres runs too: ``engine: postgres``); default the store's."""
        led, d = rows or self._rows(), f"({desired}) d"

        def add(fp: str) -> str:
            return (f"l.key IS NULL OR l.state IN {UNSETTLED} "
                    f"OR (l.state = {lit(S.rejected.value)} AND l.fp IS DISTINCT FROM {fp})")

        kept = f"l.state IN {KEPT}"
        gone = (f"FROM {led} l ANTI JOIN {d} USING (key) WHERE l.state IN {HELD}" if rows is None
                else f"FROM {led} l WHERE l.state IN {HELD} AND NOT EXISTS (SELECT 1 FROM {d} "
                     f"WHERE d.key = l.key)")
        parts = {
            "add": f"SELECT 'add' AS op, d.key, d.label, {value} AS value, NULL::VARCHAR AS "
                   f"previous, {fp} AS fp FROM {d} LEFT JOIN {led} l USING (key) "
                   f"WHERE {add(fp)}",
            "update": f"SELECT 'update' AS op, d.key, d.label, {value} AS value, l.value AS "
                      f"previous, {fp} AS fp FROM {d} JOIN {led} l USING (key) "
                      f"WHERE {kept} AND l.fp IS DISTINCT FROM {fp}"}
        if mirror:
            parts["remove"] = (f"SELECT 'remove' AS op, l.key, NULL::VARCHAR AS label, "
                               f"NULL::VARCHAR AS value, l.value AS previous, l.fp {gone}")
        # the fingerprint only where the ledger has the contact (CASE evaluates lazily)
        matched = (f"SELECT l.key, l.state, l.fp, CASE WHEN l.key IS NOT NULL THEN {fp} END "
                   f"AS dfp FROM {d} LEFT JOIN {led} l USING (key)")
        members = f"(SELECT count(*) FROM {led} AS _l WHERE state = {lit(S.member.value)})"
        counts = f"""SELECT count(*), count(*) FILTER (WHERE {add('dfp')}),
              count(*) FILTER (WHERE {kept} AND l.fp IS DISTINCT FROM dfp),
              count(*) FILTER (WHERE {kept} AND l.fp IS NOT DISTINCT FROM dfp),
              (SELECT count(*) {gone}) * {int(mirror)}, {members}
            FROM ({matched}) l"""
        rejected = (f"(SELECT key, fp FROM {led} AS _l WHERE state = "
                    f"{lit(S.rejected.value)})")
        rest = (f"SELECT count(*) AS desired, count(*) FILTER (WHERE l.key IS NOT NULL AND "
                f"l.fp IS NOT DISTINCT FROM (CASE WHEN l.key IS NOT NULL THEN {fp} END)) AS "
                f"resting, {members} AS members FROM {d} LEFT JOIN {rejected} l USING (key)")
        return Diff(parts, counts, rest)

    # ------------------------------------------------------------ engine: postgres
    def in_database(self) -> str:
        """This destination's rows (key, fp, value, state) as the shared store's database
        holds them, for ``diff(rows=...)`` run there."""
        return (f"(SELECT key, fp, value, state FROM {self.store.shared_table('ledger')} "
                f"AS _l WHERE dest = {lit(self.dest)})")

    def forgettable_in_database(self, desired: str) -> str:
        """Postgres SQL: the keys ``drop_gone`` forgets given ``desired`` (a table of the
        desired keys in that database)."""
        return (f"SELECT l.key FROM {self.in_database()} l WHERE l.state IN {FORGETTABLE} "
                f"AND NOT EXISTS (SELECT 1 FROM {desired} d WHERE d.key = l.key)")

    def kept_but(self, gone: str) -> str:
        """A SELECT of the ledger's keys but those of table ``gone``: the ``desired`` of
        ``drop_gone`` when what it forgets was found elsewhere."""
        return (f"SELECT key FROM ledger WHERE dest = {lit(self.dest)} "
                f"AND key NOT IN (SELECT key FROM {gone})")

    def need(self, keys: str | None = None, via: Any = None) -> None:
        """Hold this destination's rows (those whose key ``keys``, SQL of the shared store's
        database on connection ``via``, selects; None: all) in the store's connection
        (``Store.need_rows``): before anything reads or rewrites them there."""
        where = f"dest = {lit(self.dest)}" + (f" AND key IN ({keys})" if keys else "")
        self.store.need_rows("ledger", where, via)

    def has_rows(self) -> bool:
        """Whether the destination has a ledger row (none: before its first fill)."""
        return bool(self.con.execute("SELECT count(*) FROM (SELECT 1 FROM ledger WHERE "
                                     "dest = ? LIMIT 1)", [self.dest]).fetchone()[0])

    def state_of(self, key: str) -> LedgerState | None:
        self.need(lit(key))
        row = self.con.execute("SELECT state FROM ledger WHERE dest = ? AND key = ?",
                               [self.dest, key]).fetchone()
        return LedgerState(row[0]) if row else None

    # ------------------------------------------------------------ push
    def unacked(self, op: Op, rows: str, params: list[Any]) -> set[str]:
        """Keys of an add batch (``rows``: ``FROM ... WHERE`` of the diff) that an earlier run
        sent without seeing the answer."""
        if op is not Op.ADD:
            return set()
        return {k for (k,) in self.con.execute(
            f"SELECT key FROM ledger WHERE dest = ? AND state = 'pending' AND key IN "
            f"(SELECT key {rows})", [self.dest, *params]).fetchall()}

    def intend(self, op: Op, rows: str, params: list[Any], now: datetime) -> None:
        """Write-ahead: mark a batch as in flight before sending it, so that a crash between
        the platform applying it and our checkpoint is repaired by the next run. The batch's
        rows as they were are kept aside (temp table ``_inflight``, beside those of the
        batches still in flight: their keys differ) for ``restore``."""
        with self.store.transaction(self._touched(rows, params)) as con:  # a commit point
            kept = f"SELECT * FROM ledger WHERE dest = ? AND key IN (SELECT key {rows})"
            con.execute(f"INSERT INTO _inflight {kept}" if self._flying else
                        f"CREATE OR REPLACE TEMP TABLE _inflight AS {kept}",
                        [self.dest, *params])
            if op is Op.ADD:
                self._put(rows, params, S.pending, now)
            elif op is Op.REMOVE:
                con.execute(f"UPDATE ledger SET state = 'removing' WHERE dest = ? AND key IN "
                            f"(SELECT key {rows})", [self.dest, *params])
        self._flying += 1

    def _put(self, rows: str, params: list[Any], state: LedgerState, now: datetime,
             kept: str = "TRUE") -> None:
        """The batch's rows (``rows``: ``FROM ... WHERE`` of the diff; those ``kept`` selects)
        into the ledger as ``state``, set-based: the keys the ledger holds updated in place,
        the others inserted, the batch's other keys deleted. (In place, not DELETE and
        re-INSERT: that rewrites every row of an update of 1,000,000 members.)"""
        con, dest = self.con, self.dest
        batch = f"(SELECT key, fp, value {rows} AND {kept})"
        if self.has_rows():  # none: the destination's first fill
            if kept != "TRUE":
                con.execute(f"DELETE FROM ledger WHERE dest = ? AND key IN (SELECT key {rows} "
                            f"AND NOT ({kept}))", [dest, *params])
            con.execute(f"UPDATE ledger SET fp = b.fp, value = b.value, state = ?, "
                        f"synced_at = ? FROM {batch} b WHERE ledger.dest = ? AND "
                        f"ledger.key = b.key", [state.value, now, *params, dest])
            batch = (f"(SELECT b.* FROM {batch} b ANTI JOIN (SELECT key FROM ledger WHERE "
                     f"dest = ?) l USING (key))")
            params = [*params, dest]
        con.execute(f"INSERT INTO ledger SELECT ?, key, fp, value, ?, ? FROM {batch} AS _b",
                    [dest, state.value, now, *params])

    def after(self, rows: str) -> str:
        """A SELECT of (key, value) of every member a ``whole`` destination holds once the
        batch ``rows`` (``FROM ... WHERE`` of the diff, literals inline, any ops) is applied:
        the ledger's rows but its rejects, the batch's keys replaced by its adds and updates
        (removes left out). ``checkpoint`` then makes the ledger exactly that."""
        return (f"SELECT l.key, l.value FROM (SELECT key, value FROM ledger WHERE dest = "
                f"{lit(self.dest)} AND state <> {lit(S.rejected.value)}) l ANTI JOIN "
                f"(SELECT key {rows}) b USING (key) "
                f"UNION ALL SELECT key, value {rows} AND op <> 'remove'")

    def _touched(self, rows: str, params: list[Any]) -> tuple[str, str, list[Any]]:
        """The ledger rows a batch's writes can change (see ``Store.transaction``)."""
        return ("ledger", f"dest = ? AND key IN (SELECT key {rows})", [self.dest, *params])

    def restore(self, rows: str, params: list[Any], keys: list[str] | None = None) -> None:
        """Put the batch's rows (or only ``keys`` of it) back as ``intend`` found them: the
        platform refused them before applying anything."""
        with self.store.transaction(self._touched(rows, params)):
            self._restore(*(("(SELECT unnest(?))", [keys]) if keys is not None else
                            (f"(SELECT key {rows})", params)))
        self._flying = max(0, self._flying - 1)

    def _restore(self, which: str, params: list[Any]) -> None:
        self.con.execute(f"DELETE FROM ledger WHERE dest = ? AND key IN {which}",
                         [self.dest, *params])
        self.con.execute(f"INSERT INTO ledger SELECT * FROM _inflight WHERE dest = ? AND key "
                         f"IN {which}", [self.dest, *params])

    def checkpoint(self, op: Op, rows: str, params: list[Any], batch: list[tuple] | None,
                   result: BatchResult, now: datetime,
                   also: Callable[[], None] | None = None,
                   state: Mapping[str, Any] | None = None) -> None:
        """Record a batch's acknowledged outcome (``batch``: its rows as fetched, key, label,
        value, previous, fp; None: every row applied as sent; ``Op.REPLACE``: a ``whole``
        destination's batch of any ops, the ledger made what ``after`` gave); ``also`` runs
        in the same transaction (the run's history figures), and ``state`` (what the
        destination remembers, e.g. its file's checksum) is saved in it.
        Rows of an add that failed transiently (deferred, or in none of the maps) were not
        applied: they go back as ``intend`` found them, to be sent next run."""
        con, name = self.con, self.dest
        self._flying = max(0, self._flying - 1)
        whole = batch is None or (len(result.done) == len(batch)
                                  and result.done.keys() == {r[0] for r in batch})
        # the destination's state is another table: the shared store then compares all
        touched = None if state is not None else self._touched(rows, params)
        with self.store.transaction(touched):
            if also is not None:
                also()
            if state is not None:
                self._save(state, None)
            if op is Op.REPLACE:
                self._put(rows, params, S.member, now, "op <> 'remove'")
                return
            if whole and op is Op.REMOVE:
                con.execute(f"DELETE FROM ledger WHERE dest = ? AND key IN "
                            f"(SELECT key {rows})", [name, *params])
                return
            if whole and not result.preexisting and not any(result.done.values()):
                self._put(rows, params, S.member, now)  # the batch as sent, set-based
                return
            assert batch is not None
            if op is Op.REMOVE:
                if result.done:
                    con.execute("DELETE FROM ledger WHERE dest = ? AND key IN "
                                "(SELECT unnest(?))", [name, list(result.done)])
                kept = list(result.rejected) + list(result.deferred)
                if kept:  # the platform refused: they are still members
                    con.execute("UPDATE ledger SET state = 'member' WHERE dest = ? AND key IN "
                                "(SELECT unnest(?))", [name, kept])
                return
            sent = {k: (v, fp) for k, _lb, v, _pv, fp in batch}  # key -> (value, fp)
            if result.done:
                keys = list(result.done)
                vals = [v if v is not None else sent[k][0] for k, v in result.done.items()]
                fps = [sent[k][1] for k in keys]
                states = [S.preexisting.value if k in result.preexisting else S.member.value
                          for k in keys]
                self._forget(keys)
                con.execute("INSERT INTO ledger SELECT ?, unnest(?), unnest(?), unnest(?), "
                            "unnest(?), ?", [name, keys, fps, vals, states, now])
            rej = [k for k in result.rejected if op is Op.ADD]
            if rej:
                self._forget(rej)
                con.execute("INSERT INTO ledger SELECT ?, unnest(?), unnest(?), NULL, "
                            "'rejected', ?", [name, rej, [sent[k][1] for k in rej], now])
            left = [k for k in sent if k not in result.done and k not in result.rejected]
            if left and op is Op.ADD:
                self._restore("(SELECT unnest(?))", [left])

    def _forget(self, keys: list[str]) -> None:
        """The ledger's rows of ``keys`` deleted, before rows of theirs are inserted (the
        ledger has no index to replace by: one row per key is kept by its writes)."""
        self.con.execute("DELETE FROM ledger WHERE dest = ? AND key IN (SELECT unnest(?))",
                         [self.dest, keys])

    def drop_gone(self, desired: str) -> None:
        """Forget rows that only remembered rejects or pre-existing members no longer
        desired (``desired``: a SELECT with a ``key`` column)."""
        kept = f"dest = ? AND state IN {FORGETTABLE}"
        if not self.con.execute(f"SELECT count(*) FROM ledger WHERE {kept}",
                                [self.dest]).fetchone()[0]:
            return  # nothing to forget: the desired set is not read again
        with self.store.transaction(("ledger", kept, [self.dest])) as con:
            con.execute(f"DELETE FROM ledger WHERE {kept} AND key NOT IN "
                        f"(SELECT key FROM ({desired}))", [self.dest])

    def replace(self, keys: Iterable[str], fp_sql: str, now: datetime,
                values: dict[str, str] | None = None) -> None:
        """After ``resync``: the remote's members become the ledger; with ``values`` (key ->
        the value the remote holds), each with that value and its fingerprint ``md5``."""
        keys = list(keys)
        self.need()
        with self.store.transaction() as con:
            con.execute("DELETE FROM ledger WHERE dest = ?", [self.dest])
            if values:
                con.execute("INSERT INTO ledger SELECT ?, k, md5(v), v, 'member', ? FROM "
                            "(SELECT unnest(?) AS k, unnest(?) AS v)",
                            [self.dest, now, keys, [values[k] for k in keys]])
            elif keys:
                con.execute(f"INSERT INTO ledger SELECT ?, unnest(?), {fp_sql}, NULL, 'member', "
                            f"?", [self.dest, keys, now])

    # ------------------------------------------------------------ remembered state
    def saved(self) -> SavedState:
        row = self.con.execute("SELECT state, last_synced_at, resync FROM dest_state "
                               "WHERE dest = ?", [self.dest]).fetchone()
        if not row:
            return SavedState({}, None, False)
        return SavedState(json.loads(row[0]) if row[0] else {}, row[1], bool(row[2]))

    def save(self, state: dict[str, Any], synced_at: datetime | None = None) -> None:
        """Remember what the destination's ``open`` returned (a resync asked for is done)."""
        self._save(state, synced_at)
        self.store._committed()

    def _save(self, state: Mapping[str, Any], synced_at: datetime | None) -> None:
        self.con.execute(
            "INSERT INTO dest_state VALUES (?, ?, ?, 1, FALSE) ON CONFLICT (dest) DO UPDATE SET "
            "state = excluded.state, last_synced_at = coalesce(excluded.last_synced_at, "
            "dest_state.last_synced_at), version = dest_state.version + 1, resync = FALSE",
            [self.dest, json.dumps(dict(state)), synced_at])

    def forget(self) -> int:
        """``resync``: drop the ledger and ask the next run to reconcile from the remote."""
        self.need()
        with self.store.transaction() as con:
            n = con.execute("SELECT count(*) FROM ledger WHERE dest = ?",
                            [self.dest]).fetchone()[0]
            con.execute("DELETE FROM ledger WHERE dest = ?", [self.dest])
            con.execute("UPDATE dest_state SET last_synced_at = NULL, version = version + 1, "
                        "resync = TRUE WHERE dest = ?", [self.dest])
        return int(n)
