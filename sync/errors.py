"""Errors crmsync raises, drawn once.

    CrmsyncError                 base; carries the exit code the CLI uses
    ├── ConfigError (exit 2)     the mapping is wrong; holds Problems with file:line, path and fix
    ├── SafeguardTripped (3)     a destination would remove too much; --force overrides
    ├── LockHeld (4)             another run holds the store's lock
    └── DestinationStopped (1)   a destination must stop for this run (daily limit, auth, terms)

A `Reject` is not an error of the run: it marks one row that cannot be sent, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One finding about a mapping file: where, what, and how to fix it."""

    path: str
    message: str
    fix: str | None = None
    file: str | None = None
    line: int | None = None
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = f"{self.file or '<mapping>'}:{self.line}" if self.line else (self.file or "<mapping>")
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text}; {self.fix}" if self.fix else text

    def to_dict(self) -> dict:
        return {"severity": self.severity, "file": self.file, "line": self.line,
                "path": self.path, "message": self.message, "fix": self.fix}


class CrmsyncError(Exception):
    exit_code = 1


@dataclass
class ConfigError(CrmsyncError):
    problems: list[Problem] = field(default_factory=list)
    exit_code = 2

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class SafeguardTripped(CrmsyncError):
    exit_code = 3


class LockHeld(CrmsyncError):
    exit_code = 4


class DestinationStopped(CrmsyncError):
    """Stop this destination for the run (not retried): daily limit, bad credentials, terms.

    ``applied``: whether the batch being written may have been applied before the stop
    (True, the safe default) or was certainly refused first (False: e.g. a throttled or
    unauthenticated request, a whole request refused with a 4xx, a check before sending)."""

    exit_code = 1

    def __init__(self, message: str = "", *, applied: bool = True):
        super().__init__(message)
        self.applied = applied


class Reject(Exception):  # noqa: N818 - a row outcome, not a failure of the run
    """One row cannot be sent; `reason` says why (counted and reported, never fatal)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
