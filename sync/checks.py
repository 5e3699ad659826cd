"""`crmsync validate`: load (shape), then semantics and governance lint. No network."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, CrmsyncError, Problem
from .loader import Project, load
from .model import FieldType


def known_fields(project: Project) -> dict[str, dict[str, FieldType | None]]:
    """Per source, the fields known without network (files: their header typed by schema:)."""
    from .runner import make_source, utcnow

    out: dict[str, dict[str, FieldType]] = {}
    for name, cfg in project.mapping.sources.items():
        try:
            src = make_source(project, name, utcnow())
            declared = src.declared_fields()
        except (CrmsyncError, OSError):
            declared = None
        if declared is None and cfg.properties:
            declared = list(cfg.properties)
        if declared is not None:
            # files: columns not in schema: are strings; platforms type their own fields
            # (HubSpot definitions, Salesforce describe), unknown without network
            default = None if cfg.connection else FieldType.string
            out[name] = {f: cfg.schema_.get(f, default) for f in declared}
    return out


def check_project(path: Path) -> list[Problem]:
    """Every problem of a mapping file, errors and warnings. Raises nothing for bad input."""
    try:
        project = load(path)
    except ConfigError as exc:
        return exc.problems
    from . import lint, validate

    problems = validate.check(project, known_fields(project))
    problems += lint.static(project)
    return problems
