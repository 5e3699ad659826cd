"""Bounds on a mapping file, checked before it is built into Python values.

A mapping is reviewed in pull requests and `crmsync validate` runs on them in CI, so a file
must not be able to stall it: the file is read only up to ``MAX_BYTES``, must be UTF-8, and
its YAML graph is measured before construction. Aliases (``*name``) stay allowed, since
``<<: *defaults`` is a common way to share options, but the values they add to the document
are bounded (``MAX_ALIAS_VALUES``): nested anchors (the "billion laughs" pattern) are refused
in microseconds instead of expanding to gigabytes. Nesting is bounded too (``MAX_DEPTH``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError, Problem

#: a mapping larger than this is refused (the biggest real ones are a few hundred KB)
MAX_BYTES = 1 << 20
#: values aliases may add to the document beyond those written out in the file
MAX_ALIAS_VALUES = 10_000
#: collections nested deeper than this are refused
MAX_DEPTH = 64


def _fail(file: str, message: str, fix: str, line: int | None = None) -> ConfigError:
    return ConfigError([Problem("", message, fix, file, line)])


def read_text(path: Path) -> str:
    """The mapping's text, or a ConfigError naming the file (missing, a folder, unreadable,
    too big, not UTF-8: with the line of the first bad byte)."""
    file = str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _fail(file, f"mapping file {file} not found",
                    "pass -c PATH, or create crmsync.yaml") from None
    except IsADirectoryError:
        raise _fail(file, f"{file} is a folder, not a mapping file",
                    "pass -c PATH/TO/MAPPING.yaml") from None
    except OSError as exc:
        raise _fail(file, f"cannot read the mapping file ({exc.strerror})",
                    "check the path and the file's permissions") from None
    if len(data) > MAX_BYTES:
        raise _fail(file, f"the mapping file is larger than {MAX_BYTES // 1024} KB",
                    "split it, or generate fewer segments; a mapping is meant to be reviewed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _fail(file, f"the mapping file is not UTF-8 text (byte 0x{data[exc.start]:02x})",
                    "save it as UTF-8", line) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_graph(root: yaml.Node, file: str) -> None:
    """Raise ConfigError when the composed document nests deeper than ``MAX_DEPTH``, refers
    to itself, or expands (aliases counted as often as they are used) to more than
    ``MAX_ALIAS_VALUES`` values beyond the distinct ones. Iterative: linear in the file."""
    size: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    on_path: set[int] = set()
    repeated: yaml.Node | None = None  # the first node reached twice: an anchor
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] - len(size) > MAX_ALIAS_VALUES:
                where = repeated or node
                raise _fail(file, f"aliases expand this document to more than "
                            f"{MAX_ALIAS_VALUES:,} values beyond those written out "
                            "(nested anchors, the 'billion laughs' pattern)",
                            "write the values out, or use fewer, flatter aliases",
                            where.start_mark.line + 1)
            continue
        if key in size:
            repeated = repeated or node
            continue
        if depth > MAX_DEPTH:
            raise _fail(file, f"values nested more than {MAX_DEPTH} levels deep",
                        "flatten the document", node.start_mark.line + 1)
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _fail(file, "an alias refers to the collection that holds it",
                            "remove the self-reference", child.start_mark.line + 1)
            if id(child) in size:
                repeated = repeated or child
            else:
                stack.append((child, depth + 1, False))
