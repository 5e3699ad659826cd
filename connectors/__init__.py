"""Connector registry: built-in and third-party connectors are found through entry points."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from ..sync.errors import CrmsyncError
from ..sync.mapping.model import did_you_mean

GROUPS = {"connection": "crmsync.connections", "source": "crmsync.sources",
          "destination": "crmsync.destinations"}


@cache
def _registered(kind: str) -> tuple[EntryPoint, ...]:
    """The entry points of one kind, read once (each read scans every installed package's
    metadata: 5 ms, and a plan of 10 destinations asks some 30 times)."""
    return tuple(entry_points(group=GROUPS[kind]))


@cache
def names(kind: str) -> tuple[str, ...]:
    """Registered names of one kind: "connection", "source" or "destination"."""
    return tuple(sorted(ep.name for ep in _registered(kind)))


def load(kind: str, name: str) -> type:
    """The class registered as ``name``; a clear error for unknown names or missing extras."""
    found = [ep for ep in _registered(kind) if ep.name == name]
    if not found:
        hint = did_you_mean(name, names(kind))
        raise CrmsyncError(f"unknown {kind} type '{name}'" + (f"; {hint}" if hint else
                           f"; known: {', '.join(names(kind))}"))
    try:
        return found[0].load()
    except ImportError as exc:  # an SDK extra is missing
        if (exc.name or "").startswith("crmsync"):
            raise CrmsyncError(f"{kind} type '{name}' is registered but its module "
                               f"{exc.name} is missing from this installation") from exc
        extra = found[0].value.split(":")[0].rsplit(".", 1)[-1]
        raise CrmsyncError(f"{kind} type '{name}' needs an optional dependency ({exc.name}): "
                           f"pip install 'crmsync[{extra}]'") from exc
