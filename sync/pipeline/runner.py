"""One run of crmsync: pull, evaluate, diff, push, record. The CLI is a thin layer over this."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from ...connectors.base import Destination, RemoteState, SourceState
from ..clock import iso, utcnow
from ..errors import ConfigError, CrmsyncError, DestinationStopped
from ..logs import failure_line, one_line, redact
from ..mapping.loader import Project
from ..mapping.model import DestinationConfig
from ..mapping.summary import text_lines
from ..segments.engine import Evaluation
from ..segments.warehouse import evaluate_in_place
from ..sql import lit, q
from ..store.database import Store
from ..store.figures import DestinationFigures
from ..store.ledger import Ledger
from ..store.shared import open_store
from ..store.snapshot import layout
from .alerts import Event, send
from .build import make_destination, make_source
from .checks import build_sources, require_valid
from .progress import Progress, counted, quiet
from .push import Candidates, DestinationSync, DestPlan, count_all, sent_counts
from .warehouse import into_store, sync_for

log = logging.getLogger("crmsync")


# ---------------------------------------------------------------- results


@dataclass
class Result:
    as_of: datetime
    segments: dict[str, dict[str, int]] = field(default_factory=dict)
    destinations: list[DestinationFigures] = field(default_factory=list)
    plans: dict[str, DestPlan] = field(default_factory=dict)  #: by destination name
    warnings: list[str] = field(default_factory=list)
    run_id: int | None = None
    moves: list[tuple[str, str, int, list]] = field(default_factory=list)  # from, to, n, sample

    @property
    def exit_code(self) -> int:
        if any(d.status == "safeguard" for d in self.destinations):
            return 3
        if any(d.status == "failed" or d.rejected for d in self.destinations):
            return 1
        return 0

    def plan_json(self) -> dict[str, Any]:
        return {"as_of": iso(self.as_of), "segments": self.segments,
                "destinations": {d.name: d.plan_json() for d in self.destinations},
                "warnings": [redact(w) for w in self.warnings]}  # as logs show them

    def run_json(self) -> dict[str, Any]:
        return {"as_of": iso(self.as_of), "segments": self.segments,
                "destinations": {d.name: d.run_json() for d in self.destinations},
                "warnings": [redact(w) for w in self.warnings], "run_id": self.run_id,
                "exit_code": self.exit_code}


# ---------------------------------------------------------------- the cycle


class Runner:
    """Runs commands against one mapping and its store."""

    def __init__(self, project: Project, *, as_of: datetime | None = None,
                 progress: Progress | None = None, checked: bool = True,
                 pull: bool = True, read_only: bool = False):
        """Build the mapping's sources (once: the checks read them, then the pulls) and,
        unless ``checked=False`` (commands that only change the store), stop with every error
        ``crmsync validate`` reports; then open the store. ``pull=False``: as
        ``checks.known_fields``. ``read_only``: see ``Store.open_for_reading``."""
        self.project = project
        self.started = utcnow()
        self.now = as_of or self.started
        self.progress: Progress = progress or quiet
        self.sources = build_sources(project, self.now)
        if checked:
            require_valid(project, self.sources, pull)
        self.store: Store = open_store(project, read_only)  # a DuckDB file, or shared Postgres
        self.pull_warnings: list[str] = []  # what the sources read but could not take as is
        self.in_place = project.mapping.engine == "postgres"  # evaluated in the database
        self._sessions: list[Any] = []  # the evaluations' database sessions

    def close(self) -> None:
        for conn in self._sessions:
            conn.close()
        self.store.close()
        getattr(self.progress, "close", lambda: None)()  # a progress bar: clear it

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ pull + evaluate
    def pull(self) -> None:
        """Pull every source into the store's snapshot (``engine: postgres``: nothing, the
        tables are read in place)."""
        if self.in_place:
            return
        for name in self.project.mapping.sources:
            src = self.sources.get(name)
            if src is None:  # could not be built for the checks: now say why
                src = make_source(self.project, name, self.now)
            identity = self.project.mapping.sources[name].identity.fields().values()
            self.progress(f"pulling {name}")
            t0 = time.monotonic()
            try:
                schema = src.schema()
                state = self.store.source_state(name)
                if self.store.layout(name) != layout(src.key, schema, identity):
                    state = SourceState()  # fields, types or kept texts changed: pull all
                result = src.pull(state)
                if result.sql is None and result.rows is not None:  # a platform's pages
                    result.rows = counted(result.rows, lambda n, name=name: self.progress(
                        f"pulling {name}", n, None))
            except ConfigError as exc:  # the file changed since the mapping was checked
                raise ConfigError([self.project.problem(p.path, p.message, p.fix)
                                   for p in exc.problems]) from None
            try:
                n, warnings = self.store.write_pull(name, src.key, schema, result, self.now,
                                                     identity)
            except duckdb.Error:
                if result.fallback is None:
                    raise
                result = result.fallback()  # e.g. a file with malformed rows: read with care
                n, warnings = self.store.write_pull(name, src.key, schema, result, self.now,
                                                     identity)
            log.info("pulled %s: %d contacts (%s) in %.1fs", name, n,
                     "full" if result.full else "incremental", time.monotonic() - t0)
            for w in text_lines(warnings):
                log.warning("%s", w)
            self.pull_warnings += warnings

    def evaluate(self, offline: bool = False) -> Evaluation:
        if not offline:
            self.pull()
        self.progress("evaluating segments")
        if self.in_place:
            sources = {n: self.sources.get(n) or make_source(self.project, n, self.now)
                       for n in self.project.mapping.sources}
            try:
                ev = evaluate_in_place(self.project, sources, self.store, self.now)
            except ConfigError as exc:  # the table changed since the mapping was checked
                raise ConfigError([self.project.problem(p.path, p.message, p.fix)
                                   for p in exc.problems]) from None
            self._sessions.append(ev.con)
        else:
            ev = Evaluation.build(self.project, self.store, self.now)
        for w in text_lines(ev.warnings):
            log.warning("%s", w)
        return ev

    def selected(self, only: list[str] | None) -> list[int]:
        names = [d.name for d in self.project.mapping.destinations]
        for o in only or []:
            if o not in names:
                raise ConfigError([self.project.problem(
                    "destinations", f"--only names no destination '{o}'",
                    f"destinations: {', '.join(names)}")])
        return [i for i, n in enumerate(names) if not only or n in only]

    def not_due(self, cfg: DestinationConfig) -> str | None:
        if not cfg.segment:
            return None
        cadence = self.project.mapping.segments[cfg.segment].cadence
        last = self.store.ledger(cfg.name).saved().last_synced
        if cadence and last and self.now - last < cadence:
            return f"not due: synced {iso(last)}, cadence {cadence}"
        return None

    # ------------------------------------------------------------ commands
    def plan(self, *, offline: bool = False, only: list[str] | None = None) -> Result:
        self.selected(only)  # an unknown --only name: exit 2 before pulling
        with self.store.lock():
            ev = self.evaluate(offline)
            res = Result(self.now, ev.segment_sizes(),
                         warnings=[*self.pull_warnings, *ev.warnings])
            chosen = self.selected(only)
            count_all(ev, [self.project.mapping.destinations[i] for i in chosen])
            for i in chosen:
                cfg = self.project.mapping.destinations[i]
                with make_destination(self.project, i, self.now) as dest:
                    plan = sync_for(ev, cfg, dest, i).plan()
                res.plans[cfg.name], out = plan, plan.figures
                out.readback = self.store.last_readback(cfg.name)  # no call: as last reported
                if why := self.tripped(cfg, out, force=False):
                    out.message = why
                    res.warnings.append(f"{cfg.name}: a run would stop here: {why}")
                    log.warning("%s", res.warnings[-1])
                res.destinations.append(out)
            return res

    def plan_file(self, res: Result) -> dict[str, Any]:
        """A reviewable plan: figures plus every change, bound to the mapping (its digest)
        and the snapshot (its version)."""
        out = res.plan_json()
        out["mapping"] = str(self.project.path.resolve())  # applies from any folder
        out["mapping_sha256"] = self.mapping_digest()
        out["snapshot_version"] = self.store.snapshot_version()
        out["changes"] = {name: self._changes(p) for name, p in res.plans.items()}
        return out

    def mapping_digest(self) -> str:
        return hashlib.sha256(self.project.path.read_bytes()).hexdigest()

    def _changes(self, plan: DestPlan) -> list[list[Any]]:
        """A destination's diff rows as a plan file holds them."""
        rows = self.store.con.execute(
            f"SELECT op, key, label, value, previous, fp FROM {plan.diff(self.store.con)} "
            f"ORDER BY op, key").fetchall()
        return json.loads(json.dumps([list(r) for r in rows]))

    def run(self, *, only: list[str] | None = None, dry_run: bool = False,
            force: bool = False, command: str = "run", offline: bool = False,
            plan_file: dict[str, Any] | None = None) -> Result:
        self.selected(only)  # an unknown --only name: exit 2 before pulling
        with self.store.lock():
            checked, planned = (self._check_plan(plan_file) if plan_file is not None
                                else (None, {}))
            run_id = self.store.begin_run(f"{command} --dry-run" if dry_run else command,
                                          self.started, self.now)
            res = Result(self.now, run_id=run_id)
            try:
                ev = checked or self.evaluate(offline)
                res.segments = ev.segment_sizes()
                res.warnings = [*self.pull_warnings, *ev.warnings]
                if not dry_run:
                    res.moves = self._record_segments(run_id, res.segments, ev)
                chosen = self.selected(only)
                count_all(ev, [self.project.mapping.destinations[i] for i in chosen])
                for i in chosen:
                    res.destinations.append(self._destination(
                        ev, run_id, i, dry_run, force, plan_file,
                        planned.get(self.project.mapping.destinations[i].name)))
                if not dry_run:
                    self._record_lift_groups(run_id, ev, res.destinations)
            except ConfigError:  # e.g. a file changed since the mapping was checked
                self.store.end_run(run_id, utcnow(), "config error", 2)
                raise
            except BaseException:
                self.store.end_run(run_id, utcnow(), "crashed", 1)
                raise
            self.store.end_run(run_id, utcnow(), "ok" if res.exit_code == 0 else "failed",
                               res.exit_code)
        if not dry_run:
            self.alert(res)
        return res

    def alert(self, res: Result) -> None:
        """Post the run's failures, tripped safeguards and segment moves to the alert URLs."""
        if not self.project.mapping.alerts:
            return
        events = [Event.failure(d.name, d.message) for d in res.destinations
                  if d.status == "failed"]
        events += [Event.safeguard(d.name, d.remove, d.remove / max(d.ledger, 1), d.message)
                   for d in res.destinations if d.status == "safeguard" and d.planned]
        events += [Event.transition(a, b, n, sample) for a, b, n, sample in res.moves]
        if events:
            send(self.project.mapping.alerts, events, title=f"crmsync {self.project.path.name}")

    def _record_segments(self, run_id: int, sizes: dict[str, dict[str, int]],
                         ev: Evaluation) -> list[tuple[str, str, int, list]]:
        """Sizes for history and the report; moves between segments since the last run, for
        every pair in an exclusive group and every transition an alert names (the members of
        those segments alone are kept for the next run to compare with)."""
        m = self.project.mapping
        sent = sent_counts(ev, m.destinations)
        self.store.record_sizes(run_id, {s: {**v, "sent": sent.get(s, 0)}
                                         for s, v in sizes.items()})
        pairs = {(t.from_, t.to) for al in m.alerts for t in al.transitions}
        compared = {s for g in m.groups.values() if g.exclusive for s in g.segments}
        compared |= {s for pair in pairs for s in pair}
        selects = [f"SELECT {lit(s)} AS segment, _key AS key FROM {ev.table(src)} "
                   f"WHERE {q('m:' + s)}" for s in m.segments if s in compared
                   for src in [self.project.source_of("segments", s)]]
        if not selects:
            return []
        via = ev.con if self.in_place else None  # compared where they are
        ev.temp("TABLE", "_current", " UNION ALL ".join(selects))
        # every pair of an exclusive group, from its from -> to matrix (one pass per group);
        # the other transitions an alert names, pair by pair
        moves = self.store.record_migrations(run_id, "_current", {
            g: c.segments for g, c in m.groups.items() if c.exclusive}, via)
        return self.store.record_memberships(run_id, "_current", sorted(pairs), moves, via)

    def _record_lift_groups(self, run_id: int, ev: Evaluation,
                            outcomes: list[DestinationFigures]) -> None:
        """For `crmsync lift`, per segment with a holdout: the members this run sent (to a
        destination pushed without failure, less its rejects) and the members held out
        who would otherwise have been sent to one of those (suppressions, consent and
        identifiers as for sending). A dry run records nothing: it sends nothing."""
        m = self.project.mapping
        pushed = {o.name for o in outcomes if o.status == "ok"}
        for s, seg in m.segments.items():
            if not seg.holdout:
                continue
            sent, held = [], []
            for cfg in m.destinations:
                if cfg.name not in pushed or s not in self.project.segments_of(cfg):
                    continue
                c = Candidates.of(ev, cfg)
                table, sendable = ev.table(c.source), f"NOT {c.sup} AND {c.consent} AND {c.has_id}"
                sent.append((cfg.name, f"SELECT _key AS key FROM {table} "
                                       f"WHERE ({c.label}) = {lit(s)} AND {sendable}"))
                held.append(f"SELECT _key AS key FROM {table} WHERE {q('m:' + s)} "
                            f"AND {q('h:' + s)} AND {sendable}")
            if self.in_place:  # only the contacts without a group yet leave the database
                sent = [(d, self._new_in_group(ev, s, sql, f"_lift_s{j}"))
                        for j, (d, sql) in enumerate(sent)]
                held = [self._new_in_group(ev, s, sql, f"_lift_h{j}")
                        for j, sql in enumerate(held)]
            self.store.record_lift_groups(run_id, s, sent, held)

    def _new_in_group(self, ev: Evaluation, segment: str, select: str, table: str) -> str:
        """``engine: postgres``: the keys of ``select`` that have no lift group for
        ``segment`` yet, fetched into the store as temp ``table``; returns a SELECT of it."""
        into_store(ev, self.store.without_group(segment, select), table, ("key",))
        return f"SELECT key FROM {table}"

    def _destination(self, ev: Evaluation, run_id: int, i: int, dry_run: bool, force: bool,
                     plan_file: dict[str, Any] | None, planned: DestPlan | None = None
                     ) -> DestinationFigures:
        """Plan (unless ``planned``: the plan ``apply`` checked, not diffed again), open,
        push and record one destination."""
        cfg = self.project.mapping.destinations[i]
        out = planned.figures if planned else DestinationFigures(cfg.name, cfg.segment,
                                                                 cfg.group)
        out.status = "ok"
        if not dry_run and plan_file is None and (why := self.not_due(cfg)):
            out.status, out.message = "skipped", why
            log.info("%s", out.summary(), extra={"summary": True})
            return out
        t0 = time.monotonic()
        dest = None
        pushed = False
        try:
            dest = make_destination(self.project, i, self.now)
            sync = sync_for(ev, cfg, dest, i)
            ledger = self.store.ledger(cfg.name)
            saved = ledger.saved()
            state, opened, resynced = RemoteState(saved.state, resync=saved.resync), False, False
            if not dry_run and (state.resync or dest.needs_open(state)):
                state, resynced = self._open(dest, sync, ledger, state)
                opened = True
            plan = planned if planned and not resynced else sync.plan(out)
            if not dry_run and not opened and (out.add or out.remove or out.update):
                state, resynced = self._open(dest, sync, ledger, state)
                opened = True
                if resynced:
                    plan = sync.plan(out)
            if why := self.tripped(cfg, out, force):
                out.status, out.message = "safeguard", why
            elif dry_run:
                out.status = "planned"
            else:
                self.progress(f"pushing {cfg.name}: +{out.add} -{out.remove} ~{out.update}")
                sync.push(plan, self.now, run_id, lambda done, total, n=cfg.name: self.progress(
                    f"pushing {n}", done, total))
                pushed = True
                out.readback = dest.readback() if opened else None
                # what open() returned, or what the writes added to it (e.g. request ids)
                ledger.save(dict((dest.remember() if opened else None) or state), self.now)
        except DestinationStopped as exc:
            out.status, out.message = "failed", one_line(str(exc))
        except CrmsyncError as exc:
            if isinstance(exc, ConfigError):
                raise
            out.status, out.message = "failed", one_line(str(exc))
        except Exception as exc:  # one destination's bug must not stop the others
            # one line for the user (the summary below); the traceback only at DEBUG
            log.debug("destination %s failed", cfg.name, exc_info=True)
            out.status, out.message = "failed", failure_line(exc)
        finally:
            if dest is not None:
                out.calls, out.retries = dest.ctx.meter.calls, dest.ctx.meter.retries
                dest.close()
        out.duration = time.monotonic() - t0
        if not dry_run:  # the rejects of a push that did not finish are not kept
            self.store.record_destination(run_id, out, out.rejects if pushed else [])
        log.log(logging.WARNING if out.status in ("failed", "safeguard") else logging.INFO,
                "%s", out.summary(), extra={"summary": True})
        return out

    def tripped(self, cfg: DestinationConfig, plan: DestinationFigures, force: bool
                ) -> str | None:
        """Why ``max_remove_fraction`` stops this destination's push, or None."""
        limit = cfg.max_remove_fraction
        if limit is None:
            limit = self.project.mapping.safeguards.max_remove_fraction
        if limit is None or force or not plan.ledger or plan.remove <= limit * plan.ledger:
            return None
        return (f"would remove {plan.remove} of {plan.ledger} members "
                f"({plan.remove / plan.ledger:.0%} > {limit:.0%}); "
                f"nothing sent; rerun with --force to allow")

    def _open(self, dest: Destination, sync: DestinationSync, ledger: Ledger,
              state: RemoteState) -> tuple[RemoteState, bool]:
        """Open the destination (find or create the remote object); on ``resync`` (asked for
        by ``crmsync resync``, or by the destination, e.g. its file is gone), take the
        remote's own membership as the ledger where the platform can list it. Returns the
        state to remember and whether a resync was done."""
        self.progress(f"opening {dest.name}")
        opened = dest.open(state)
        resync = state.resync or bool(getattr(opened, "resync", False))
        if resync:
            sync.resync_from_remote()
        ledger.save(dict(opened))
        return RemoteState(opened), resync

    def _check_plan(self, plan: dict[str, Any]) -> tuple[Evaluation, dict[str, DestPlan]]:
        """``apply``, under the lock: refuse (exit 2) a plan made with another mapping, over
        a snapshot that has moved since (the sources are pulled to know), or whose changes
        are not what the mapping, snapshot and ledgers give now (edited, made with another
        store, or destinations synced since). What is then pushed is that diff, which is
        the plan file's exactly. Returns the evaluation the run goes on with and the
        checked plans (by destination), which the push then sends without diffing again."""
        fix = "make a new plan with crmsync plan -o"
        if plan.get("mapping_sha256") != self.mapping_digest():
            raise ConfigError([self.project.problem(
                "", "stale plan: it was made with another mapping, or the mapping changed", fix)])
        self.pull()
        if plan.get("snapshot_version") != self.store.snapshot_version():
            raise ConfigError([self.project.problem(
                "", "stale plan: the snapshot changed since the plan was made", fix)])
        ev = self.evaluate(offline=True)
        names = [d.name for d in self.project.mapping.destinations]
        unknown = [n for n in plan["changes"] if n not in names]
        if unknown:
            raise ConfigError([self.project.problem(
                "", f"the plan names destinations the mapping does not have: {unknown}", fix)])
        chosen = [names.index(n) for n in plan["changes"]]
        count_all(ev, [self.project.mapping.destinations[i] for i in chosen])
        differ, plans = [], {}
        for i in chosen:
            cfg = self.project.mapping.destinations[i]
            with make_destination(self.project, i, self.now) as dest:
                plans[cfg.name] = sync_for(ev, cfg, dest, i).plan()
            if self._changes(plans[cfg.name]) != plan["changes"][cfg.name]:
                differ.append(cfg.name)
        if differ:
            raise ConfigError([self.project.problem(
                "", f"stale plan: the changes for {', '.join(differ)} are not what the "
                "mapping, snapshot and ledger give now (synced since, edited, or made with "
                "another store)", fix)])
        return ev, plans

    def apply(self, plan: dict[str, Any], force: bool = False) -> Result:
        """Push exactly a plan file's changes (see ``_check_plan``)."""
        self.now = datetime.fromisoformat(plan["as_of"].replace("Z", "+00:00")).replace(
            tzinfo=None)
        only = list(plan.get("changes", {}))
        return self.run(only=only, force=force, command="apply", plan_file=plan)

    def resync(self, name: str) -> int:
        if name not in [d.name for d in self.project.mapping.destinations]:
            raise ConfigError([self.project.problem("destinations", f"no destination '{name}'")])
        with self.store.lock():
            return self.store.ledger(name).forget()
