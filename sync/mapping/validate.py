"""Semantic checks of a loaded mapping (after ``loader.load`` succeeded), no network.

``check(project, fields)`` returns every Problem found: unknown fields (against each source's
known fields and the fields scores derive), unknown segment / group / connection / source /
destination names, cycles between segments, operator values (durations, dates, percents,
lists, pairs, regular expressions), operators that do not fit the field's type, values that
cannot be parsed as the field's type, connection and connector options (through the
connector classes of the ``catalog`` given, e.g. the ``crmsync.connectors`` registry), literal secrets, consent fields, identifiers and suppression
files. Each Problem names file:line, the document path and a fix.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator
from typing import Any, Protocol

from pydantic import BaseModel, SecretStr, ValidationError

from ..errors import CrmsyncError, Problem
from .loader import Project, model_keys, pydantic_problems
from .model import (
    OPERATORS,
    ClvScore,
    DestinationConfig,
    FieldCond,
    FieldType,
    RfmScore,
    SegmentRef,
    SourceConfig,
    did_you_mean,
    is_duration,
    parse_duration,
    walk,
)
from .operators import MULTI_ALIASES, OPS_BY_TYPE
from .scores import RFM_SEGMENTS
from .scores import score_fields as fields_of
from .values import parse_datetime, parse_number, parse_value

__all__ = ["OPS_BY_TYPE", "RFM_SEGMENTS", "check", "score_fields"]

_DATES = (FieldType.date, FieldType.datetime)
_SCHEMA_FIX = "declare the column as {t} in `schema:`"
_Fields = dict[str, dict[str, FieldType | None]]  # None: the field exists, type unknown


def score_fields(project: Project, source: str) -> dict[str, FieldType]:
    """The fields the scores computed on ``source`` add (``rfm.segment``, ``engagement``...)."""
    out: dict[str, FieldType] = {}
    for name, score in project.mapping.scores.items():
        if project.source_of("scores", name) == source:
            out.update(fields_of(name, score))
    return out


class Catalog(Protocol):
    """The connector classes by kind and type name (``crmsync.connectors`` is one)."""

    def names(self, kind: str) -> Any: ...

    def load(self, kind: str, name: str) -> type: ...


def check(project: Project, fields: _Fields | None = None, catalog: Catalog | None = None
          ) -> list[Problem]:
    """Every semantic problem of ``project``. ``fields``: per source name, its known fields
    and their types; a source missing from it gets no field-existence checks. ``catalog``:
    the connector classes whose options and connections are checked (None: not checked)."""
    c = _Checker(project, fields or {}, catalog)
    for step in (c.sources, c.scores, c.segments, c.cycles, c.groups, c.suppressions,
                 c.destinations, c.connections, c.alerts, c.store, c.engine):
        step()
    return c.problems


class _Checker:
    def __init__(self, project: Project, fields: _Fields, catalog: Catalog | None):
        self.p, self.m, self.fields, self.catalog = project, project.mapping, fields, catalog
        self.problems: list[Problem] = []

    # ------------------------------------------------------------ helpers

    def err(self, path: str, message: str, fix: str | None = None,
            severity: str = "error") -> None:
        self.problems.append(self.p.problem(path, message, fix, severity))

    def unknown_name(self, path: str, kind: str, name: str, choices: list[str]) -> None:
        fix = did_you_mean(name, choices) or (
            f"known {kind}s: {', '.join(choices)}" if choices else f"define the {kind} first")
        self.err(path, f"unknown {kind} '{name}'", fix)

    def source_ref(self, path: str, source: str | None) -> bool:
        if source is None or source in self.m.sources:
            return True
        self.unknown_name(path, "source", source, list(self.m.sources))
        return False

    def known(self, source: str) -> dict[str, FieldType | None] | None:
        """Known fields of ``source`` (its own plus score fields), None when unknown."""
        own = self.fields.get(source)
        if own is None:
            return None
        return {**own, **score_fields(self.p, source)}

    def field_type(self, source: str, name: str, path: str, what: str = "field"
                   ) -> FieldType | None:
        """The type of ``name`` in ``source``; reports an unknown field (None when unknown)."""
        derived = score_fields(self.p, source)
        if name in derived:
            return derived[name]
        known = self.known(source)
        if known is None:
            head = name.split(".", 1)[0]
            if "." in name and isinstance(self.m.scores.get(head), RfmScore | ClvScore) \
                    and self.p.source_of("scores", head) == source:
                self.err(path, f"unknown {what} '{name}': score '{head}' has "
                         f"{', '.join(k for k in derived if k.startswith(head + '.'))}",
                         did_you_mean(name, list(derived)) or "use one of those")
            return None
        if name in known:
            return known[name]
        other = next((s for s in self.m.sources if s != source
                      and name in score_fields(self.p, s)), None)
        fix = (f"that score is computed on source '{other}'; set source: {other}" if other else
               did_you_mean(name, sorted(known)) or f"fields of source '{source}': "
               + ", ".join(sorted(known)[:20]))
        self.err(path, f"unknown {what} '{name}' in source '{source}'", fix)
        return None

    def connector(self, kind: str, type_name: str, path: str) -> type | None:
        """The registered class for ``type_name``; unknown = error, unloadable = warning."""
        if self.catalog is None:
            return None
        registered = list(self.catalog.names(kind))
        if type_name not in registered:
            self.unknown_name(path, f"{kind} type", type_name, registered)
            return None
        try:
            return self.catalog.load(kind, type_name)
        except Exception as exc:  # missing module or SDK, half-written plugin: never crash
            detail = str(exc) if isinstance(exc, CrmsyncError) else f"{type(exc).__name__}: {exc}"
            self.err(path, f"cannot check {kind} '{type_name}': {detail}",
                     "install the connector's extra to check its settings", "warning")
            return None

    def options(self, cls: type, options: dict[str, Any], prefix: tuple,
                config: type[BaseModel]) -> BaseModel | None:
        """The connector's own keys (its ``Options``), beside ``config``'s common fields: an
        unknown key is matched against both. Returns the options typed (None: not valid)."""
        model = getattr(cls, "Options", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        try:
            return model.model_validate(options)
        except ValidationError as exc:
            self.pydantic(exc, prefix, model, model_keys(config))
            return None

    def pydantic(self, exc: ValidationError, prefix: tuple, model: type[BaseModel],
                 siblings: list[str] | tuple[str, ...] = ()) -> None:
        for pr in pydantic_problems(exc, prefix, model, str(self.p.path), siblings):
            self.err(pr.path, pr.message, pr.fix)

    # ------------------------------------------------------------ sections

    def sources(self) -> None:
        for name, src in self.m.sources.items():
            path = f"sources.{name}"
            if (src.type is None) == (src.connection is None):
                self.err(path, "a source needs exactly one of 'connection:' or 'type:'",
                         "connection: NAME for a platform, or type: csv / jsonl with path:")
                continue
            if src.connection is not None:
                conn = self.m.connections.get(src.connection)
                if conn is None:
                    self.unknown_name(f"{path}.connection", "connection", src.connection,
                                      list(self.m.connections))
                    continue
                type_name = conn.type
            else:
                type_name = src.type
            cls = self.connector("source", type_name, f"{path}.type" if src.type else
                                 f"{path}.connection")
            if cls is not None:
                opts = self.options(cls, src.options, ("sources", name), SourceConfig)
                if opts is not None and hasattr(cls, "check"):
                    self.own(cls.check(name, src, opts), path)
            for ident, fld in src.identity.fields().items():
                self.field_type(name, fld, f"{path}.identity.{ident}", "identity field")
            columns = self.fields.get(name)
            if src.connection is None and columns is not None:
                for col in src.schema_:
                    if col not in columns:  # a file's header is all its fields
                        self.err(f"{path}.schema.{col}", f"column '{col}' of schema: is not "
                                 f"in the file of source '{name}'",
                                 did_you_mean(col, list(columns)) or "remove it, or add the "
                                 "column to the file", "warning")

    def scores(self) -> None:
        for name, score in self.m.scores.items():
            path = f"scores.{name}"
            if not self.source_ref(f"{path}.source", score.source):
                continue
            source = self.p.source_of("scores", name)
            if isinstance(score, RfmScore | ClvScore):
                wanted = {"recency": _DATES, "frequency": (FieldType.number,),
                          "monetary": (FieldType.number,)} if isinstance(score, RfmScore) else {
                    "first_purchase": _DATES, "last_purchase": _DATES,
                    "purchases": (FieldType.number,), "revenue": (FieldType.number,)}
                for dim, types in wanted.items():
                    fld = getattr(score, dim)
                    t = self.field_type(source, fld, f"{path}.{dim}")
                    if t is not None and t not in types:
                        self.err(f"{path}.{dim}", f"{dim} field '{fld}' is {t.value}, "
                                 f"not {' or '.join(x.value for x in types)}",
                                 _SCHEMA_FIX.format(t=types[0].value))
                if isinstance(score, ClvScore) and score.horizon.total_seconds() <= 0:
                    self.err(f"{path}.horizon", "the horizon must be longer than 0",
                             "e.g. horizon: 90d")
            else:
                for i, term in enumerate(score.terms):
                    tp = f"{path}.terms[{i}].field"
                    t = self.field_type(source, term.field, tp)
                    if t is not None and t is not FieldType.number:
                        self.err(tp, f"weighted term '{term.field}' is {t.value}, not number",
                                 _SCHEMA_FIX.format(t="number"))

    def segments(self) -> None:
        for name, seg in self.m.segments.items():
            if self.source_ref(f"segments.{name}.source", seg.source):
                self.condition(f"segments.{name}.where", self.p.source_of("segments", name))

    def suppressions(self) -> None:
        dests = [d.name for d in self.m.destinations]
        for name, sup in self.m.suppressions.items():
            path = f"suppressions.{name}"
            if self.source_ref(f"{path}.source", sup.source):
                self.condition(f"{path}.where", self.p.source_of("suppressions", name))
            for i, d in enumerate(sup.scope or []):
                if d not in dests:
                    self.unknown_name(f"{path}.scope[{i}]", "destination", d, dests)
            if sup.file is not None and not self.p.resolve(sup.file).is_file():
                self.err(f"{path}.file", f"suppression file {sup.file} not found "
                         f"(looked in {self.p.resolve(sup.file)})",
                         "paths are relative to the mapping file's folder")

    # ------------------------------------------------------------ conditions

    def condition(self, where_path: str, source: str) -> None:
        cond = self.p.conditions.get(where_path)
        if cond is None:
            return
        for node in walk(cond):
            if isinstance(node, SegmentRef):
                if node.segment not in self.m.segments:
                    self.unknown_name(f"{node.path}.segment", "segment", node.segment,
                                      list(self.m.segments))
            elif isinstance(node, FieldCond):
                self.field_cond(node, source)

    def field_cond(self, c: FieldCond, source: str) -> None:
        t = self.field_type(source, c.field, f"{c.path}.field")
        vpath = f"{c.path}.{c.op}"
        if t is not None and c.op not in OPS_BY_TYPE[t]:
            self.err(vpath, f"operator '{c.op}' does not fit {t.value} field '{c.field}'",
                     _op_fix(c.op, t))
            return
        message = _value_problem(c.op, c.value, t)
        if message:
            self.err(vpath, message[0], message[1])
            return
        if t is FieldType.enumeration and c.field.endswith(".segment"):
            self.rfm_value(c, vpath)

    def rfm_value(self, c: FieldCond, vpath: str) -> None:
        score = self.m.scores.get(c.field.rsplit(".", 1)[0])
        if not isinstance(score, RfmScore) or c.op == "is_known":
            return
        names = list(score.segments_map or RFM_SEGMENTS)
        lower = {n.lower() for n in names}
        values = c.value if isinstance(c.value, list) else [c.value]
        for v in values:
            if c.op in ("eq", "ne", "in", "not_in") and str(v).strip().lower() not in lower:
                self.err(vpath, f"'{v}' is not an RFM segment of '{c.field.split('.')[0]}'",
                         did_you_mean(str(v), names) or f"one of: {', '.join(names)}")

    # ------------------------------------------------------------ cycles

    def cycles(self) -> None:
        refs: dict[str, list[SegmentRef]] = {}
        for name in self.m.segments:
            cond = self.p.where(name)
            refs[name] = [n for n in walk(cond) if isinstance(n, SegmentRef)] if cond else []
        seen: set[frozenset[str]] = set()
        for cycle, ref in _find_cycles(refs):
            key = frozenset(cycle)
            if key in seen:
                continue
            seen.add(key)
            self.err(f"{ref.path}.segment", "cycle between segments: " + " -> ".join(cycle),
                     f"a segment cannot depend on itself; remove one reference "
                     f"(e.g. {{segment: {cycle[1]}}} in '{cycle[0]}')")

    # ------------------------------------------------------------ groups and destinations

    def groups(self) -> None:
        owner: dict[str, str] = {}
        for name, g in self.m.groups.items():
            seen: set[str] = set()
            for i, seg in enumerate(g.segments):
                path = f"groups.{name}.segments[{i}]"
                if seg not in self.m.segments:
                    self.unknown_name(path, "segment", seg, list(self.m.segments))
                elif seg in seen:
                    self.err(path, f"segment '{seg}' is listed twice in group '{name}'",
                             "keep the first one")
                elif g.exclusive and seg in owner:
                    self.err(path, f"segment '{seg}' is in two exclusive groups: "
                             f"'{owner[seg]}' and '{name}'",
                             "a segment may belong to one exclusive group only")
                seen.add(seg)
                if g.exclusive:
                    owner.setdefault(seg, name)
            sources = {self.p.source_of("segments", s) for s in seen if s in self.m.segments}
            if len(sources) > 1:
                self.err(f"groups.{name}.segments", f"group '{name}' mixes segments of "
                         f"sources {', '.join(sorted(sources))}",
                         "a group's segments must all read the same source")

    def destinations(self) -> None:
        seen: dict[str, int] = {}
        targets: dict[str, int] = {}
        for i, d in enumerate(self.m.destinations):
            path = f"destinations[{i}]"
            if d.name in seen:
                self.err(f"{path}.name", f"duplicate destination name '{d.name}'",
                         f"destinations[{seen[d.name]}] already uses it; names must be unique")
            seen.setdefault(d.name, i)
            # two destinations writing one file, list or audience would undo each other
            target = self.target(d)
            if target in targets:
                self.err(path, f"destination '{d.name}' writes to the same place as "
                         f"destinations[{targets[target]}]", "give each destination its own "
                         "file, list or audience (a group: destination sends several segments)")
            targets.setdefault(target, i)
            source = self.audience(d, path)
            cls = self.connector("destination", d.type, f"{path}.type")
            if cls is not None:
                opts = self.options(cls, d.options, ("destinations", i), DestinationConfig)
                self.destination_connection(cls, d, path)
                if opts is not None and hasattr(cls, "check"):
                    self.own(cls.check(d, opts), path)
            elif d.connection is not None and d.connection not in self.m.connections:
                self.unknown_name(f"{path}.connection", "connection", d.connection,
                                  list(self.m.connections))
            if source is not None:
                self.destination_fields(d, path, source)

    def audience(self, d: Any, path: str) -> str | None:
        """Check segment/group; the source the destination's members come from."""
        if (d.segment is None) == (d.group is None):
            self.err(path, f"destination '{d.name}' needs exactly one of 'segment:' or 'group:'",
                     "segment: NAME sends one segment; group: NAME writes each member's "
                     "segment of an exclusive group")
            return None
        if d.segment is not None:
            if d.segment not in self.m.segments:
                self.unknown_name(f"{path}.segment", "segment", d.segment, list(self.m.segments))
                return None
            return self.p.source_of("segments", d.segment)
        group = self.m.groups.get(d.group)
        if group is None:
            self.unknown_name(f"{path}.group", "group", d.group, list(self.m.groups))
            return None
        first = next((s for s in group.segments if s in self.m.segments), None)
        return self.p.source_of("segments", first) if first else None

    def target(self, d: Any) -> str:
        """What names the remote object a destination writes: its type, connection and the
        option its connector names (``target_option``; all options when it names none)."""
        name = None
        if self.catalog is not None and d.type in list(self.catalog.names("destination")):
            try:
                name = getattr(self.catalog.load("destination", d.type), "target_option", None)
            except Exception:  # reported by connector() below
                name = None
        opts = {k: v for k, v in d.options.items() if name is None or k == name}
        opts = {k: os.path.realpath(self.p.resolve(v)) if k == "path" and isinstance(v, str)
                else v for k, v in opts.items()}
        return json.dumps([d.type, d.connection, opts], sort_keys=True, default=str)

    def own(self, problems: list[Problem], path: str) -> None:
        """A connector's own findings (``check``), their paths relative to ``path``."""
        for pr in problems:
            sub = pr.path if pr.path.startswith("[") or not pr.path else f".{pr.path}"
            self.err(f"{path}{sub}", pr.message, pr.fix, pr.severity)

    def destination_connection(self, cls: type, d: Any, path: str) -> None:
        wanted = tuple(getattr(cls, "connection_types", ()) or ())
        if d.connection is None:
            if wanted:
                self.err(path, f"destination type '{d.type}' needs a connection",
                         f"add connection: NAME (a connection of type {' or '.join(wanted)})")
            return
        conn = self.m.connections.get(d.connection)
        if conn is None:
            self.unknown_name(f"{path}.connection", "connection", d.connection,
                              list(self.m.connections))
        elif not wanted:
            self.err(f"{path}.connection", f"destination type '{d.type}' takes no connection",
                     "remove connection:")
        elif conn.type not in wanted:
            self.err(f"{path}.connection", f"connection '{d.connection}' is {conn.type}; "
                     f"'{d.type}' needs {' or '.join(wanted)}",
                     "name a connection of the right type")

    def destination_fields(self, d: Any, path: str, source: str) -> None:
        if d.consent is not None:
            t = self.field_type(source, d.consent, f"{path}.consent", "consent field")
            if t is not None and t is not FieldType.bool:
                self.err(f"{path}.consent", f"consent field '{d.consent}' is {t.value}, "
                         "not bool", _SCHEMA_FIX.format(t="bool"), "warning")
        mapped = self.m.sources[source].identity.fields()
        for j, ident in enumerate(d.identifiers):
            if ident not in mapped:
                self.err(f"{path}.identifiers[{j}]",
                         f"identifier '{ident}' is not mapped in source '{source}'",
                         f"add it under sources.{source}.identity (e.g. {ident}: FIELD)")

    # ------------------------------------------------------------ connections

    def store(self) -> None:
        """``store:`` is a path (the embedded DuckDB file) or a ``postgresql://`` URL; with
        ``engine: postgres``, the source's own database (the same URL) or omitted."""
        store = self.m.store
        if "://" in store and not store.startswith(("postgresql://", "postgres://")):
            self.err("store", f"store: {store.split('://')[0]}:// is not a store crmsync knows",
                     "a path (the DuckDB file, default .crmsync/state.duckdb) or "
                     "postgresql://user:password@host:5432/db")
            return
        if getattr(self.m, "engine", "duckdb") != "postgres" or \
                "store" not in self.m.model_fields_set:
            return
        dsns = [str((c.model_extra or {}).get("dsn")) for c in self.m.connections.values()
                if c.type == "postgres"]
        if store not in dsns:
            self.err("store", "with engine: postgres the store must be the source's own "
                     "database (the ledger and history live beside the table)",
                     "omit store:, or give it the same URL as the postgres connection's dsn:")

    def engine(self) -> None:
        """``engine: postgres`` evaluates every source in its one database: each source is
        a postgres table or query on connections with the same DSN; a clv score (fitted in
        the process) has no Postgres form."""
        if getattr(self.m, "engine", "duckdb") != "postgres":
            return
        dsns = set()
        for name, src in self.m.sources.items():
            conn = self.m.connections.get(src.connection or "")
            if conn is None or conn.type != "postgres":
                self.err(f"sources.{name}", "engine: postgres reads every source in place, "
                         "but this source is not a postgres table or query",
                         "set connection: to a postgres connection, or use engine: duckdb")
            else:
                dsns.add(str((conn.model_extra or {}).get("dsn")))
        if len(dsns) > 1:
            self.err("sources", "engine: postgres evaluates in one database, but the sources "
                     "use connections with different DSNs", "read every source from one "
                     "database, or use engine: duckdb")
        for name, score in self.m.scores.items():
            if isinstance(score, ClvScore):
                self.err(f"scores.{name}", "a clv score is fitted by the embedded engine "
                         "only", "use engine: duckdb for this mapping")

    def connections(self) -> None:
        for name, conn in self.m.connections.items():
            path = f"connections.{name}"
            cls = self.connector("connection", conn.type, f"{path}.type")
            if cls is None:
                continue
            data = conn.model_dump(exclude_unset=True)
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                try:
                    cls.model_validate(data)
                except ValidationError as exc:
                    self.pydantic(exc, ("connections", name), cls)
                for fld in _secret_fields(cls):
                    fpath = f"{path}.{fld}"
                    if fld in data and data[fld] not in (None, "") \
                            and fpath not in self.p.env_vars:
                        self.err(fpath, f"literal secret in '{fld}': never put secrets in "
                                 "the mapping; use ${VAR}",
                                 f"write {fld}: ${{{name.upper()}_{fld.upper()}}} and export "
                                 "that variable")

    # ------------------------------------------------------------ alerts

    def alerts(self) -> None:
        segs = list(self.m.segments)
        for i, a in enumerate(self.m.alerts):
            path = f"alerts[{i}]"
            if f"{path}.url" not in self.p.env_vars:
                self.err(f"{path}.url", "the webhook URL is written in the mapping; "
                         "its path is a secret", "use url: ${SLACK_WEBHOOK_URL}", "warning")
            for j, t in enumerate(a.transitions):
                for key, seg in (("from", t.from_), ("to", t.to)):
                    if seg not in segs:
                        self.unknown_name(f"{path}.transitions[{j}].{key}", "segment", seg, segs)
            if a.transitions and "transition" not in a.on:
                self.err(f"{path}.on", "transitions are listed but 'transition' is not in on:",
                         "add transition to on: [...]", "warning")
            if "transition" in a.on and not a.transitions:
                self.err(f"{path}.transitions", "on: transition but no transitions listed",
                         "add transitions: [{from: A, to: B}]", "warning")


# ---------------------------------------------------------------- pure helpers


def _find_cycles(refs: dict[str, list[SegmentRef]]) -> Iterator[tuple[list[str], SegmentRef]]:
    """Each cycle as [a, b, ..., a] with the reference that opens it (depth first)."""
    done: set[str] = set()

    def visit(node: str, stack: list[str], via: list[SegmentRef]):
        for ref in refs.get(node, []):
            nxt = ref.segment
            if nxt in stack:
                k = stack.index(nxt)
                yield [*stack[k:], nxt], ([*via, ref][k])
            elif nxt in refs and nxt not in done:
                yield from visit(nxt, [*stack, nxt], [*via, ref])
        done.add(node)

    for start in refs:
        if start not in done:
            yield from visit(start, [start], [])


def _op_fix(op: str, t: FieldType) -> str:
    """How to fix an operator that does not fit a field's type."""
    fits = OPS_BY_TYPE[t]
    swaps = {**MULTI_ALIASES, "has_any": "in", "has_none": "not_in", "has_all": "in",
             "within_last": "gte", "before": "lt", "after": "gt", "gt": "after", "lt": "before"}
    alt = swaps.get(op)
    if alt in fits:
        return f"use '{alt}' for a {t.value} field"
    needs = next((ft for ft in (FieldType.number, FieldType.date, FieldType.multi,
                                FieldType.string) if op in OPS_BY_TYPE[ft]), None)
    hint = f"; or {_SCHEMA_FIX.format(t=needs.value)}" if needs else ""
    return f"{t.value} fields take: {', '.join(fits)}{hint}"


def _value_problem(op: str, value: Any, t: FieldType | None) -> tuple[str, str] | None:
    """(message, fix) when ``value`` does not suit ``op`` on a field of type ``t``."""
    kind = OPERATORS[op]
    if kind in ("scalar", "ordered"):
        if isinstance(value, list | dict):
            return (f"'{op}' takes one value, got a {type(value).__name__}",
                    "use in: [...] for several values" if op == "eq" else "give one value")
        return _typed(op, value, t)
    if kind == "list":
        if not isinstance(value, list) or not value:
            return f"'{op}' takes a non-empty list", (
                f"write {op}: [{value}]" if not isinstance(value, list | dict) and value
                is not None else f"list at least one value: {op}: [A, B]")
        for v in value:
            bad = _typed(op, v, None if t is FieldType.multi else t)
            if bad:
                return bad
        return None
    if kind == "pair":
        if not isinstance(value, list) or len(value) != 2:
            return "'between' takes [lo, hi]", "write between: [LOW, HIGH] (both inclusive)"
        lo_hi = []
        for v in value:
            bad = _typed(op, v, t)
            if bad:
                return bad
            lo_hi.append(_parsed(v, t))
        lo, hi = lo_hi
        if lo is not None and type(lo) is type(hi) and lo > hi:
            return (f"between [{value[0]}, {value[1]}] matches nothing: low is above high",
                    f"write between: [{value[1]}, {value[0]}]")
        return None
    return _SHAPES[kind](op, value)


def _parsed(v: Any, t: FieldType | None) -> Any:
    if t is None:
        n = parse_number(v)
        return n if n is not None else parse_datetime(v)
    return parse_value(v, t) if t in (FieldType.number, *_DATES) else None


def _typed(op: str, v: Any, t: FieldType | None) -> tuple[str, str] | None:
    if v is None:
        return f"'{op}' needs a value", "to match contacts without a value use is_known: false"
    if isinstance(v, list | dict):
        return f"'{op}' takes a value, got {v!r}", "give a string, number, date or true/false"
    if t is None or parse_value(v, t) is not None:
        return None
    fixes = {FieldType.number: "write a plain number like 1000 or -2.5 (no thousands "
                               "separators); or declare the column as string in `schema:`",
             FieldType.bool: "write true or false",
             FieldType.date: "write an ISO 8601 date like 2026-03-01",
             FieldType.datetime: "write an ISO 8601 date-time like 2026-03-01T10:00:00Z"}
    return f"'{v}' is not a valid {t.value} for '{op}'", fixes.get(t, "give a non-empty value")


def _text(op: str, v: Any) -> tuple[str, str] | None:
    items = v if isinstance(v, list) else [v]
    if not items or any(isinstance(x, list | dict | bool) or x is None or not str(x).strip()
                        for x in items):
        return f"'{op}' takes a string or a list of strings", f"write {op}: TEXT or [A, B]"
    return None


def _regex(op: str, v: Any) -> tuple[str, str] | None:
    if not isinstance(v, str):
        return "'matches' takes a regular expression (a string)", "quote the pattern"
    import duckdb

    try:  # a connection of its own: the module-level default one may hold another's result
        with duckdb.connect() as con:
            con.execute("select regexp_matches('', ?)", [v]).fetchall()
    except duckdb.Error as exc:
        detail = str(exc).splitlines()[0]
        return (f"bad regular expression {v!r}: {detail}",
                "use RE2 syntax (no look-around or back-references); escape special "
                "characters with \\")
    return None


def _bool(op: str, v: Any) -> tuple[str, str] | None:
    if not isinstance(v, bool):
        return f"'{op}' takes true or false, got {v!r}", f"write {op}: true or {op}: false"
    return None


def _duration(op: str, v: Any) -> tuple[str, str] | None:
    try:
        parse_duration(v)
    except ValueError as exc:
        return str(exc), "write e.g. 30d, 12h, 2w or 90min"
    return None


def _date_or_duration(op: str, v: Any) -> tuple[str, str] | None:
    if is_duration(v) or (not isinstance(v, bool | list | dict) and parse_datetime(v)):
        return None
    if isinstance(v, str):
        try:
            parse_duration(v)
        except ValueError as exc:
            if "months" in str(exc):
                return str(exc), "write e.g. 90d"
    return (f"bad date {v!r} for '{op}'",
            "write an ISO 8601 date like 2026-03-01, or a duration like 30d (that long ago)")


def _percent(op: str, v: Any) -> tuple[str, str] | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 100:
        return (f"'{op}' takes a percentage above 0 and at most 100, got {v!r}",
                f"write e.g. {op}: 20")
    return None


_SHAPES = {"text": _text, "regex": _regex, "bool": _bool, "duration": _duration,
           "date_or_duration": _date_or_duration, "percent": _percent}


def _secret_fields(cls: type[BaseModel]) -> list[str]:
    """Fields of a connection class annotated SecretStr (optional ones included)."""
    out = []
    for name, f in cls.model_fields.items():
        ann = f.annotation
        args = typing.get_args(ann) if typing.get_origin(ann) is not None else (ann,)
        if any(a is SecretStr for a in args):
            out.append(f.alias or name)
    return out
