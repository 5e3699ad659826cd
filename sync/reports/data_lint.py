"""The data lint (empty, tiny and near-duplicate segments) for ``validate``, as ``segments``
reports it (SPEC asks both to). No network, and the store is not written: the segments are
evaluated over the sources' files pulled into a temporary store (the files as they are,
which validate checks), or, for platform sources, over the stored snapshot (read through a
private copy while a run holds it); with neither there is no data to lint."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import duckdb

from ..errors import ConfigError, CrmsyncError, Problem
from ..mapping import lint
from ..mapping.loader import Project, load
from ..pipeline.runner import Runner
from ..store.database import Store
from .segments import segment_report

#: above this many segments validate skips the data lint (it counts every pair's overlap)
MAX_SEGMENTS = 200


def _has_snapshot(project: Project) -> bool:
    if not project.store_path.is_file():
        return False
    store = Store.open_for_reading(project.store_path)
    try:
        return all(store.has_snapshot(s) for s in project.mapping.sources)
    finally:
        store.close()


def problems(path: Path) -> list[Problem]:
    """The data lint's findings (warnings) for the mapping at ``path``, or none when there
    is no data to read (or the mapping does not load: validate reports why)."""
    try:
        project = load(path)
    except ConfigError:
        return []
    m = project.mapping
    if not m.segments:
        return []
    if len(m.segments) > MAX_SEGMENTS:  # overlaps are pairs: n² counts
        return [project.problem("segments", f"{len(m.segments)} segments: the data lint (empty, "
                                f"tiny and overlapping segments) is skipped above "
                                f"{MAX_SEGMENTS}", "run crmsync segments for sizes",
                                "warning")]
    try:
        if all(s.connection is None for s in m.sources.values()):  # the files, as they are
            tmp = tempfile.TemporaryDirectory(prefix="crmsync-validate-")
            store = str(Path(tmp.name) / "validate.duckdb")
            copy = dataclasses.replace(project, mapping=m.model_copy(update={"store": store}))
            runner, offline = Runner(copy), False
        elif _has_snapshot(project):
            runner, offline, tmp = Runner(project, read_only=True), True, None
        else:
            return []
    except CrmsyncError:
        return []
    try:
        data = segment_report(runner, offline=offline)
    except (CrmsyncError, duckdb.Error):  # a snapshot older than the mapping's fields
        return []
    finally:
        runner.close()
        if tmp is not None:
            tmp.cleanup()
    static = {(p.path, p.message) for p in lint.static(project)}
    return [project.problem(f["path"], f["message"], f["fix"], f["severity"])
            for f in data["findings"] if (f["path"], f["message"]) not in static]
