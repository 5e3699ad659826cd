"""SPEC's value parsing rules (their SQL: ``segments.compiler.typed``).

number: decimal with optional sign, fraction and exponent, no thousands separators.
bool: true/false, yes/no, 1/0, any case. date/datetime: ISO 8601 (without offset = UTC) or
integer epoch milliseconds; a date is midnight UTC of that day. string/enumeration: trimmed.
multi: ``;``-separated, trimmed, lower-cased items. Anything else is unknown (NULL).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .model import FieldType

NUMBER_RE = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
ISO_RE = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
          r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?)?")
EPOCH_RE = r"-?[0-9]{1,15}"
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")
#: types whose values can fail to parse, flagged ``u:<field>`` (any text is a multi)
CHECKED = (FieldType.number, FieldType.bool, FieldType.date, FieldType.datetime)

# ---------------------------------------------------------------- Python side (mapping values)


def parse_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    s = str(v).strip()
    return float(s) if re.fullmatch(NUMBER_RE, s) else None


def parse_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    return True if s in TRUE else False if s in FALSE else None


def parse_datetime(v: Any, *, as_date: bool = False) -> datetime | None:
    """A mapping's date value (ISO 8601, epoch ms, or a YAML date) -> naive UTC datetime."""
    try:
        return _parse_datetime(v, as_date)
    except (OverflowError, ValueError):  # out of datetime's range
        return None


def _parse_datetime(v: Any, as_date: bool) -> datetime | None:
    if isinstance(v, datetime):
        dt = v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo else v
    elif isinstance(v, date):
        dt = datetime(v.year, v.month, v.day)
    elif isinstance(v, int) and not isinstance(v, bool):
        dt = datetime(1970, 1, 1) + timedelta(milliseconds=v)
    else:
        s = str(v).strip()
        if re.fullmatch(EPOCH_RE, s):
            dt = datetime(1970, 1, 1) + timedelta(milliseconds=int(s))
        elif re.fullmatch(ISO_RE, s):
            try:
                dt = datetime.fromisoformat(s.replace("z", "Z"))
            except ValueError:
                return None
            if dt.tzinfo:
                dt = dt.astimezone(UTC).replace(tzinfo=None)
        else:
            return None
    return datetime(dt.year, dt.month, dt.day) if as_date else dt


def parse_value(v: Any, ftype: FieldType) -> Any:
    """A literal from the mapping, typed like the field; None when it cannot be parsed."""
    if ftype is FieldType.number:
        return parse_number(v)
    if ftype is FieldType.bool:
        return parse_bool(v)
    if ftype in (FieldType.date, FieldType.datetime):
        return parse_datetime(v, as_date=ftype is FieldType.date)
    s = str(v).strip()
    return s.lower() if s else None
