"""Checks of what a mapping names on this machine, that `run` would otherwise trip on late:
an empty source key, suppression files that are not UTF-8 text, a store that cannot be
written. Part of ``validate`` (and so of every command's ``require_valid``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import Problem
from ..mapping.loader import Project


def problems(project: Project) -> list[Problem]:
    return [*_empty_keys(project), *_suppression_files(project), *_store(project)]


def _empty_keys(project: Project) -> list[Problem]:
    return [project.problem(f"sources.{name}.key", "key is empty",
                            "set key: to the column holding each contact's unique id (or "
                            "remove key: to use 'id')")
            for name, cfg in project.mapping.sources.items()
            if cfg.key is not None and not cfg.key.strip()]


def _suppression_files(project: Project) -> list[Problem]:
    out = []
    for name, sup in project.mapping.suppressions.items():
        if sup.file is None:
            continue
        path = project.resolve(sup.file)
        if not path.is_file():
            continue  # validate reports a missing file
        if why := not_utf8(path):
            out.append(project.problem(f"suppressions.{name}.file",
                                       f"suppression file {sup.file} {why}",
                                       "save it as UTF-8 text (CSV UTF-8 in Excel)"))
    return out


def not_utf8(path: Path) -> str | None:
    """Why ``path`` cannot be read as UTF-8 text (with the line), or None."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return f"is not UTF-8 text (line {line}, byte 0x{data[exc.start]:02x})"
    return None


def _store(project: Project) -> list[Problem]:
    """The store's file must be a writable file, or its folder one that can be made and
    written (the nearest existing folder above it is tried with a temporary file)."""
    path = project.store_path
    fix = "set store: to a path in a folder you can write to"
    if path.exists():
        if not path.is_file():
            return [project.problem("store", f"the store {path} is not a file", fix)]
        if not os.access(path, os.R_OK | os.W_OK):
            return [project.problem("store", f"the store {path} cannot be written", fix)]
        return []
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        return [project.problem("store", f"the store {path} cannot be made: {above} is "
                                "a file, not a folder", fix)]
    try:
        with tempfile.TemporaryFile(dir=above):
            pass
    except OSError as exc:
        return [project.problem("store", f"the store {path} cannot be made in {above} "
                                f"({exc.strerror})", fix)]
    return []
