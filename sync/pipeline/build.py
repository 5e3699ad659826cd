"""Building a mapping's connectors: each source and destination from its section, its typed
options and its connection (secrets from the environment), through the connector registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from ... import connectors
from ...connectors.base import Context, Destination, Meter, Source
from ..errors import ConfigError
from ..mapping.loader import Project, pydantic_problems
from ..mapping.model import ConnectionConfig


def _options(project: Project, path: str, cls: type, raw: dict[str, Any]) -> BaseModel:
    try:
        return cls.Options.model_validate(raw)
    except ValidationError as exc:
        parts = tuple(int(p[1:-1]) if p.startswith("[") else p for p in
                      path.replace("[", ".[").split(".") if p)
        raise ConfigError([project.problem(p.path, p.message, p.fix) for p in
                           pydantic_problems(exc, parts, cls.Options, str(project.path))]) from None


def connection(project: Project, name: str) -> tuple[ConnectionConfig, dict[str, str]]:
    """The typed connection ``name`` and its field -> ${VAR} map."""
    raw = project.mapping.connections[name]
    cls = connectors.load("connection", raw.type)
    try:
        conn = cls.model_validate(raw.model_dump(by_alias=True))
    except ValidationError as exc:
        raise ConfigError([project.problem(p.path, p.message, p.fix) for p in pydantic_problems(
            exc, ("connections", name), cls, str(project.path))]) from None
    prefix = f"connections.{name}."
    env = {k[len(prefix):]: v for k, v in project.env_vars.items() if k.startswith(prefix)}
    return conn, env


def _context(project: Project, conn_name: str | None, now: datetime
             ) -> tuple[Context, ConnectionConfig | None]:
    ctx = Context(now=now, base_dir=project.base_dir, meter=Meter())
    if not conn_name:
        return ctx, None
    conn, ctx.env_var = connection(project, conn_name)
    return ctx, conn


def make_source(project: Project, name: str, now: datetime) -> Source:
    cfg = project.mapping.sources[name]
    ctx, conn = _context(project, cfg.connection, now)
    cls = connectors.load("source", conn.type if conn else (cfg.type or "csv"))
    return cls(name, cfg, _options(project, f"sources.{name}", cls, cfg.options), conn, ctx)


def make_destination(project: Project, index: int, now: datetime) -> Destination:
    cfg = project.mapping.destinations[index]
    ctx, conn = _context(project, cfg.connection, now)
    group = project.mapping.groups.get(cfg.group or "")
    ctx.labels = tuple(group.segments) if group else ((cfg.segment,) if cfg.segment else ())
    cls = connectors.load("destination", cfg.type)
    return cls(cfg, _options(project, f"destinations[{index}]", cls, cfg.options), conn, ctx)
