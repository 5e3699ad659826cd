"""Logging to stderr: human lines (rich on a terminal, plain under cron) or JSON lines.

Log records carry contact keys, never emails or phones; ``redact`` masks any that slip in,
and the values the mapping took from the environment (``${VAR}``: tokens, webhook URLs).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_EMAIL = re.compile(r"[^\s@<>()\"',;:]+@[^\s@<>()\"',;:]+\.[A-Za-z]{2,}")
# E.164 (+ then digit groups, one separator between groups, optional parentheses) with 8 or
# more digits, or the North American 555-123-4567 / (555) 123-4567 forms; plain digit runs
# are left alone (HubSpot contact ids are numbers), and so are counts like "+120 -3"
_E164 = re.compile(r"(?<![\w+])\+\d+(?:[ .-]?\(\d+\)|[ .-]?\d+)*")
_NANP = re.compile(r"\(\d{3}\)\s*\d{3}[-. ]\d{4}\b|\b\d{3}[-. ]\d{3}[-. ]\d{4}\b")


#: values read from the environment by the mapping; masked wherever redact() runs
_SECRETS: set[str] = set()
MIN_SECRET = 8  # shorter values (a region code, a flag) are not worth masking


def secret(value: str) -> None:
    """Mask ``value`` in everything ``redact`` sees from now on (a platform's error text that
    echoes a token, a traceback)."""
    if len(value) >= MIN_SECRET:
        _SECRETS.add(value)


def _phone(m: re.Match[str]) -> str:
    return "<phone>" if sum(c.isdigit() for c in m.group()) >= 8 else m.group()


def redact(text: str) -> str:
    """``text`` with the mapping's secrets and anything that looks like an email address or
    phone number masked (a last line of defence: code logs contact keys only)."""
    for s in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(s, "<secret>")
    return _NANP.sub("<phone>", _E164.sub(_phone, _EMAIL.sub("<email>", text)))


def one_line(text: str, limit: int = 300) -> str:
    """A platform's error text as one redacted line of at most ``limit`` characters (an SDK
    exception may carry headers and a whole response body)."""
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


#: what to do about a platform's answer nobody classified, by HTTP status class
_HINTS = {400: "the platform refused the request: check the destination's options in the "
               "mapping",
          401: "the platform refused the credentials: renew them in the environment",
          403: "the credentials lack access: grant them access to this account or object",
          404: "the target is gone or unreachable: check it exists, then "
               "`crmsync resync` the destination",
          429: "rate limited: the next run carries on from the last checkpoint",
          500: "the platform failed: the next run tries again"}


def _http_status(exc: BaseException) -> int | None:
    for name in ("status", "code", "status_code"):
        v = getattr(exc, name, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    fn = getattr(exc, "http_status", None)  # facebook-business
    v = fn() if callable(fn) else None
    return v if isinstance(v, int) else None


def hint(status: int | None) -> str | None:
    """What a user can do about an HTTP status nobody classified more precisely."""
    if status is None:
        return None
    return _HINTS.get(status) or _HINTS.get(500 if status >= 500 else 400)


def error_text(exc: BaseException) -> str:
    """An unexpected exception as one redacted line: an SDK's HTTP error as its status and
    body (not its headers)."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if isinstance(status, int) and body:
        body = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return one_line(f"{type(exc).__name__}: HTTP {status}: {body}")
    return one_line(f"{type(exc).__name__}: {exc}")


def failure_line(exc: BaseException) -> str:
    """A failure nobody classified, for the user: what to do about its HTTP status (when it
    has one), then ``error_text`` (the status named even when the SDK gives no body)."""
    status = _http_status(exc)
    text = error_text(exc)
    if isinstance(status, int) and f"HTTP {status}" not in text:
        text = one_line(f"HTTP {status}: {text}")
    what = hint(status)
    return one_line(f"{what}; {text}") if what else text


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
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PlainFormatter("%(asctime)s %(levelname)s %(message)s",
                                            "%Y-%m-%dT%H:%M:%S"))
    root.addHandler(handler)
