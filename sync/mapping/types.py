"""The field types of the mapping's ``schema:`` (SPEC's value rules: ``values.py``)."""

from __future__ import annotations

from enum import StrEnum


class FieldType(StrEnum):
    string = "string"
    number = "number"
    bool = "bool"
    date = "date"
    datetime = "datetime"
    enumeration = "enumeration"
    multi = "multi"
