"""`crmsync validate`: load (shape), then semantics and governance lint. No network.

The same checks guard every other command: ``Runner`` calls ``require_valid`` with the
sources it builds (once per run, the same objects then pull), so a mapping that validate
rejects (an unknown field, a missing file, a key column absent from it) stops before any
pull or API call, with validate's own messages and exit code 2.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ... import connectors
from ...connectors.base import Source
from ..clock import utcnow
from ..errors import ConfigError, CrmsyncError, Problem
from ..mapping import lint, validate
from ..mapping.loader import Project, load
from ..mapping.model import FieldType, did_you_mean
from ..store.database import Store
from ..store.shared import is_url
from . import local_checks
from .build import make_source

_Fields = dict[str, dict[str, FieldType | None]]


def build_sources(project: Project, now: datetime) -> dict[str, Source | None]:
    """Each source of the mapping, built once; None where it cannot be built (bad options,
    connection or SDK: ``validate`` says which)."""
    out: dict[str, Source | None] = {}
    for name in project.mapping.sources:
        try:
            out[name] = make_source(project, name, now)
        except Exception:
            out[name] = None
    return out


def known_fields(project: Project, sources: dict[str, Source | None], pull: bool = True
                 ) -> tuple[_Fields, list[Problem]]:
    """Per source, the fields known without network (files: their header typed by schema:),
    and the problems found reading them (a file missing or unreadable, the key absent).
    ``pull=False``: a file that cannot be read is known by its stored snapshot, if any."""
    out: _Fields = {}
    problems: list[Problem] = []
    for name, cfg in project.mapping.sources.items():
        src = sources.get(name)
        declared = None
        if src is not None:
            try:
                declared = src.declared_fields()
            except ConfigError as exc:  # the source's own findings, e.g. its file is missing
                declared = None if pull else _stored_fields(project, name)
                if declared is None:
                    problems += [project.problem(p.path, p.message, p.fix)
                                 for p in exc.problems]
            except (CrmsyncError, OSError) as exc:
                problems.append(project.problem(f"sources.{name}", f"cannot read source "
                                                f"'{name}': {exc}", "fix the file or its path"))
            if declared is not None and src.key not in declared:
                problems.append(_key_problem(project, name, src.key, declared))
        if declared is None and cfg.properties:
            declared = list(cfg.properties)
        if declared is not None:
            # files: columns not in schema: are strings; platforms type their own fields
            # (HubSpot definitions, Salesforce describe), unknown without network
            default = None if cfg.connection else FieldType.string
            out[name] = {f: cfg.schema_.get(f, default) for f in declared}
    return out, problems


def _stored_fields(project: Project, source: str) -> list[str] | None:
    """The fields of the stored snapshot of ``source`` (None: no store or no snapshot)."""
    if is_url(project.mapping.store) or not project.store_path.exists():
        return None  # validate makes no network call
    try:
        store = Store.open(project.store_path, read_only=True, mapping=project.name)
    except Exception:  # e.g. a run holds the store
        return None
    try:
        found = store.schema(source)
    finally:
        store.close()
    return list(dict.fromkeys([found[0], *found[1]])) if found else None


def _key_problem(project: Project, source: str, key: str, fields: list[str]) -> Problem:
    given = project.mapping.sources[source].key is not None
    listed = ", ".join(fields[:20]) + (", ..." if len(fields) > 20 else "")
    fix = did_you_mean(key, fields) or (
        f"set key: to the column holding each contact's unique id ({listed})" if given else
        f"add key: COLUMN, the column holding each contact's unique id ({listed})")
    return project.problem(f"sources.{source}.key" if given else f"sources.{source}",
                           f"key column '{key}' is not a field of source '{source}'"
                           + ("" if given else " (no key: given, so 'id' is expected)"), fix)


def check(project: Project, fields: _Fields | None = None) -> list[Problem]:
    """``mapping.validate.check`` with the installed connectors' classes."""
    return validate.check(project, fields, connectors)


def problems_of(project: Project, sources: dict[str, Source | None], pull: bool = True
                ) -> list[Problem]:
    """Every problem of a loaded mapping but lint: its sources' files, then semantics."""
    fields, found = known_fields(project, sources, pull)
    return found + check(project, fields) + local_checks.problems(project)


def require_valid(project: Project, sources: dict[str, Source | None], pull: bool = True
                  ) -> None:
    """Raise ``ConfigError`` with every error ``validate`` would report (warnings pass);
    ``pull=False``: as ``known_fields``."""
    errors = [p for p in problems_of(project, sources, pull) if p.severity == "error"]
    if errors:
        raise ConfigError(errors)


def check_project(path: Path) -> list[Problem]:
    """Every problem of a mapping file, errors and warnings. Raises nothing for bad input."""
    try:
        project = load(path)
    except ConfigError as exc:
        return exc.problems
    return problems_of(project, build_sources(project, utcnow())) + lint.static(project)
