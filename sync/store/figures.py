"""One destination's figures in one command: the one record that plan JSON, the summary
line, the history row and the HTML report render from."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: ``run_destinations``' columns, in the table's order (``history --json`` shows them so)
COLUMNS = ("dest", "status", "segment", "desired", "adds", "removes", "updates", "rejected",
           "deferred", "unchanged", "calls", "retries", "duration_s", "message", "readback",
           "no_identifier")


@dataclass
class DestinationFigures:
    """What a destination would do (the plan: SPEC's figures) and what it did (the push)."""

    name: str
    segment: str | None = None
    group: str | None = None
    status: str = "planned"  #: ok | failed | safeguard | skipped | planned
    planned: bool = False  #: the plan's figures below are known (not skipped, not failed early)
    # ---- the plan
    desired: int = 0
    add: int = 0
    remove: int = 0
    update: int = 0
    unchanged: int = 0
    suppressed: int = 0
    no_consent: int = 0
    no_identifier: int = 0
    held_out: int = 0
    ledger: int = 0  #: members in the ledger before the push (the safeguard's base)
    # ---- the push
    adds: int = 0  #: acknowledged by the platform
    removes: int = 0
    updates: int = 0
    rejected: int = 0
    deferred: int = 0
    #: (key, reason) of each contact refused, deferred or without a usable identifier
    rejects: list[tuple[str, str]] = field(default_factory=list)
    calls: int = 0
    retries: int = 0
    duration: float = 0.0
    message: str = ""
    readback: dict[str, Any] | None = None  #: the platform's own figures (size, match rate)

    def rejects_by_reason(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason in self.rejects))

    # ------------------------------------------------------------ renderings
    def plan_json(self) -> dict[str, Any]:
        """The destination in ``plan --json`` (a skipped one says why)."""
        if not self.planned:
            out: dict[str, Any] = {"skipped": self.message}
        else:
            out = {"segment": self.segment} if self.segment else {"group": self.group}
            out.update(desired=self.desired, add=self.add, remove=self.remove,
                       update=self.update, unchanged=self.unchanged,
                       suppressed=self.suppressed, no_consent=self.no_consent,
                       no_identifier=self.no_identifier)
        if self.readback:
            out["readback"] = self.readback
        return out

    def run_json(self) -> dict[str, Any]:
        """The destination in ``run --json``: the plan, then what was sent."""
        out = self.plan_json()
        out.update(status=self.status, adds=self.adds, removes=self.removes,
                   updates=self.updates, rejected=self.rejected, deferred=self.deferred,
                   calls=self.calls, retries=self.retries, message=self.message,
                   readback=self.readback)
        return out

    def plan_line(self) -> str:
        """The destination in ``plan``'s human output."""
        if not self.planned:
            return f"{self.name}: {self.status} {self.message}"
        return (f"{self.name}: desired {self.desired}: +{self.add} -{self.remove} "
                f"~{self.update} ={self.unchanged} (suppressed {self.suppressed}, "
                f"no consent {self.no_consent}, no identifier {self.no_identifier})"
                + (f" [{self.status}: {self.message}]" if self.message else ""))

    def summary(self) -> str:
        """The destination's line in ``run``'s output and log."""
        if self.status == "skipped":
            return f"{self.name}: skipped ({self.message})"
        # a dry run reports what it would send; a run, what was sent
        adds, removes, updates = ((self.add, self.remove, self.update)
                                  if self.status == "planned" and self.planned
                                  else (self.adds, self.removes, self.updates))
        core = (f"{self.name}: {self.status} +{adds} -{removes} ~{updates} "
                f"={self.unchanged if self.planned else 0} rejected {self.rejected} "
                f"deferred {self.deferred} ({self.calls} calls, {self.retries} retries, "
                f"{self.duration:.1f}s)")
        return f"{core}: {self.message}" if self.message else core

    def row(self) -> dict[str, Any]:
        """The destination's history row (``run_destinations``)."""
        plan = self.planned
        return {"dest": self.name, "status": self.status, "segment": self.segment or self.group,
                "desired": self.desired if plan else None, "adds": self.adds,
                "removes": self.removes, "updates": self.updates, "rejected": self.rejected,
                "deferred": self.deferred, "unchanged": self.unchanged if plan else None,
                "calls": self.calls, "retries": self.retries, "duration_s": self.duration,
                "message": self.message, "readback": self.readback,
                "no_identifier": self.no_identifier if plan else None}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DestinationFigures:
        """Back from a history row (the plan's other figures are not kept)."""
        planned = row.get("desired") is not None
        return cls(row["dest"], segment=row.get("segment"), status=row["status"],
                   planned=planned, desired=row.get("desired") or 0,
                   unchanged=row.get("unchanged") or 0,
                   no_identifier=row.get("no_identifier") or 0, adds=row.get("adds") or 0,
                   removes=row.get("removes") or 0, updates=row.get("updates") or 0,
                   rejected=row.get("rejected") or 0, deferred=row.get("deferred") or 0,
                   calls=row.get("calls") or 0, retries=row.get("retries") or 0,
                   duration=row.get("duration_s") or 0.0, message=row.get("message") or "",
                   readback=row.get("readback"))

    def history_line(self) -> str:
        """The destination in ``history``'s human output."""
        rb = f" readback {json.dumps(self.readback)}" if self.readback else ""
        return (f"  {self.name}: {self.status} +{self.adds} -{self.removes} ~{self.updates} "
                f"rejected {self.rejected} deferred {self.deferred} no identifier "
                f"{self.no_identifier} calls {self.calls} retries {self.retries} "
                f"{self.duration:.1f}s {self.message}{rb}")
