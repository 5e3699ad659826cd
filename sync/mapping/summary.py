"""Repeated findings, summarised for people: the first few of a kind in full, then a count.

A mapping generated with 7,000 segments, none described, gives 21,000 warnings; a person
needs three examples and the count. ``--json`` outputs keep every finding (machines count)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..errors import Problem

T = TypeVar("T")
#: findings of one kind shown in full before the rest are counted
FIRST = 3
_NAMES = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


def kind(text: str) -> str:
    """What a finding says once names, quoted values and numbers are left out."""
    return _NAMES.sub("…", text)


def problem_kind(p: Problem) -> tuple:
    return p.severity, kind(p.message), p.fix


def summarise(items: Iterable[T], key: Callable[[T], object], show: Callable[[T], str],
              more: Callable[[T, int], str], first: int = FIRST) -> list[str]:
    """Lines for ``items``, grouped by ``key`` in order of first appearance: up to ``first``
    of each group in full (``show``), then ``more(example, n)`` for a group of ``n`` that
    had more (the group is shown whole when one line would be hidden)."""
    groups: dict[object, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    out: list[str] = []
    for found in groups.values():
        if len(found) <= first + 1:
            out += [show(x) for x in found]
        else:
            out += [show(x) for x in found[:first]]
            out.append(more(found[0], len(found)))
    return out


def problem_lines(problems: Iterable[Problem], first: int = FIRST) -> list[str]:
    """``severity: file:line: path: message; fix`` lines, repeated kinds counted."""
    problems = list(problems)

    def more(p: Problem, n: int) -> str:
        what = p.fix or kind(p.message)
        return f"{p.severity}: ... and {n - first} more like these ({n} × {what})"

    return summarise(problems, problem_kind, lambda p: f"{p.severity}: {p}", more, first)


def text_lines(texts: Iterable[str], first: int = FIRST) -> list[str]:
    """Warning texts, repeated kinds counted."""
    return summarise(texts, kind, str,
                     lambda t, n: f"... and {n - first} more like these ({n} × {kind(t)})",
                     first)
