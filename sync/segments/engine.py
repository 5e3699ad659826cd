"""Set-based evaluation of one snapshot: typed contacts, scores, segments, groups, holdouts,
suppressions, consent — all as DuckDB SQL, never a Python loop per contact.

``Evaluation.build`` creates, per source, temp views over one materialised table:

* ``scored_<source>``: the snapshot (stored typed by SPEC's rules, see ``Store.write_pull``),
  with the scores (computed on read);
* ``eval_<source>`` (``Evaluation.table``): per contact ``_key``, the identifier columns
  (``Evaluation.id_column``), the consent fields, and boolean columns ``w:<segment>`` (raw
  where), ``m:<segment>`` (member after its exclusive group), ``h:<segment>`` (held out),
  ``s:<suppression>`` and ``u:<field>`` (a value present but unparseable, from the snapshot);
* ``full_<source>`` (``Evaluation.view``): every typed field and score beside the flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from ..errors import ConfigError
from ..mapping.loader import Project
from ..mapping.model import CLV_FIELDS, ClvScore, FieldCond, FieldType, walk
from ..mapping.scores import score_fields
from ..mapping.values import typed_sql
from ..sql import lit, q
from ..store.database import Store
from ..store.snapshot import CHECKED, snap
from .clv import ClvFit
from .clv import evaluate as clv_evaluate
from .compiler import (
    Compiler,
    percent_of,
    threshold_agg,
)
from .scores import rfm_columns, rfm_cutoffs_sql, weighted_sql


def holdout_sql(segment: str, percent: float) -> str:
    """Deterministic holdout: held out when the first 32 bits of md5("S:key") fall under P%."""
    return (f"(CAST('0x' || substr(md5({lit(segment)} || ':' || _key), 1, 8) AS UBIGINT) "
            f"< {percent / 100 * 2**32!r})")


@dataclass
class Evaluation:
    project: Project
    store: Store
    now: datetime
    fields: dict[str, dict[str, FieldType]] = field(default_factory=dict)  # source -> types
    warnings: list[str] = field(default_factory=list)
    unknown_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    thresholds: dict[tuple[str, str, str, float], Any] = field(default_factory=dict)
    dest_counts: dict[str, tuple[int, ...]] = field(default_factory=dict)  # see push.count_all
    id_columns: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> field -> col
    clv_fits: dict[str, ClvFit] = field(default_factory=dict)  # score name -> its fit

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self.store.con

    def table(self, source: str) -> str:
        """Per contact: ``_key``, the identifier and consent fields, and the flags."""
        return q(f"eval_{source}")

    def view(self, source: str) -> str:
        """Per contact: every typed field and score, and the flags."""
        return q(f"full_{source}")

    def _conditions(self, source: str) -> Iterator[FieldCond]:
        """Every field condition of the source's segments and suppressions."""
        for kind, names in (("segments", self.project.mapping.segments),
                            ("suppressions", self.project.mapping.suppressions)):
            for name in names:
                cond = self.project.conditions.get(f"{kind}.{name}.where")
                if cond is not None and self.project.source_of(kind, name) == source:
                    yield from (n for n in walk(cond) if isinstance(n, FieldCond))

    def id_column(self, source: str, fld: str) -> str:
        """The column holding identifier field ``fld`` as text for destinations,
        the field itself or ``t:<field>`` (see ``store.snapshot.TEXT_KEPT``)."""
        return self.id_columns.get(source, {}).get(fld, fld)

    def _carried(self, source: str) -> list[str]:
        m = self.project.mapping
        fields = [self.id_column(source, f) for f in m.sources[source].identity.fields().values()]
        for d in m.destinations:
            if d.consent and self.project.source_of(
                    "segments", self.project.segments_of(d)[0]) == source:
                fields.append(d.consent)
        return list(dict.fromkeys(fields))

    # ------------------------------------------------------------ build
    @classmethod
    def build(cls, project: Project, store: Store, now: datetime) -> Evaluation:
        ev = cls(project, store, now)
        for source in project.mapping.sources:
            ev._build_source(source)
        return ev

    def _build_source(self, source: str) -> None:
        """One pass over the typed snapshot: scored and flagged, materialising only the
        key, the fields destinations read and the flags. The RFM cut-offs and the percent
        thresholds come first, from narrow queries."""
        m, con = self.project.mapping, self.con
        found = self.store.schema(source)
        if found is None:
            raise ConfigError([self.project.problem(
                f"sources.{source}", "no snapshot of this source in the store yet",
                "run `crmsync plan` without --offline first")])
        key_field, schema = found
        kept = self.store.layout(source)
        if kept is None:
            raise ConfigError([self.project.problem(
                f"sources.{source}", "the stored snapshot of this source was written by an "
                "older crmsync", "run `crmsync plan` without --offline once (a full pull)")])
        # the snapshot is stored typed (Store.write_pull): the key is a field like any other
        # (conditions may name it), identifiers go to destinations as text, not as their
        # typed value (a zip typed number stays "02134"; see store.snapshot.TEXT_KEPT)
        extra = [f"{typed_sql('_key', schema.get(key_field, FieldType.string), stripped=True)}"
                 f" AS {q(key_field)}"]
        texts: dict[str, str] = {}
        for f in m.sources[source].identity.fields().values():
            if f not in schema or f == key_field:
                continue
            if f in kept["texts"]:
                texts[f] = "t:" + f
            elif schema[f] is FieldType.date:
                texts[f] = "t:" + f
                extra.append(f"strftime({q(f)}, '%Y-%m-%d') AS {q(texts[f])}")
        self.id_columns[source] = texts
        checks = [f for f, t in schema.items() if f != key_field and t in CHECKED]
        view = f"(SELECT *, {', '.join(extra)} FROM {snap(source)})"
        # scores, as two layers of expressions over the typed fields
        fields = dict(schema)
        first, second = [], []
        for name, score in m.scores.items():
            if self.project.source_of("scores", name) != source:
                continue
            fields.update(score_fields(name, score))
            if isinstance(score, ClvScore):
                view = self._clv(source, name, score, view)
            elif score.type == "rfm":
                sql = rfm_cutoffs_sql(score, view)
                row = con.execute(sql).fetchone() if sql else ()
                cutoffs = [c for cuts in row for c in (cuts or [None] * 4)]  # None: nobody
                a, b = rfm_columns(name, score, cutoffs, self.now)
                first += a
                second += b
            else:
                first.append(f"{weighted_sql(score)} AS {q(name)}")
        for layer in (first, second):
            if layer:
                view = f"(SELECT *, {', '.join(layer)} FROM {view})"
        scored = q(f"scored_{source}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {scored} AS SELECT * FROM {view}")
        self.fields[source] = fields
        # every percent threshold the rules use, in one scan
        wanted = sorted({(c.field, c.op, percent_of(c)) for c in self._conditions(source)
                         if c.op in ("top_percent", "bottom_percent")})
        if wanted:
            row = con.execute(f"SELECT {', '.join(threshold_agg(*w) for w in wanted)} "
                              f"FROM {scored}").fetchone()
            self.thresholds.update(((source, *w), v) for w, v in zip(wanted, row, strict=True))
        # segments, groups, holdouts, suppressions
        compiler = self.compiler(source, scored)
        segs = [s for s in m.segments if self.project.source_of("segments", s) == source]
        exprs = [f"{compiler.segment_sql(s)} AS {q('w:' + s)}" for s in segs]
        sups = [s for s in m.suppressions if self.project.source_of("suppressions", s) == source]
        for s in sups:
            exprs.append(f"{self.suppression_sql(s, compiler)} AS {q('s:' + s)}")
        member = {s: q("w:" + s) for s in segs}
        for g in m.groups.values():
            if not g.exclusive:
                continue
            earlier: list[str] = []
            for s in g.segments:
                if s in member:
                    member[s] = " AND ".join([q("w:" + s), *(f"NOT {q('w:' + e)}" for e in earlier)])
                    earlier.append(s)
        # materialised: the key, the fields destinations read (identifiers, consent), the
        # unparseable-value flags and the segment flags that are not constant or copies
        # (m: differs from w: only in an exclusive group, h: is FALSE without a holdout);
        # the view eval_<source> adds those as aliases
        carried = [q(f) for f in self._carried(source)
                   if (f in fields or f in texts.values()) and f != "_key"]
        stored = ["_key", *carried, *(q("u:" + f) for f in checks),
                  *(e.rsplit(" AS ", 1)[1] for e in exprs)]
        aliases = []
        for s in segs:
            mq, hq, hold = q("m:" + s), q("h:" + s), m.segments[s].holdout
            if member[s] == q("w:" + s):
                aliases.append(f"{member[s]} AS {mq}")
            else:
                stored.append(f"({member[s]}) AS {mq}")
            if hold:
                stored.append(f"{holdout_sql(s, hold)} AS {hq}")
            else:
                aliases.append(f"FALSE AS {hq}")
        flags = q(f"flags_{source}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {flags} AS SELECT {', '.join(stored)} "
                    f"FROM (SELECT {''.join(e + ', ' for e in exprs)}* FROM {scored})")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {self.table(source)} AS SELECT *"
                    f"{''.join(', ' + a for a in aliases)} FROM {flags}")
        # every typed field beside them: the flags are a pure projection of the snapshot's
        # scan, so in its row order, and a positional join lines the two up (no copy, no hash)
        hide = ", ".join(["_key", *carried, *(q("u:" + f) for f in checks)])
        con.execute(f"CREATE OR REPLACE TEMP VIEW {self.view(source)} AS SELECT * FROM {scored} "
                    f"POSITIONAL JOIN (SELECT * EXCLUDE ({hide}) FROM {self.table(source)})")
        # unparseable values, per field
        if checks:
            sel = ", ".join(f"count(*) FILTER (WHERE {q('u:' + f)})" for f in checks)
            counts = con.execute(f"SELECT {sel} FROM {self.table(source)}").fetchone()
            bad = {f: int(n) for f, n in zip(checks, counts, strict=True) if n}
            self.unknown_counts[source] = bad
            for f, n in bad.items():
                self.warnings.append(f"{source}.{f}: {n} value(s) could not be parsed as "
                                     f"{schema[f]} and count as unknown")

    def _clv(self, source: str, name: str, score: ClvScore, view: str) -> str:
        """Fit the CLV models over ``view`` (the snapshot, every contact) and return it with
        the four ``<name>.*`` fields beside: the inputs are read as numpy arrays in the
        view's scan order, and the scores, registered as a relation in that order, are
        lined up with it by a positional join (NaN, the models' unknown, becomes NULL)."""
        def days(f: str) -> str:
            return f"coalesce(epoch({q(f)}) / 86400.0, 'NaN'::DOUBLE)"

        def num(f: str) -> str:
            return f"coalesce(CAST({q(f)} AS DOUBLE), 'NaN'::DOUBLE)"

        cols = self.con.execute(
            f"SELECT {days(score.first_purchase)}, {days(score.last_purchase)}, "
            f"{num(score.purchases)}, {num(score.revenue)} FROM {view}").fetchnumpy()
        first, last, purchases, revenue = cols.values()
        now = (self.now - datetime(1970, 1, 1, tzinfo=self.now.tzinfo)).total_seconds() / 86400
        res = clv_evaluate(first, last, purchases, revenue, now,
                           score.horizon.total_seconds() / 86400)
        self.clv_fits[name] = res.fit
        self.warnings += [f"score {name}: {w}" for w in res.warnings]
        rel = f"clv_{source}_{name}"
        self.con.register(rel, {f: getattr(res, f) for f in CLV_FIELDS})
        out = ", ".join(f"CASE WHEN NOT isnan({q(f)}) THEN {q(f)} END AS {q(f'{name}.{f}')}"
                        for f in CLV_FIELDS)
        return f"(SELECT * FROM {view} POSITIONAL JOIN (SELECT {out} FROM {q(rel)}))"

    def compiler(self, source: str, table: str) -> Compiler:
        m, con = self.project.mapping, self.con
        cache: dict[str, str] = {}
        stack: list[str] = []

        def threshold(fld: str, op: str, percent: float) -> Any:
            key = (source, fld, op, percent)
            if key not in self.thresholds:
                self.thresholds[key] = con.execute(
                    f"SELECT {threshold_agg(fld, op, percent)} FROM {table}").fetchone()[0]
            return self.thresholds[key]

        def segment_sql(name: str) -> str:
            if name in cache:
                return cache[name]
            if name in stack or name not in m.segments:
                raise ConfigError([self.project.problem(
                    f"segments.{name}", f"segment reference cycle or unknown segment: "
                    f"{' -> '.join([*stack, name])}", "remove the cycle")])
            stack.append(name)
            cond = self.project.where(name)
            cache[name] = f"({comp.compile(cond)})" if cond is not None else "FALSE"
            stack.pop()
            return cache[name]

        comp = Compiler(self.fields[source], self.now, threshold, segment_sql)
        return comp

    def suppression_sql(self, name: str, compiler: Compiler) -> str:
        sup = self.project.mapping.suppressions[name]
        parts = []
        cond = self.project.conditions.get(f"suppressions.{name}.where")
        if cond is not None:
            parts.append(compiler.compile(cond))
        if sup.file:
            path = self.project.resolve(sup.file)
            entries = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()
                       if ln.strip() and not ln.lstrip().startswith("#")]
            if entries and entries[0].lower() in ("email", "key", "id", "email,key"):
                entries = entries[1:]
            emails = sorted({e.lower() for e in entries if "@" in e})
            keys = sorted({e for e in entries if "@" not in e})
            email_field = self.project.mapping.sources[
                self.project.source_of("suppressions", name)].identity.email
            if keys:
                parts.append(f"_key IN ({', '.join(lit(k) for k in keys)})")
            if emails and email_field:
                parts.append(f"coalesce(lower({q(email_field)}) IN "
                             f"({', '.join(lit(e) for e in emails)}), FALSE)")
        return "(" + " OR ".join(parts) + ")" if parts else "FALSE"

    # ------------------------------------------------------------ reading results
    def segment_sizes(self) -> dict[str, dict[str, int]]:
        out = {}
        for source in self.project.mapping.sources:
            segs = [s for s in self.project.mapping.segments
                    if self.project.source_of("segments", s) == source]
            if not segs:
                continue
            sel = ", ".join(f"count(*) FILTER (WHERE {q('m:' + s)}), "
                            f"count(*) FILTER (WHERE {q('m:' + s)} AND {q('h:' + s)})"
                            for s in segs)
            row = self.con.execute(f"SELECT {sel} FROM {self.table(source)}").fetchone()
            for i, s in enumerate(segs):
                out[s] = {"matched": int(row[2 * i]), "held_out": int(row[2 * i + 1])}
        return out
