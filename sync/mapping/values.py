"""SPEC's value parsing, as DuckDB SQL over raw text columns (set-based, one place).

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

SQL_TYPES = {FieldType.string: "VARCHAR", FieldType.enumeration: "VARCHAR",
             FieldType.number: "DOUBLE", FieldType.bool: "BOOLEAN", FieldType.date: "TIMESTAMP",
             FieldType.datetime: "TIMESTAMP", FieldType.multi: "VARCHAR[]"}


#: what Python's str.isspace() calls whitespace, as an RE2 class
_WS = r"[\t-\r\x1c-\x1f\x85\p{Z}]"


def strip_sql(col: str) -> str:
    """SQL: text ``col`` without leading and trailing whitespace, as Python's ``str.strip()``
    (DuckDB's ``trim()`` leaves tabs and line breaks; this regular expression, measured,
    costs about what ``trim()`` does)."""
    return f"regexp_replace({col}, '^{_WS}+|{_WS}+$', '', 'g')"


def typed_sql(col: str, ftype: FieldType, *, stripped: bool = False) -> str:
    """SQL turning raw text column ``col`` (already quoted; ``stripped``: already through
    ``strip_sql``) into its typed value or NULL."""
    t = col if stripped else strip_sql(col)
    if ftype in (FieldType.string, FieldType.enumeration):
        return f"NULLIF({t}, '')"
    if ftype is FieldType.number:
        return f"CASE WHEN regexp_full_match({t}, '{NUMBER_RE}') THEN CAST({t} AS DOUBLE) END"
    if ftype is FieldType.bool:
        return (f"CASE WHEN lower({t}) IN {TRUE} THEN TRUE "
                f"WHEN lower({t}) IN {FALSE} THEN FALSE END")
    if ftype in (FieldType.date, FieldType.datetime):
        ts = (f"CASE WHEN regexp_full_match({t}, '{EPOCH_RE}') "
              f"THEN make_timestamp(CAST({t} AS BIGINT) * 1000) "
              f"WHEN regexp_full_match({t}, '{ISO_RE}') "
              f"THEN CAST(TRY_CAST(replace({t}, 'z', 'Z') AS TIMESTAMPTZ) AS TIMESTAMP) END")
        return f"date_trunc('day', {ts})" if ftype is FieldType.date else ts
    if ftype is FieldType.multi:
        item = f"lower({strip_sql('x')})"
        items = (f"list_filter(list_transform(string_split({col}, ';'), lambda x: {item}),"
                 f" lambda x: x <> '')")
        return f"CASE WHEN len({items}) > 0 THEN {items} END"
    raise ValueError(ftype)


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
