"""Logging to stderr: human lines (rich on a terminal, plain under cron) or JSON lines.

Log records carry contact keys, never emails or phones; ``redact`` masks any that slip in.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_EMAIL = re.compile(r"[^\s@'\"<>]+@[^\s@'\"<>]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w-])\+\d[\d\s().-]{6,}\d")


def redact(text: str) -> str:
    """Mask emails and phone numbers (a last line of defence; code logs keys only)."""
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))


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
