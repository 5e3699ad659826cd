"""Logging to stderr: human lines (rich on a terminal, plain under cron) or JSON lines.

Log records carry contact keys, never emails or phones; ``redact`` masks any that slip in,
and the values the mapping took from the environment (``${VAR}``: tokens, webhook URLs).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

_EMAIL = re.compile(r"[^\s@<>()\"',;:]+@[^\s@<>()\"',;:]+\.[A-Za-z]{2,}")
# E.164 (+ then digit groups, one separator between groups, optional parentheses) with 8 or
# more digits, or the North American 555-123-4567 / (555) 123-4567 forms; plain digit runs
# are left alone (HubSpot contact ids are numbers), and so are counts like "+120 -3"
_E164 = re.compile(r"(?<![\w+])\+\d+(?:[ .-]?\(\d+\)|[ .-]?\d+)*")
_NANP = re.compile(r"\(\d{3}\)\s*\d{3}[-. ]\d{4}\b|\b\d{3}[-. ]\d{3}[-. ]\d{4}\b")


#: values read from the environment by the mapping; masked wherever redact() runs
_SECRETS: set[str] = set()
#: values shorter than this are masked only where they stand as a whole word (a short token
#: in "Bearer tok7777"), so that "US" does not mask the "US" inside "STATUS"
WORD_SECRET = 8
_SHORT: re.Pattern[str] | None = None


def secret(value: str) -> None:
    """Mask ``value``, whatever its length, in everything ``redact`` sees from now on (a
    platform's error text that echoes a token, a traceback)."""
    global _SHORT
    value = value.strip()
    if not value or value in _SECRETS:
        return
    _SECRETS.add(value)
    short = sorted((s for s in _SECRETS if len(s) < WORD_SECRET), key=len, reverse=True)
    _SHORT = re.compile(r"(?<![\w])(?:" + "|".join(map(re.escape, short)) + r")(?![\w])") \
        if short else None


def _phone(m: re.Match[str]) -> str:
    return "<phone>" if sum(c.isdigit() for c in m.group()) >= 8 else m.group()


def redact(text: str) -> str:
    """``text`` with the mapping's secrets and anything that looks like an email address or
    phone number masked (a last line of defence: code logs contact keys only)."""
    for s in sorted(_SECRETS, key=len, reverse=True):
        if len(s) >= WORD_SECRET:
            text = text.replace(s, "<secret>")
    if _SHORT is not None:
        text = _SHORT.sub("<secret>", text)
    return _NANP.sub("<phone>", _E164.sub(_phone, _EMAIL.sub("<email>", text)))


def one_line(text: str, limit: int = 300) -> str:
    """A platform's error text as one redacted line of at most ``limit`` characters (an SDK
    exception may carry headers and a whole response body)."""
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _attr(exc: BaseException, *names: str) -> Any:
    for n in names:
        v = getattr(exc, n, None)
        try:
            v = v() if callable(v) else v
        except Exception:  # an SDK accessor that needs what this error lacks
            v = None
        if v not in (None, ""):
            return v
    return None


def _body_fields(body: str) -> tuple[Any, Any]:
    """(code, message) from a JSON error body (``{"message"}``, ``{"error": {...}}``...)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    err = data.get("error", data) if isinstance(data, dict) else {}
    if not isinstance(err, dict):
        return None, err if isinstance(err, str) else None
    code = err.get("category") or err.get("code") or err.get("status")
    return code, err.get("message") or err.get("error_description")


def what_to_do(status: int | None) -> str:
    """The next step for an HTTP status a platform answered."""
    if status in (401, 403):
        return "check the connection's credentials (the ${VAR} the mapping names) and scopes"
    if status == 404:
        return "check the destination's list/audience id, or run crmsync resync NAME"
    if status == 429 or (status or 0) >= 500:
        return "the platform is busy or failing: the next run retries"
    if status is not None and 400 <= status < 500:
        return "the platform refused the request: check the destination's options"
    return "rerun with CRMSYNC_DEBUG=1 for the traceback and report it"


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an SDK's exception carries, if any."""
    status = _attr(exc, "status", "status_code", "http_status")
    return status if isinstance(status, int) and not isinstance(status, bool) else None


#: a response body longer than this is reduced to the platform's code and message
SHORT_BODY = 200


def error_text(exc: BaseException) -> str:
    """An unexpected exception as one redacted line: an SDK's HTTP error as its status and
    its body when short, else the platform's code and message from it (never the headers,
    nor a whole long body)."""
    status = http_status(exc)
    if status is not None:
        body = _attr(exc, "body", "content", "text")
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        if text and len(text) <= SHORT_BODY:
            return one_line(f"{type(exc).__name__}: HTTP {status}: {text}")
        code, message = _body_fields(text)
        code = _attr(exc, "api_error_code") or code
        message = _attr(exc, "api_error_message") or message or text or str(exc)
        return one_line(f"{type(exc).__name__}: HTTP {status}" + (f" {code}" if code else "")
                        + f": {message}")
    return one_line(f"{type(exc).__name__}: {exc}")


def failure_line(exc: BaseException) -> str:
    """A failure nobody classified, for the user, in one line: ``error_text`` (its HTTP
    status, the platform's code and message) and what to do about that status."""
    return one_line(f"{error_text(exc)}; {what_to_do(http_status(exc))}")


def level_from_env() -> int:
    """``CRMSYNC_LOG_LEVEL`` (debug, info, warning, error); info by default. Only at debug do
    logs carry Python tracebacks."""
    import os

    name = (os.environ.get("CRMSYNC_LOG_LEVEL") or "info").upper()
    return getattr(logging, name, logging.INFO) if name in (
        "DEBUG", "INFO", "WARNING", "ERROR") else logging.INFO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
               "level": record.levelname.lower(), "logger": record.name,
               "msg": redact(record.getMessage())}
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out)


class PlainFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = redact(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: N802
        return redact(super().formatException(ei))


def same_terminal() -> bool:
    """Whether stdout and stderr are the same terminal (a person running crmsync by hand)."""
    try:
        if not (sys.stdout.isatty() and sys.stderr.isatty()):
            return False
        a, b = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev)


class SummaryFilter(logging.Filter):
    """Drops records marked ``extra={"summary": True}`` (a destination's summary line, which
    stdout prints) when stdout is the terminal the logs go to."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "summary", False)


def setup_logging(fmt: str = "human", level: int | None = None) -> None:
    level = level_from_env() if level is None else level
    root = logging.getLogger("crmsync")
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(PlainFormatter("%(message)s"))
        if same_terminal():
            handler.addFilter(SummaryFilter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(message)s",
                                            "%Y-%m-%dT%H:%M:%S"))
    root.addHandler(handler)
