"""The package's architecture, checked from its source with ``ast`` (run it alone with
``python tests/test_architecture.py``):

* no import cycle between crmsync's modules, counting imports inside functions and under
  ``if TYPE_CHECKING`` (an import moved into a function to dodge a cycle is still a cycle);
* layering: ``sync/mapping/`` imports only errors and logs (and itself); ``connectors/``
  imports only ``connectors/``, the mapping model (and its field types), errors and the
  shared SQL quoting and clock;
  shared ``sync/`` modules (errors, logs, sql, clock) import no other crmsync module but
  the mapping's;
* the stages are layered, each importing only those before it: shared (errors, logs, sql,
  clock), mapping, connectors, store, segments, pipeline, reports, then the CLI;
* only ``sync/store/`` writes SQL over the store's tables: no other module names one of
  them after FROM / JOIN / INTO / UPDATE / TABLE in a string.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "crmsync"
PARTS = ("connectors", "sync")

#: the store's tables (sync/store/database.py MIGRATIONS), and the snapshot's snap_<source>
STORE_TABLES = ("sources", "ledger", "dest_state", "runs", "run_destinations", "rejects",
                "segment_sizes", "memberships", "identity_cache", "transitions",
                "group_migrations", "lift_groups", "_migrations", r"snap_\w*")
SQL_OVER_TABLE = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+(?:" + "|".join(STORE_TABLES) + r")\b")

#: module prefix -> the crmsync modules it may import (prefixes; itself always allowed)
ALLOWED = {
    "crmsync.sync.mapping": ("crmsync.sync.mapping", "crmsync.sync.errors",
                             "crmsync.sync.logs"),
    "crmsync.connectors": ("crmsync.connectors", "crmsync.sync.mapping.model",
                           "crmsync.sync.mapping.types", "crmsync.sync.errors",
                           "crmsync.sync.sql", "crmsync.sync.clock"),
    "crmsync.sync.errors": (),
    "crmsync.sync.logs": (),
    "crmsync.sync.sql": (),
    "crmsync.sync.clock": (),
}


#: the layers, first to last: a module may import its own layer and the ones before it
LAYERS = (("crmsync.sync.errors", "crmsync.sync.logs", "crmsync.sync.sql", "crmsync.sync.clock"),
          ("crmsync.sync.mapping",), ("crmsync.connectors",), ("crmsync.sync.store",),
          ("crmsync.sync.segments",), ("crmsync.sync.pipeline",), ("crmsync.sync.reports",),
          ("crmsync.cli", "crmsync.sync", "crmsync"))


def layer(name: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    raise LookupError(f"{name} is in no layer: add it to LAYERS")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the installed package: crmsync (cli.py, __init__.py) and its parts."""
    out = {PACKAGE: root / "__init__.py", f"{PACKAGE}.cli": root / "cli.py"}
    for part in PARTS:
        for path in sorted((root / part).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            names = [PACKAGE, *rel.parts]
            if names[-1] == "__init__":
                names.pop()
            out[".".join(names)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The crmsync modules ``name`` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            # ``from pkg import module`` imports the module; ``from mod import name``, mod
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # crmsync.x.y.Name -> the module that holds it
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith(PACKAGE):
                found.add(t)
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of modules larger than one (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in g.get(v, ()):
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _rule(name: str) -> tuple[str, ...] | None:
    best = max((p for p in ALLOWED if name == p or name.startswith(p + ".")), key=len,
               default=None)
    return None if best is None else ALLOWED[best]


def layering(g: dict[str, set[str]]) -> list[str]:
    bad = [f"{name} imports {d} (a later stage)" for name, deps in sorted(g.items())
           for d in sorted(deps) if layer(d) > layer(name)]
    for name, deps in sorted(g.items()):
        allowed = _rule(name)
        if allowed is None:
            continue
        bad += [f"{name} imports {d}" for d in sorted(deps)
                if not any(d == a or d.startswith(a + ".") for a in allowed)]
    return bad


def store_sql(root: Path = ROOT) -> list[str]:
    """Strings outside sync/store/ that run SQL over one of the store's tables."""
    bad = []
    for name, path in modules(root).items():
        if name.startswith(f"{PACKAGE}.sync.store"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                m = SQL_OVER_TABLE.search(node.value)
                if m:
                    bad.append(f"{path.relative_to(root)}:{node.lineno}: {m.group(0)!r}")
    return bad


# ---------------------------------------------------------------- the tests


def test_the_graph_sees_the_package():
    g = graph()
    assert "crmsync.sync.pipeline.runner" in g and "crmsync.connectors.base" in g
    assert "crmsync.sync.store.database" in g["crmsync.sync.pipeline.runner"]


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_layering():
    assert layering(graph()) == []


def test_only_the_store_runs_sql_over_its_tables():
    assert store_sql() == []


def test_a_cycle_is_found(tmp_path):
    """The checker itself: a function-local import that closes a loop is a cycle."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "cli.py").write_text("")
    sync = tmp_path / "sync"
    (sync / "mapping").mkdir(parents=True)
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "__init__.py").write_text("from ..sync.mapping import model\n")
    (sync / "__init__.py").write_text("")
    (sync / "errors.py").write_text("")
    (sync / "mapping" / "__init__.py").write_text("")
    (sync / "mapping" / "model.py").write_text("from ..errors import *\n")
    (sync / "mapping" / "loader.py").write_text(
        "from .model import X\n\ndef load():\n    from ..mapping import checks\n")
    (sync / "mapping" / "checks.py").write_text("from . import loader\n")
    g = graph(tmp_path)
    assert cycles(g) == [["crmsync.sync.mapping.checks", "crmsync.sync.mapping.loader"]]
    (sync / "mapping" / "model.py").write_text("from ...connectors import x\n")
    assert layering(graph(tmp_path)) == [
        "crmsync.sync.mapping.model imports crmsync.connectors (a later stage)",
        "crmsync.sync.mapping.model imports crmsync.connectors"]
    (sync / "mapping" / "model.py").write_text('Q = "SELECT * FROM ledger WHERE dest = ?"\n')
    assert store_sql(tmp_path) == ["sync/mapping/model.py:1: 'FROM ledger'"]


if __name__ == "__main__":
    g = graph()
    problems = [" -> ".join(c) for c in cycles(g)] + layering(g) + store_sql()
    print("\n".join(problems) or f"ok: {len(g)} modules, no cycle, layering kept")
    sys.exit(1 if problems else 0)
