"""`crmsync validate`: load (shape), then semantics and governance lint. No network.

The same checks guard every other command: ``loader.load`` calls ``require_valid``, so a
mapping that validate rejects (an unknown field, a missing file, a key column absent from it)
stops before any pull or API call, with validate's own messages and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, CrmsyncError, Problem
from .loader import Project, load
from .model import FieldType, did_you_mean

_Fields = dict[str, dict[str, FieldType | None]]


def known_fields(project: Project, pull: bool = True) -> tuple[_Fields, list[Problem]]:
    """Per source, the fields known without network (files: their header typed by schema:),
    and the problems found reading them (a file missing or unreadable, the key absent).
    ``pull=False``: a file that cannot be read is known by its stored snapshot, if any."""
    from .runner import make_source, utcnow

    out: _Fields = {}
    problems: list[Problem] = []
    for name, cfg in project.mapping.sources.items():
        try:
            src = make_source(project, name, utcnow())
        except Exception:  # bad options, connection or SDK: validate says which
            src = None
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
    from .store import Store

    if not project.store_path.exists():
        return None
    try:
        store = Store.open(project.store_path, read_only=True)
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


def problems_of(project: Project, pull: bool = True) -> list[Problem]:
    """Every problem of a loaded mapping but lint: its sources' files, then semantics."""
    from . import validate

    fields, found = known_fields(project, pull)
    return found + validate.check(project, fields)


def require_valid(project: Project, pull: bool = True) -> None:
    """Raise ``ConfigError`` with every error ``validate`` would report (warnings pass);
    ``pull=False``: as ``known_fields``."""
    errors = [p for p in problems_of(project, pull) if p.severity == "error"]
    if errors:
        raise ConfigError(errors)


def check_project(path: Path) -> list[Problem]:
    """Every problem of a mapping file, errors and warnings. Raises nothing for bad input."""
    try:
        project = load(path, checked=False)
    except ConfigError as exc:
        return exc.problems
    from . import lint

    return problems_of(project) + lint.static(project)
