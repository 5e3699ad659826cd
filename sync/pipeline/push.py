"""Per destination: desired members, the diff against the ledger, and the batched push.

Desired = members of the segment (or group) minus holdout, suppressed, no consent, no usable
identifier. Diff: desired minus ledger = adds; ledger minus desired = removes (mirror mode);
a changed value (label or identifiers) = update. Nothing changed means no call at all.
The ledger is checkpointed after every acknowledged batch, so a crash or kill at any point
followed by a re-run converges with nothing lost and nothing sent twice that matters.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlglot import exp

from ...connectors.base import BatchResult, Change, Destination, Membership, Op
from ..errors import DestinationStopped, Reject
from ..mapping.model import DestinationConfig, FieldType
from ..segments.engine import Evaluation
from ..sql import lit, q
from ..sql.portable import col as pcol
from ..store.figures import DestinationFigures
from ..store.typed import typed


@dataclass
class DestPlan:
    """A destination's plan: its figures (``DestinationFigures``, SPEC's plan figures) and
    the diff rows (op, key, label, value, previous, fp), made on first use of ``diff()``."""

    figures: DestinationFigures
    desired_sql: str  #: SELECT of the contacts to send (key, label, value, fp)
    diff_table: str
    diff_sql: str
    made: bool = False

    def diff(self, con: Any) -> str:
        """The diff as a temp table, made on first use (``plan`` alone only counts it)."""
        if not self.made:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {self.diff_table} AS {self.diff_sql}")
            self.made = True
        return self.diff_table


@dataclass
class Answer:
    """A written batch's outcome: the platform's acknowledgement, or the stop ``write``
    raised; ``retried``: a retry of it followed an attempt that may have been applied."""

    result: BatchResult | DestinationStopped
    retried: bool

    @property
    def stopped(self) -> bool:
        return isinstance(self.result, DestinationStopped)


T = TypeVar("T")


def write_batches(dest: Destination, op: Op, batches: Iterable[tuple[T, list[Change]]],
                  settle: Callable[[T, Answer], None]) -> None:
    """``dest.write`` each of ``batches`` (a tag and its changes, all of ``op``), up to
    ``dest.concurrency`` at once on as many threads; each answer is given to ``settle``
    with its tag on the calling thread (only it touches the store), in the order sent. The
    next batch is drawn only when one may go. A stop: no batch goes after it, those in
    flight are answered and settled, then the stop is raised."""
    workers, meter = max(1, dest.concurrency), dest.ctx.meter

    def write(changes: list[Change]) -> Answer:
        before = meter.mine("uncertain")
        try:
            result: BatchResult | DestinationStopped = dest.write(op, changes)
        except DestinationStopped as exc:
            result = exc
        return Answer(result, meter.mine("uncertain") > before)

    flight: deque[tuple[T, Future[Answer]]] = deque()  # sent, in order, not yet settled
    stop: DestinationStopped | None = None

    def land() -> None:
        nonlocal stop
        tag, future = flight.popleft()
        answer = future.result()
        settle(tag, answer)
        if isinstance(answer.result, DestinationStopped):
            stop = stop or answer.result

    pool = ThreadPoolExecutor(workers, "crmsync-write") if workers > 1 else None
    try:
        for tag, changes in batches:
            if pool is not None:
                flight.append((tag, pool.submit(write, changes)))
            else:
                done: Future[Answer] = Future()
                done.set_result(write(changes))
                flight.append((tag, done))
            while flight and (len(flight) >= workers or flight[0][1].done()):
                land()
            if stop is not None:
                break
        while flight:
            land()
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if stop is not None:
        raise stop


@dataclass
class _Marked:
    """A batch marked in the ledger (write-ahead) to be sent: its op, its rows, and its keys
    an earlier run sent without seeing the answer."""

    op: Op
    rng: Batch
    unacked: set[str]


@dataclass
class Batch:
    """One batch of the diff: its rows as SQL (``FROM ... WHERE``) with their parameters, and
    as fetched (key, label, value, previous, fp)."""

    rows: str
    params: list[Any]
    batch: list[tuple]

    def keys(self) -> set[str]:
        return {r[0] for r in self.batch}


_OPS = (Op.ADD, Op.UPDATE, Op.REMOVE)
#: the figure (``DestinationFigures``) counting each op's rows done
_DONE = {Op.ADD: "adds", Op.REMOVE: "removes", Op.UPDATE: "updates"}


def _chunks(rows: list, size: int) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


@dataclass
class Candidates:
    """SQL over the evaluation's ``eval_<source>`` view describing one destination's
    contacts: which segment labels them, held out, suppressed, consent, an identifier."""

    source: str
    member: str  # cheap and selective: tested first
    label: str
    held: str
    sup: str
    consent: str
    has_id: str
    id_cols: dict[str, str]  # identifier name -> SQL (NULL when not usable)
    raw_id: str = "FALSE"  # SQL: some identifier has a value, usable or not

    @classmethod
    def of(cls, ev: Evaluation, cfg: DestinationConfig) -> Candidates:
        project, m = ev.project, ev.project.mapping
        segs = project.segments_of(cfg)
        source = project.source_of("segments", segs[0])
        label = "CASE " + " ".join(
            f"WHEN {q('m:' + s)} AND NOT {q('h:' + s)} THEN {lit(s)}" for s in segs) + " END"
        held = " OR ".join(f"({q('m:' + s)} AND {q('h:' + s)})" for s in segs)
        sups = [s for s, c in m.suppressions.items()
                if project.source_of("suppressions", s) == source
                and (c.scope is None or cfg.name in c.scope)]
        sup = " OR ".join(q("s:" + s) for s in sups) or "FALSE"
        if cfg.consent:
            ftype = ev.fields[source].get(cfg.consent, FieldType.string)
            col = q(cfg.consent)
            consent = (f"coalesce({col}, FALSE)" if ftype is FieldType.bool else
                       f"coalesce({ev.sql(typed(exp.cast(pcol(cfg.consent), 'varchar'), FieldType.bool))}, FALSE)")
        else:
            consent = "TRUE"
        ident = m.sources[source].identity.fields()
        id_cols = {name: ev.usable(source, ev.id_column(source, fld))
                   for name, fld in ident.items()}
        wanted = [i for i in cfg.identifiers if i in id_cols]
        has_id = (" OR ".join(f"{id_cols[i]} IS NOT NULL" for i in wanted) or "FALSE") \
            if cfg.identifiers else "TRUE"
        raw_id = " OR ".join(f"{q(ev.id_column(source, ident[i]))} IS NOT NULL"
                             for i in wanted) or "FALSE"
        member = "(" + " OR ".join(q("m:" + s) for s in segs) + ")"
        return cls(source, member, label, f"({held})", f"({sup})", f"({consent})", f"({has_id})",
                   id_cols, f"({raw_id})")

    def counts(self) -> list[str]:
        """Aggregates: held out, suppressed, no consent, no identifier."""
        sent = f"{self.member} AND NOT {self.held} AND ({self.label}) IS NOT NULL"
        return [f"count(*) FILTER (WHERE {self.member} AND {self.held})",
                f"count(*) FILTER (WHERE {sent} AND {self.sup})",
                f"count(*) FILTER (WHERE {sent} AND NOT {self.sup} AND NOT {self.consent})",
                f"count(*) FILTER (WHERE {sent} AND NOT {self.sup} AND {self.consent} "
                f"AND NOT {self.has_id})"]

    def sendable(self) -> str:
        """Members, not held out, not suppressed, with consent (an identifier aside)."""
        return (f"{self.member} AND ({self.label}) IS NOT NULL AND NOT {self.held} "
                f"AND NOT {self.sup} AND {self.consent}")

    def desired(self, table: str) -> str:
        """SELECT key, label and the ``i:<identifier>`` columns of the contacts to send."""
        ids = "".join(f", {c} AS {q('i:' + n)}" for n, c in self.id_cols.items())
        return (f"SELECT _key AS key, {self.label} AS label{ids} FROM {table} "
                f"WHERE {self.sendable()} AND {self.has_id}")


def sent_counts(ev: Evaluation, cfgs: list[DestinationConfig]) -> dict[str, int]:
    """Per segment, its members that at least one of its destinations (``cfgs``) receives:
    not held out, not suppressed, with consent and an identifier."""
    out: dict[str, int] = {}
    cands = [Candidates.of(ev, d) for d in cfgs]
    for source in {c.source for c in cands}:
        union = " UNION ALL ".join(f"SELECT key, label FROM ({c.desired(ev.table(source))}) "
                                   f"AS _d" for c in cands if c.source == source)
        for label, n in ev.con.execute(f"SELECT label, count(DISTINCT key) FROM ({union}) "
                                       f"AS _u GROUP BY label").fetchall():
            out[label] = int(n)
    return out


def count_all(ev: Evaluation, cfgs: list[DestinationConfig]) -> None:
    """The held-out / suppressed / no-consent / no-identifier figures of many destinations,
    one scan per source; ``DestinationSync.plan`` then reads them from ``ev.dest_counts``
    (destinations already counted in this evaluation are not counted again)."""
    by_source: dict[str, list[tuple[str, Candidates]]] = {}
    for cfg in (c for c in cfgs if c.name not in ev.dest_counts):
        c = Candidates.of(ev, cfg)
        by_source.setdefault(c.source, []).append((cfg.name, c))
    for source, items in by_source.items():
        row = ev.con.execute(f"SELECT {', '.join(a for _, c in items for a in c.counts())} "
                             f"FROM {ev.table(source)}").fetchone()
        for i, (name, _) in enumerate(items):
            ev.dest_counts[name] = tuple(int(x) for x in row[4 * i:4 * i + 4])


class DestinationSync:
    """Diff and push for one destination within one evaluation."""

    def __init__(self, ev: Evaluation, cfg: DestinationConfig, dest: Destination, index: int):
        self.ev, self.cfg, self.dest = ev, cfg, dest
        self.con = ev.con
        self.t = f"_d{index}"  # temp table prefix
        self.cands = Candidates.of(ev, cfg)
        self.source = self.cands.source
        self.source_cfg = ev.project.mapping.sources[self.source]
        self.ledger = ev.store.ledger(cfg.name)

    # ------------------------------------------------------------ desired + diff
    def plan(self, figures: DestinationFigures | None = None) -> DestPlan:
        """The desired set's figures and diff counts (into ``figures``, made if None). Once
        the destination has a ledger, the diff rows are made with them (one join with the
        ledger, cheaper than counting alone: they are few); before its first fill they are
        made on first use of ``DestPlan.diff`` (every desired member is an add: a plan that
        is only printed never computes their values)."""
        cfg, con, t = self.cfg, self.con, self.t
        p = self._figures(figures)
        base = self.cands.desired(self.ev.table(self.source))
        icols = {n: q("i:" + n) for n in self.cands.id_cols}
        sent = self._value_fp(icols, "duckdb")
        if sent is not None:
            value, fp = sent
        else:  # encoded in Python, through the identity cache
            self._encode_python(base, icols, p)
            base, value, fp = f"SELECT * FROM {t}_desired", "d.value", "d.fp"
        diff = self.ledger.diff(base, value, fp, cfg.mode == "mirror")
        made = self.ledger.has_rows()
        if made:  # the rows, op by op (one join in memory at a time), and counts from them
            first, *rest = diff.parts.values()
            con.execute(f"CREATE OR REPLACE TEMP TABLE {t}_diff AS {first}")
            for part in rest:
                con.execute(f"INSERT INTO {t}_diff {part}")
            row = con.execute(diff.tally(f"{t}_diff")).fetchone()
        else:  # a first fill: every desired member is an add, counted without its value
            row = con.execute(diff.counts).fetchone()
        p.desired, p.add, p.update, p.unchanged, p.remove, p.ledger = (int(x) for x in row)
        # the diff rows of the ops counted (the store does not change before they are made)
        ops = {op for op, n in (("add", p.add), ("update", p.update), ("remove", p.remove))
               if n}
        return DestPlan(p, base, f"{t}_diff", diff.only(ops), made=made)

    def _figures(self, figures: DestinationFigures | None) -> DestinationFigures:
        """``figures`` (made if None) marked planned, with the destination's held-out,
        suppressed, no-consent and no-identifier counts (``count_all``)."""
        cfg, ev = self.cfg, self.ev
        p = figures or DestinationFigures(cfg.name, cfg.segment, cfg.group)
        p.planned, p.rejects = True, []
        if cfg.name not in ev.dest_counts:
            count_all(ev, [cfg])
        p.held_out, p.suppressed, p.no_consent, p.no_identifier = ev.dest_counts[cfg.name]
        return p

    def _value_fp(self, icols: dict[str, str], dialect: str) -> tuple[str, str] | None:
        """SQL of what is sent and its fingerprint over the desired rows ``d`` (``icols``:
        identifier name -> its column there), in ``dialect``; None: the destination
        encodes its identifiers in Python (``encode``)."""
        kind = self.dest.value
        if kind == "none":
            return "''", "''"
        if kind == "label":
            return "d.label", "d.label"
        sql = self.dest.encode_sql(icols, dialect)
        return (sql, f"md5({sql})") if sql is not None else None

    def encode(self, ident: str) -> tuple[str | None, str | None]:
        """One identifier input (JSON of the identifier values) as the destination encodes
        it: (value, None), or (None, why it was refused)."""
        region = self.source_cfg.identity.phone_region
        try:
            return self.dest.encode({**json.loads(ident), "phone_region": region}), None
        except Reject as exc:
            return None, exc.reason

    def encoder_id(self) -> str:
        return f"{self.cfg.type}:{','.join(self.cfg.identifiers)}"

    def _encode_python(self, base: str, icols: dict[str, str], p: DestinationFigures
                       ) -> None:
        """Identity destinations that hash in Python: encode each distinct new input once,
        through the store's cache, then join."""
        con, t, enc = self.con, self.t, self.encoder_id()
        struct = "{" + ", ".join(f"{lit(n)}: {c}" for n, c in icols.items()) + "}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {t}_in AS SELECT key, label, "
                    f"to_json({struct}) AS ident, md5(to_json({struct})) AS fp FROM ({base})")
        cache = self.ev.store.identity_cache(enc)
        cache.fill(f"{t}_in", self.encode)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {t}_desired AS {cache.encoded(f'{t}_in')}")
        rejected = cache.refused(f"{t}_in")
        p.no_identifier += len(rejected)
        p.rejects = [(k, f"no_identifier: {r}") for k, r in rejected]

    # ------------------------------------------------------------ push
    def push(self, plan: DestPlan, now: datetime, run_id: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> DestinationFigures:
        """Send the diff in batches (up to the destination's ``concurrency`` at once,
        ``write_batches``); checkpoint the ledger after each acknowledged batch (and,
        with ``run_id``, the run's history figures in the same transaction;
        ``progress(rows sent, rows to send)`` after each). Returns the plan's figures with
        what was sent."""
        out = plan.figures
        out.rejects = [*self.without_identifier(), *out.rejects]
        total, sent = out.add + out.update + out.remove, 0
        store, name = self.ev.store, self.cfg.name
        if run_id is not None:
            store.begin_destination(run_id, name, self.cfg.segment or self.cfg.group)
        if self.dest.whole:
            self._push_whole(plan, now, run_id, progress)
            self.ledger.drop_gone(plan.desired_sql)
            return out
        for op in _OPS:
            rows = self.con.execute(
                f"SELECT key, label, value, previous, fp FROM {plan.diff(self.con)} WHERE op = ? "
                f"ORDER BY key", [op.value]).fetchall()

            def marked(op: Op = op, rows: list[tuple] = rows
                       ) -> Iterator[tuple[_Marked, list[Change]]]:
                for batch in _chunks(rows, self.dest.batch_size):
                    # the batch's rows of the diff, by key range (rows are in key order): the
                    # ledger is written from the store's own rows, not from Python lists
                    rng = Batch(f"FROM {plan.diff(self.con)} WHERE op = ? AND key BETWEEN ? "
                                f"AND ?", [op.value, batch[0][0], batch[-1][0]], batch)
                    unacked = self.ledger.unacked(op, rng.rows, rng.params)
                    self.ledger.intend(op, rng.rows, rng.params, now)  # write-ahead
                    yield _Marked(op, rng, unacked), [Change(k, lb, v, pv)
                                                      for k, lb, v, pv, _ in batch]

            def settle(m: _Marked, answer: Answer) -> None:
                nonlocal sent
                self._settle(m, answer, out, now, run_id)
                sent += len(m.rng.batch)
                if progress is not None and not answer.stopped:
                    progress(sent, max(total, sent))

            write_batches(self.dest, op, marked(), settle)
        self.ledger.drop_gone(plan.desired_sql)
        return out

    def _settle(self, m: _Marked, answer: Answer, out: DestinationFigures, now: datetime,
                run_id: int | None) -> None:
        """A written batch's answer into the ledger (its checkpoint) and the figures; a stop
        rolls its marks back when it was refused before it was applied."""
        result, op, rng, store, name = answer.result, m.op, m.rng, self.ev.store, self.cfg.name
        if isinstance(result, DestinationStopped):
            if not result.applied and not answer.retried:
                self.ledger.restore(rng.rows, rng.params)  # refused before applied
            return
        if result.preexisting:
            # "already a member" after a try whose answer was lost (a retry after an answer
            # that may have been applied, or a run that crashed after sending): crmsync's own
            # add, most likely. The answers of a retry after a throttled (not applied) try
            # are believed.
            result.preexisting -= set(result.preexisting) if answer.retried else m.unacked

        def recorded() -> None:
            store.progress(run_id, name, op.value, len(result.done), len(result.rejected),
                           len(result.deferred))

        self.ledger.checkpoint(op, rng.rows, rng.params, rng.batch, result, now,
                               recorded if run_id is not None else None)
        setattr(out, _DONE[op], getattr(out, _DONE[op]) + len(result.done))
        out.rejected += len(result.rejected)
        out.deferred += len(result.deferred)
        out.rejects += sorted(result.rejected.items())
        out.rejects += [(k, f"deferred: {r}") for k, r in sorted(result.deferred.items())]

    def _batches(self, diff: str) -> Iterator[tuple[str, dict[Op, int]]]:
        """The diff in batches of at most ``batch_size`` rows of any op, by key range: each
        as ``FROM ... WHERE`` (literals inline) and its rows per op; only the ranges' bounds
        and counts leave the store."""
        counts = ", ".join(f"count(*) FILTER (WHERE op = {lit(op.value)})" for op in _OPS)
        (n,) = self.con.execute(f"SELECT count(*) FROM {diff}").fetchone()
        if not n:
            return
        if n <= self.dest.batch_size:
            row = self.con.execute(f"SELECT {counts} FROM {diff}").fetchone()
            yield f"FROM {diff} WHERE TRUE", dict(zip(_OPS, map(int, row), strict=True))
            return
        for lo, hi, *row in self.con.execute(
                f"SELECT min(key), max(key), {counts} FROM (SELECT key, op, (row_number() "
                f"OVER (ORDER BY key) - 1) // ? AS b FROM {diff}) GROUP BY b ORDER BY b",
                [self.dest.batch_size]).fetchall():
            yield (f"FROM {diff} WHERE key BETWEEN {lit(lo)} AND {lit(hi)}",
                   dict(zip(_OPS, map(int, row), strict=True)))

    def _push_whole(self, plan: DestPlan, now: datetime, run_id: int | None,
                    progress: Callable[[int, int], None] | None) -> None:
        """A ``whole`` destination (a file replaced atomically): per batch, the membership it
        leads to (``Ledger.after``) is staged and written whole, then the ledger is made
        that membership set-based, with the destination's state (the file's checksum) in
        the same transaction. No write-ahead marks: a run killed before the checkpoint left
        either the old file, whose checksum the store still has (the batch is sent again),
        or the new one, which the next run's ``open`` sees changed and reconciles from."""
        out, store, name = plan.figures, self.ev.store, self.cfg.name
        total, sent = out.add + out.update + out.remove, 0
        for rows, n in self._batches(plan.diff(self.con)):
            self.dest.stage(Membership(self.con, self.ledger.after(rows)))
            try:
                self.dest.write(Op.REPLACE, [])
            finally:
                self.dest.stage(None)

            def recorded(n: dict[Op, int] = n) -> None:
                for op, k in n.items():
                    if k:
                        store.progress(run_id, name, op.value, k, 0, 0)

            self.ledger.checkpoint(Op.REPLACE, rows, [], None, BatchResult(), now,
                                   recorded if run_id is not None else None,
                                   self.dest.remember())
            sent += sum(n.values())
            if progress is not None:
                progress(sent, max(total, sent))
            for op, k in n.items():
                setattr(out, _DONE[op], getattr(out, _DONE[op]) + k)

    def without_identifier(self) -> list[tuple[str, str]]:
        """(key, reason) of the contacts to send that have no value for any identifier
        the destination takes (counted in ``no_identifier``; kept in history)."""
        c, ids = self.cands, self.cfg.identifiers
        if not ids:
            return []
        rows = self.ev.con.execute(  # where the evaluation ran
            f"SELECT _key, {c.raw_id} FROM {self.ev.table(self.source)} WHERE {c.sendable()} "
            f"AND NOT {c.has_id} ORDER BY _key").fetchall()
        names = " or ".join(ids)
        none = f"no_identifier: no value for {names}"
        bad = f"no_identifier: no usable value for {names} (a NUL byte, or a JSON object)"
        return [(k, bad if raw else none) for k, raw in rows]

    def resync_from_remote(self) -> bool:
        """After ``resync``: the remote's members become the ledger (when readable)."""
        values = self.dest.member_values()  # a remote that shows what it holds (a file)
        keys = self.dest.members() if values is None else list(values)
        if keys is None:
            return False
        self.ledger.replace(keys, "''" if self.dest.value == "none" else "NULL", self.ev.now,
                            values)
        return True
