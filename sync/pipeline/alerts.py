"""Alerts: Slack-compatible JSON posted with httpx to each ``alerts:`` URL.

Events are a failed destination, a tripped safeguard, and contacts that moved between two
segments since the last run (the transitions an alert names). One message per URL carries
every event that URL asked for (``on:``). Messages quote contact keys, never emails or phones;
anything that looks like one is redacted. A webhook that is unreachable or answers non-2xx is
logged (scheme and host only: a webhook's path is its secret) and never fails the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ..logs import redact
from ..mapping.model import AlertConfig

__all__ = ["Event", "TIMEOUT", "payload", "send"]

TIMEOUT = 10.0
MAX_BLOCKS = 50  # Slack's limit per message
Kind = Literal["failure", "safeguard", "transition"]


@dataclass(frozen=True)
class Event:
    """Something an alert may report. Build with the class methods."""

    kind: Kind
    destination: str | None = None
    from_: str | None = None
    to: str | None = None
    count: int = 0
    sample: tuple[str, ...] = ()  # contact keys
    message: str = ""
    fraction: float | None = None

    @classmethod
    def failure(cls, destination: str, message: str) -> Event:
        return cls("failure", destination=destination, message=message)

    @classmethod
    def safeguard(cls, destination: str, removes: int, fraction: float,
                  message: str = "") -> Event:
        return cls("safeguard", destination=destination, count=removes, fraction=fraction,
                   message=message)

    @classmethod
    def transition(cls, from_: str, to: str, count: int, sample: Iterable[str] = ()) -> Event:
        return cls("transition", from_=from_, to=to, count=count, sample=tuple(sample))


def _esc(text: str) -> str:
    """Slack mrkdwn escaping, after redaction."""
    return redact(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _keys(sample: Iterable[str], limit: int) -> list[str]:
    """Up to ``limit`` keys; keys that look like emails or phones are left out."""
    out = [k for k in map(str, sample) if redact(k) == k]
    return out[:max(limit, 0)]


def _line(event: Event, sample: int) -> str:
    if event.kind == "failure":
        return f":x: destination *{_esc(event.destination or '?')}* failed: {_esc(event.message)}"
    if event.kind == "safeguard":
        frac = f" ({event.fraction:.0%} of the audience)" if event.fraction is not None else ""
        extra = f": {_esc(event.message)}" if event.message else ""
        return (f":warning: safeguard tripped on *{_esc(event.destination or '?')}*: it would "
                f"remove {event.count} members{frac}; nothing was removed, run with --force "
                f"to override{extra}")
    keys = _keys(event.sample, sample)
    quoted = f" (e.g. {', '.join(f'`{_esc(k)}`' for k in keys)})" if keys else ""
    return (f":arrow_right: {event.count} contacts moved from *{_esc(event.from_ or '?')}* to "
            f"*{_esc(event.to or '?')}* since the last run{quoted}")


def _wanted(alert: AlertConfig, event: Event) -> bool:
    if event.kind not in alert.on:
        return False
    if event.kind == "transition":
        return event.count > 0 and any(t.from_ == event.from_ and t.to == event.to
                                       for t in alert.transitions)
    return True


def payload(alert: AlertConfig, events: Iterable[Event], title: str = "crmsync"
            ) -> dict[str, Any] | None:
    """The Slack message for ``alert`` (None when none of ``events`` concerns it)."""
    lines = [_line(e, alert.sample) for e in events if _wanted(alert, e)]
    if not lines:
        return None
    head = f"*{_esc(title)}*: {len(lines)} alert{'s' if len(lines) > 1 else ''}"
    shown = lines[:MAX_BLOCKS - 2]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": head}}]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": t[:3000]}} for t in shown]
    if len(lines) > len(shown):
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"... and {len(lines) - len(shown)} more"}]})
    return {"text": "\n".join([head, *lines]), "blocks": blocks}


def _where(url: str) -> str:
    """scheme://host of a webhook URL: its path and query are secrets."""
    try:
        u = httpx.URL(url)
        return f"{u.scheme}://{u.host}" if u.host else "<bad url>"
    except Exception:  # noqa: BLE001 - any unparsable URL
        return "<bad url>"


def send(alerts: list[AlertConfig], events: list[Event], client: httpx.Client | None = None,
         log: logging.Logger | None = None, title: str = "crmsync") -> int:
    """Post each alert's message; return how many were delivered. Never raises on the
    network: failures are logged as warnings (scheme and host only)."""
    log = log or logging.getLogger("crmsync.alerts")
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT)
    delivered = 0
    try:
        for alert in alerts:
            body = payload(alert, events, title)
            if body is None:
                continue
            where = _where(alert.url)
            try:
                resp = http.post(alert.url, json=body, timeout=TIMEOUT)
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                log.warning("alert to %s not delivered: %s", where, type(exc).__name__)
                continue
            if resp.is_success:
                delivered += 1
            else:
                log.warning("alert to %s not delivered: HTTP %s", where, resp.status_code)
    finally:
        if own:
            http.close()
    return delivered
