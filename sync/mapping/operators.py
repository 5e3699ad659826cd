"""The mapping's operators, in one table: what value each takes, which fit each field type,
and what a list operator means on a multi-select field. ``model`` parses conditions with
it, ``validate`` checks them against it, the segment compiler compiles by it."""

from __future__ import annotations

from .types import FieldType

#: operator -> the shape of its value
OPERATORS: dict[str, str] = {
    "eq": "scalar", "ne": "scalar", "in": "list", "not_in": "list",
    "gt": "ordered", "gte": "ordered", "lt": "ordered", "lte": "ordered",
    "between": "pair",
    "contains": "text", "not_contains": "text", "starts_with": "text", "ends_with": "text",
    "matches": "regex",
    "is_known": "bool",
    "within_last": "duration", "not_within_last": "duration", "within_next": "duration",
    "before": "date_or_duration", "after": "date_or_duration",
    "top_percent": "percent", "bottom_percent": "percent",
    "has_any": "list", "has_all": "list", "has_none": "list",
}

_TEXT = ("eq", "ne", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with",
         "matches", "is_known")
_DATE = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "before", "after",
         "within_last", "not_within_last", "within_next", "is_known", "top_percent",
         "bottom_percent")
#: field type -> the operators that fit it
OPS_BY_TYPE: dict[FieldType, tuple[str, ...]] = {
    FieldType.string: _TEXT,
    FieldType.enumeration: _TEXT,
    FieldType.number: ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between",
                       "is_known", "top_percent", "bottom_percent"),
    FieldType.bool: ("eq", "ne", "is_known"),
    FieldType.date: _DATE,
    FieldType.datetime: _DATE,
    FieldType.multi: ("has_any", "has_all", "has_none", "is_known"),
}

#: on a multi-select field (typed by a platform, so known only at run time), what a scalar
#: or text operator means
MULTI_ALIASES: dict[str, str] = {"eq": "has_any", "in": "has_any", "contains": "has_any",
                                 "ne": "has_none", "not_in": "has_none",
                                 "not_contains": "has_none"}

#: comparison operator -> SQL
COMPARISONS: dict[str, str] = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<",
                               "lte": "<="}
