"""The report's view model: plain dataclasses built from the store in one function
(``build``), rendered to HTML by ``html.render``. No SQL here (see ``store.report``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..mapping.loader import Project
from ..mapping.model import FieldType
from ..store.database import Store
from ..store.figures import DestinationFigures
from ..store.report import NONE
from .lift import lift_report

#: the migration window when ``report --since`` is not given: this long before the last run
DEFAULT_WINDOW = timedelta(days=7)


@dataclass
class SizePoint:
    as_of: datetime
    matched: int
    held_out: int
    sent: int | None  # None: recorded before sent was


@dataclass
class SegmentView:
    name: str
    description: str
    matched: int  # now (the stored snapshot)
    held_out: int
    sent: int
    history: list[SizePoint] = field(default_factory=list)


@dataclass
class Matrix:
    """From -> to counts; ``NONE`` in ``rows`` is "joined the group", in ``cols`` "left"."""
    rows: list[str]
    cols: list[str]
    counts: dict[tuple[str, str], int]
    caption: str
    stays: bool  # the diagonal holds contacts who stayed


@dataclass
class GroupView:
    name: str
    segments: list[str]
    last: Matrix | None  # between the last two runs
    window: Matrix | None  # moves summed over the runs in the window


@dataclass
class TransitionView:
    from_: str
    to: str
    last_run: int
    window: int
    last_seen: datetime | None


@dataclass
class DestRun:
    """One recorded run of a destination: its figures as history keeps them."""
    run_id: int
    as_of: datetime
    figures: DestinationFigures


@dataclass
class DestinationView:
    name: str
    type: str
    segment: str
    last: DestRun | None
    rejects: list[dict[str, Any]]  # reason, count, keys (a few) of the last run
    readback: dict[str, Any] | None  # the platform's last reported figures, and as_of
    runs: list[DestRun] = field(default_factory=list)  # oldest first


@dataclass
class ReportView:
    title: str
    as_of: datetime | None  # of the last recorded run
    since: datetime | None  # the migration window's start
    runs: int
    segments: list[SegmentView]
    overlap: dict[tuple[str, str], int]
    groups: list[GroupView]
    transitions: list[TransitionView]  # those an alert names
    destinations: list[DestinationView]
    clv: dict[str, dict[str, Any]] | None = None  # score -> r, alpha, a, b, p, q, gamma, ...
    lift: list[dict[str, Any]] | None = None  # SPEC's `lift --json` objects


def window_start(store: Store, since: datetime | None) -> datetime | None:
    """The migration window's start: ``since``, else ``DEFAULT_WINDOW`` before the last run."""
    if since is not None:
        return since
    runs = store.recorded_runs()
    return runs[-1]["as_of"] - DEFAULT_WINDOW if runs else None


def measure_lift(runner: Any, outcomes: list[str], since: datetime | None
                 ) -> list[dict[str, Any]] | None:
    """``lift --json`` of every segment with a holdout on each of ``outcomes`` (a date
    outcome counts the dates after ``since``); None without outcomes."""
    if not outcomes:
        return None
    project = runner.project
    out = []
    for seg, cfg in project.mapping.segments.items():
        if not cfg.holdout:
            continue
        found = runner.store.schema(project.source_of("segments", seg))
        types = found[1] if found else {}
        for o in outcomes:
            dated = types.get(o) in (FieldType.date, FieldType.datetime)
            out.append(lift_report(runner, seg, o, since if dated else None))
    return out


def _matrix(counts: dict[tuple[str, str], int], segs: list[str], caption: str,
            stays: bool) -> Matrix:
    return Matrix([*segs, NONE], [*segs, NONE], counts, caption, stays)


def build(store: Store, project: Project, sizes: dict[str, dict[str, int]],
          overlap: dict[tuple[str, str], int], *, title: str, since: datetime | None = None,
          clv: dict[str, dict[str, Any]] | None = None,
          lift: list[dict[str, Any]] | None = None) -> ReportView:
    """Everything the report shows. ``sizes`` and ``overlap`` are the stored snapshot's now
    (``explain.segment_report``); ``clv`` and ``lift`` come from their computations (None:
    not computed, rendered as none)."""
    m = project.mapping
    runs = store.recorded_runs()
    as_of = runs[-1]["as_of"] if runs else None
    if since is None and as_of is not None:
        since = as_of - DEFAULT_WINDOW

    hist: dict[str, list[SizePoint]] = {}
    for _, t, seg, matched, held, sent in store.size_points():
        hist.setdefault(seg, []).append(SizePoint(t, matched, held, sent))
    segments = [SegmentView(s, m.segments[s].description or "", v["matched"], v["held_out"],
                            v.get("sent", 0), hist.get(s, []))
                for s, v in sizes.items()]

    groups = []
    exclusive = {g: c.segments for g, c in m.groups.items() if c.exclusive}
    last = store.migration_matrix(runs[-1]["run_id"]) if len(runs) > 1 else {}
    window, n_window = store.migrations_since(since) if since else ({}, 0)
    for g, segs in exclusive.items():
        prev = runs[-2]["as_of"] if len(runs) > 1 else None
        lm = (_matrix(last.get(g, {}), segs, f"between the runs as of {prev:%Y-%m-%d %H:%M} "
                      f"and {as_of:%Y-%m-%d %H:%M}", True) if last.get(g) else None)
        wm = (_matrix(window[g], segs, f"moves summed over the {n_window} run(s) as of "
                      f"{since:%Y-%m-%d %H:%M} or later", False) if window.get(g) else None)
        groups.append(GroupView(g, list(segs), lm, wm))

    pairs = sorted({(t.from_, t.to) for a in m.alerts for t in a.transitions})
    transitions = [TransitionView(a, b, *v) for (a, b), v in
                   store.transitions_since(pairs, since or datetime.min).items()]

    recorded = store.destination_runs()
    dests = []
    for cfg in m.destinations:
        rows = recorded.get(cfg.name, [])
        dr = [DestRun(r["run_id"], r["as_of"], DestinationFigures.from_row({**r, "dest": cfg.name}))
              for r in rows]
        back = next(({**r["readback"], "as_of": r["as_of"]} for r in reversed(rows)
                     if r["readback"]), None)
        lastrun = dr[-1] if dr else None
        dests.append(DestinationView(
            cfg.name, cfg.type, cfg.segment or f"group {cfg.group}", lastrun,
            store.reject_reasons(lastrun.run_id, cfg.name) if lastrun else [], back, dr))
    return ReportView(title, as_of, since, len(runs), segments, overlap, groups, transitions,
                      dests, clv, lift)
