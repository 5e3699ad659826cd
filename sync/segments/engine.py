"""Set-based evaluation of one snapshot: typed contacts, scores, segments, groups, holdouts,
suppressions, consent — all as SQL (the compiler's trees rendered for the engine: DuckDB over
the store's snapshot, or Postgres over the source table, see ``warehouse``), never a Python
loop per contact.

``Evaluation.build`` (``build_on``) creates, per source, temp views over one materialised
table:

* ``scored_<source>``: the snapshot (stored typed by SPEC's rules, see ``Store.write_pull``),
  with the scores (computed on read);
* ``eval_<source>`` (``Evaluation.table``): per contact ``_key``, the identifier columns
  (``Evaluation.id_column``), the consent fields, and boolean columns ``w:<segment>`` (raw
  where), ``m:<segment>`` (member after its exclusive group), ``h:<segment>`` (held out;
  false outside the segment), ``s:<suppression>``, ``u:<field>`` (a value present but
  unparseable, from the snapshot) and ``bad:<identifier column>`` (``unusable``);
* ``full_<source>`` (``Evaluation.view``): every typed field and score beside the flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from ..errors import ConfigError
from ..mapping.loader import Project
from ..mapping.model import CLV_FIELDS, ClvScore, FieldCond, FieldType, walk
from ..mapping.scores import score_fields
from ..mapping.values import CHECKED
from ..sql import q
from ..sql.portable import DateText, Lower, Raw, col, lit, render
from ..store.database import Store
from ..store.typed import paren, typed
from .compiler import Compiler, holdout, percent_of, threshold_agg
from .scores import rfm_columns, rfm_cutoffs, weighted

if TYPE_CHECKING:
    from .clv import ClvFit


def unusable(col: str, engine: str) -> str:
    """SQL: the identifier text ``col`` cannot identify anyone: it is written as a JSON
    object (``{...}``: a nested value from a JSON lines source), or holds a NUL byte
    (Postgres text cannot hold one). Such contacts are counted as ``no_identifier``, never
    written or hashed. The same rule on both engines."""
    bad = f"{col} LIKE '{{%}}'"
    return f"contains({col}, chr(0)) OR {bad}" if engine == "duckdb" else bad


@dataclass
class Relation:
    """The typed contacts of one source as the evaluation reads them: a table or subquery
    with ``_key``, each field typed, ``u:<field>`` (a value present but unparseable) for the
    fields in ``checks`` and ``t:<field>`` for the identifiers in ``texts``."""

    sql: exp.Expression
    key_field: str
    schema: dict[str, FieldType]
    texts: list[str]
    checks: list[str]


@dataclass
class Evaluation:
    project: Project
    store: Store | None
    now: datetime
    fields: dict[str, dict[str, FieldType]] = field(default_factory=dict)  # source -> types
    warnings: list[str] = field(default_factory=list)
    unknown_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    thresholds: dict[tuple[str, str, str, float], Any] = field(default_factory=dict)
    dest_counts: dict[str, tuple[int, ...]] = field(default_factory=dict)  # see push.count_all
    id_columns: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> field -> col
    checked_ids: dict[str, list[str]] = field(default_factory=dict)  # source -> bad: flagged
    clv_fits: dict[str, ClvFit] = field(default_factory=dict)  # score name -> its fit
    engine: str = "duckdb"  # the SQL dialect of ``con`` (see sql.portable)
    connection: Any = None  # with engine postgres: a psycopg connection

    @property
    def con(self) -> Any:
        return self.connection if self.connection is not None else self.store.con

    def sql(self, tree: exp.Expression) -> str:
        """``tree`` as this engine's SQL."""
        return render(tree, self.engine)

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

    def usable(self, source: str, col: str) -> str:
        """SQL: the text of identifier column ``col``, NULL when ``unusable`` (read from its
        ``bad:<col>`` flag, computed once with the others)."""
        text = f"CAST({q(col)} AS VARCHAR)"
        if col in self.checked_ids.get(source, ()):
            return f"CASE WHEN {q('bad:' + col)} THEN NULL ELSE {text} END"
        return f"CASE WHEN {unusable(text, self.engine)} THEN NULL ELSE {text} END"

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
        """Evaluate the store's snapshot (the embedded engine)."""
        ev = cls(project, store, now)
        for source in project.mapping.sources:
            ev._build_source(source, ev._stored(source))
        return ev

    @classmethod
    def build_on(cls, project: Project, connection: Any, engine: str,
                 relations: dict[str, Relation], now: datetime) -> Evaluation:
        """Evaluate ``relations`` (source -> typed contacts) in another database, e.g. a
        Postgres source table read in place (``engine: postgres``)."""
        ev = cls(project, None, now, engine=engine, connection=connection)
        for source in project.mapping.sources:
            ev._build_source(source, relations[source])
        return ev

    def _stored(self, source: str) -> Relation:
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
        checks = [f for f, t in schema.items() if f != key_field and t in CHECKED]
        return Relation(exp.Table(this=exp.to_identifier(f"snap_{source}", quoted=True)), key_field, schema,
                        list(kept["texts"]), checks)

    def temp(self, kind: str, name: str, select: str) -> None:
        """CREATE OR REPLACE a temp ``kind`` (TABLE or VIEW) as ``select``."""
        if self.engine == "duckdb" or kind == "VIEW":
            self.con.execute(f"CREATE OR REPLACE TEMP {kind} {name} AS {select}")
        else:
            self.con.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
            self.con.execute(f"CREATE TEMP TABLE {name} AS {select}")

    def _build_source(self, source: str, rel: Relation) -> None:
        """One pass over the typed contacts: scored and flagged, materialising only the
        key, the fields destinations read and the flags. The RFM cut-offs and the percent
        thresholds come first, from narrow queries."""
        m, con = self.project.mapping, self.con
        key_field, schema, checks = rel.key_field, rel.schema, rel.checks
        # the key is a field like any other (conditions may name it), identifiers go to
        # destinations as text, not as their typed value (a zip typed number stays "02134";
        # see store.snapshot.TEXT_KEPT)
        extra: list[exp.Expression] = [exp.alias_(
            typed(exp.column("_key"), schema.get(key_field, FieldType.string), stripped=True),
            key_field, quoted=True)]
        texts: dict[str, str] = {}
        for f in m.sources[source].identity.fields().values():
            if f not in schema or f == key_field:
                continue
            if f in rel.texts:
                texts[f] = "t:" + f
            elif schema[f] is FieldType.date:
                texts[f] = "t:" + f
                extra.append(exp.alias_(DateText(this=col(f)), texts[f], quoted=True))
        self.id_columns[source] = texts
        view = exp.select(exp.Star(), *extra).from_(rel.sql).subquery("_v0")
        # scores, as two layers of expressions over the typed fields
        fields = dict(schema)
        first: list[exp.Expression] = []
        second: list[exp.Expression] = []
        for name, score in m.scores.items():
            if self.project.source_of("scores", name) != source:
                continue
            fields.update(score_fields(name, score))
            if isinstance(score, ClvScore):
                if self.engine != "duckdb":
                    raise ConfigError([self.project.problem(
                        f"scores.{name}", "a clv score is fitted by the embedded engine only",
                        "use engine: duckdb for this mapping")])
                view = Raw(this=self._clv(source, name, score, self.sql(view)))
            elif score.type == "rfm":
                cut = rfm_cutoffs(score, view)
                row = con.execute(self.sql(cut)).fetchone() if cut is not None else ()
                cutoffs = [c for cuts in row for c in (cuts or [None] * 4)]  # None: nobody
                a, b = rfm_columns(name, score, cutoffs, self.now)
                first += a
                second += b
            else:
                first.append(exp.alias_(weighted(score), name, quoted=True))
        for i, layer in enumerate((first, second), 1):
            if layer:
                view = exp.select(exp.Star(), *layer).from_(view).subquery(f"_v{i}")
        scored = q(f"scored_{source}")
        self.temp("VIEW", scored, self.sql(exp.select(exp.Star()).from_(view)))
        self.fields[source] = fields
        # every percent threshold the rules use, in one scan
        wanted = sorted({(c.field, c.op, percent_of(c)) for c in self._conditions(source)
                         if c.op in ("top_percent", "bottom_percent")})
        if wanted:
            row = con.execute(self.sql(exp.select(*(threshold_agg(*w) for w in wanted)).from_(
                exp.Table(this=exp.to_identifier(f"scored_{source}", quoted=True))))
                              ).fetchone()
            self.thresholds.update(((source, *w), v) for w, v in zip(wanted, row, strict=True))
        # segments, groups, holdouts, suppressions
        compiler = self.compiler(source, scored)
        segs = [s for s in m.segments if self.project.source_of("segments", s) == source]
        exprs = [f"{self.sql(compiler.segment(s))} AS {q('w:' + s)}" for s in segs]
        sups = [s for s in m.suppressions if self.project.source_of("suppressions", s) == source]
        for s in sups:
            exprs.append(f"{self.sql(self.suppression(s, compiler))} AS {q('s:' + s)}")
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
        ids = [c for c in dict.fromkeys(self.id_column(source, f) for f in
                                        m.sources[source].identity.fields().values())
               if c in fields or c in texts.values()]
        bads = [f"({unusable(f'CAST({q(c)} AS VARCHAR)', self.engine)}) AS {q('bad:' + c)}"
                for c in ids]
        stored = ["_key", *carried, *(q("u:" + f) for f in checks), *bads,
                  *(e.rsplit(" AS ", 1)[1] for e in exprs)]
        aliases = []
        for s in segs:
            mq, hq, hold = q("m:" + s), q("h:" + s), m.segments[s].holdout
            if member[s] == q("w:" + s):
                aliases.append(f"{member[s]} AS {mq}")
            else:
                stored.append(f"({member[s]}) AS {mq}")
            if hold:  # hashed for the segment's contacts only (h: is read with m:)
                stored.append(f"(CASE WHEN {q('w:' + s)} THEN {self.sql(holdout(s, hold))} "
                              f"ELSE FALSE END) AS {hq}")
            else:
                aliases.append(f"FALSE AS {hq}")
        flags = q(f"flags_{source}")
        self.temp("TABLE", flags, f"SELECT {', '.join(stored)} FROM (SELECT "
                   f"{''.join(e + ', ' for e in exprs)}* FROM {scored}) AS _s")
        self.temp("VIEW", self.table(source), f"SELECT *{''.join(', ' + a for a in aliases)} "
                   f"FROM {flags}")
        self.checked_ids[source] = ids
        # every typed field beside them
        hide = ["_key", *carried, *(q("u:" + f) for f in checks)]
        if self.engine == "duckdb":
            # the flags are a pure projection of the snapshot's scan, so in its row order,
            # and a positional join lines the two up (no copy, no hash)
            self.temp("VIEW", self.view(source), f"SELECT * FROM {scored} POSITIONAL JOIN "
                       f"(SELECT * EXCLUDE ({', '.join(hide)}) FROM {self.table(source)})")
        else:
            shown = [e.rsplit(" AS ", 1)[1] for e in exprs] + [
                x for s in segs for x in (q("m:" + s), q("h:" + s))] + [
                q("bad:" + c) for c in ids]
            self.temp("VIEW", self.view(source), f"SELECT s.*, {', '.join('e.' + c for c in shown)}"
                       f" FROM {scored} s JOIN {self.table(source)} e USING (_key)")
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
        from .clv import evaluate as clv_evaluate  # scipy: imported by mappings with a clv

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
        cache: dict[str, exp.Expression] = {}
        stack: list[str] = []

        def threshold(fld: str, op: str, percent: float) -> Any:
            key = (source, fld, op, percent)
            if key not in self.thresholds:
                self.thresholds[key] = con.execute(
                    f"SELECT {self.sql(threshold_agg(fld, op, percent))} FROM {table}"
                ).fetchone()[0]
            return self.thresholds[key]

        def segment(name: str) -> exp.Expression:
            if name in cache:
                return cache[name].copy()
            if name in stack or name not in m.segments:
                raise ConfigError([self.project.problem(
                    f"segments.{name}", f"segment reference cycle or unknown segment: "
                    f"{' -> '.join([*stack, name])}", "remove the cycle")])
            stack.append(name)
            cond = self.project.where(name)
            cache[name] = paren(comp.compile(cond)) if cond is not None else exp.false()
            stack.pop()
            return cache[name].copy()

        comp = Compiler(self.fields[source], self.now, threshold, segment)
        return comp

    def suppression(self, name: str, compiler: Compiler) -> exp.Expression:
        """Suppression ``name`` as a condition; the entries of its file, if any, are loaded
        into a temp table ``sup_<name>`` (keys and lower-cased emails)."""
        sup = self.project.mapping.suppressions[name]
        parts: list[exp.Expression] = []
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
            table = f"sup_{name}"
            self._load_list(table, [("key", k) for k in keys] + [("email", e) for e in emails])

            def listed(kind: str) -> exp.Expression:
                return exp.select("entry").from_(exp.Table(this=exp.to_identifier(
                    table, quoted=True))).where(exp.EQ(this=exp.column("kind"),
                                                       expression=lit(kind))).subquery()
            if keys:
                parts.append(exp.In(this=exp.column("_key"), query=listed("key")))
            if emails and email_field:
                parts.append(exp.Coalesce(this=exp.In(this=Lower(this=col(email_field)),
                                                      query=listed("email")),
                                          expressions=[exp.false()]))
        return paren(exp.or_(*parts, wrap=False)) if parts else exp.false()

    def _load_list(self, table: str, rows: list[tuple[str, str]]) -> None:
        """A temp table ``table`` (kind, entry) holding ``rows``."""
        self.temp("TABLE", q(table), "SELECT CAST(NULL AS VARCHAR) AS kind, "
                   "CAST(NULL AS VARCHAR) AS entry LIMIT 0")
        if not rows:
            return
        if self.engine == "duckdb":
            kinds, entries = zip(*rows, strict=True)
            self.con.execute(f"INSERT INTO {q(table)} SELECT unnest(?), unnest(?)",
                             [list(kinds), list(entries)])
        else:
            with self.con.cursor() as cur, cur.copy(f"COPY {q(table)} FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)

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
