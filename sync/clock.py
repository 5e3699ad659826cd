"""crmsync's clock: naive UTC datetimes to the second, and their one ISO 8601 spelling."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as naive UTC to the second (how the store and the mapping's times are kept)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def iso(dt: datetime) -> str:
    """``2026-11-01T00:00:00Z``: how times are printed (plan JSON, history, messages)."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
