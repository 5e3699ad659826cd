"""Logging to stderr: human lines (rich on a terminal, plain under cron) or JSON lines.

Log records carry contact keys, never emails or phones; ``redact`` masks any that slip in.
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


def _phone(m: re.Match[str]) -> str:
    return "<phone>" if sum(c.isdigit() for c in m.group()) >= 8 else m.group()


def redact(text: str) -> str:
    """``text`` with anything that looks like an email address or phone number masked (a
    last line of defence: code logs contact keys only)."""
    return _NANP.sub("<phone>", _E164.sub(_phone, _EMAIL.sub("<email>", text)))


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


def setup_logging(fmt: str = "human", level: int = logging.INFO) -> None:
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
