"""Plan files (``plan -o``) as ``apply`` reads them: each field of the right type, and the
mapping found from any folder."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem

_FIX = "make a new plan with: crmsync plan -c MAPPING -o plan.json (do not edit it)"


def check_fields(data: dict[str, Any], path: Path) -> None:
    """Raise ConfigError naming each field of a plan file that has the wrong type."""
    problems = []

    def bad(field: str, want: str) -> None:
        got = type(data.get(field)).__name__
        problems.append(Problem(field, f"must be {want}, not {got}", _FIX, str(path)))

    as_of = data.get("as_of")
    if not isinstance(as_of, str):
        bad("as_of", "an ISO 8601 time (text)")
    else:
        try:
            datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            problems.append(Problem("as_of", f"cannot read {as_of[:40]!r} as ISO 8601", _FIX,
                                    str(path)))
    if not isinstance(data.get("mapping"), str) or not data["mapping"].strip():
        bad("mapping", "the mapping file's path (text)")
    if "mapping_sha256" in data and not isinstance(data["mapping_sha256"], str):
        bad("mapping_sha256", "text")
    version = data.get("snapshot_version")
    if not isinstance(version, int) or isinstance(version, bool):
        bad("snapshot_version", "a whole number")
    for name, rows in data.get("changes", {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            problems.append(Problem(f"changes.{name}", "must be a list of changes", _FIX,
                                    str(path)))
    if problems:
        raise ConfigError(problems)


def mapping_of(data: dict[str, Any], plan_path: Path) -> Path:
    """The mapping a plan was made with: its absolute path (plans made since this version
    store one); an older, relative one is tried from here, then from the plan's folder."""
    mapping = Path(data["mapping"])
    if mapping.is_absolute() or mapping.exists():
        return mapping
    beside = plan_path.parent / mapping
    return beside if beside.exists() else mapping
