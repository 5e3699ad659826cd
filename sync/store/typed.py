"""SPEC's value parsing rules as SQLGlot trees over raw text columns: typed values, the
unparseable-value flags and the typed rows a snapshot (or a table read in place) is made of.
Rendered for the engine by ``sql.portable.render``."""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from ..mapping.model import FieldType
from ..mapping.values import CHECKED, EPOCH_RE, FALSE, ISO_RE, NUMBER_RE, TRUE
from ..sql import portable as P
from ..sql.portable import col, lit

TEXT = (FieldType.string, FieldType.enumeration)
DOUBLE, BIGINT, INT, VARCHAR = (exp.DataType.Type.DOUBLE, exp.DataType.Type.BIGINT,
                                exp.DataType.Type.INT, exp.DataType.Type.VARCHAR)


def _in(e: exp.Expression, values: list[exp.Expression]) -> exp.In:
    return exp.In(this=e, expressions=values)


def and_(*xs: exp.Expression) -> exp.Expression:
    return exp.and_(*xs, wrap=False) if len(xs) > 1 else xs[0]


def paren(e: exp.Expression) -> exp.Paren:
    return exp.Paren(this=e)


def case(*whens: tuple[exp.Expression, exp.Expression]) -> exp.Case:
    c = exp.Case()
    for cond, then in whens:
        c = c.when(cond, then)
    return c


# ---------------------------------------------------------------- typed values


def typed(raw: exp.Expression, ftype: FieldType, *, stripped: bool = False) -> exp.Expression:
    """Raw text ``raw`` -> its typed value by SPEC's rules, or NULL (unknown)."""
    t = raw if stripped else P.Strip(this=raw)
    if ftype in TEXT:
        return exp.Nullif(this=t, expression=lit(""))
    if ftype is FieldType.number:
        return case((P.FullMatch(this=t, expression=lit(NUMBER_RE)), exp.cast(t, DOUBLE)))
    if ftype is FieldType.bool:
        low = exp.Lower(this=t)
        return case((_in(low, [lit(x) for x in TRUE]), exp.true()),
                    (_in(low, [lit(x) for x in FALSE]), exp.false()))
    if ftype in (FieldType.date, FieldType.datetime):
        ts = case((P.FullMatch(this=t, expression=lit(EPOCH_RE)), P.EpochMs(this=t)),
                  (P.FullMatch(this=t, expression=lit(ISO_RE)), P.IsoTimestamp(this=t)))
        return day(ts) if ftype is FieldType.date else ts
    if ftype is FieldType.multi:
        return P.SplitMulti(this=raw)
    raise ValueError(ftype)


def day(ts: exp.Expression) -> exp.Expression:
    return exp.TimestampTrunc(this=ts, unit=exp.var("day"))


def _ascii_graphic(e: exp.Expression) -> exp.Expression:
    """``e`` (one character's text) is printable ASCII, never whitespace."""
    return exp.Between(this=exp.Anonymous(this="ascii", expressions=[e]),
                       low=exp.Literal.number(33), high=exp.Literal.number(126))


def strip(raw: exp.Expression) -> exp.Expression:
    """``P.Strip`` of ``raw``, skipped for text that starts and ends with printable ASCII
    (nothing to strip: most values, and a regular-expression replace is the costliest step
    of typing a file)."""
    plain = and_(_ascii_graphic(raw),
                 _ascii_graphic(exp.Right(this=raw, expression=exp.Literal.number(1))))
    return case((plain, raw)).else_(P.Strip(this=raw))


def unparseable(stripped: exp.Expression, value: exp.Expression) -> exp.Expression:
    """A value present (non-empty once stripped) whose typed value is unknown."""
    return paren(and_(exp.NEQ(this=stripped, expression=lit("")), exp.Is(this=value,
                                                                        expression=exp.null())))


def typed_rows(src: exp.Expression, key_field: str, schema: dict[str, FieldType],
               texts: list[str],
               layer: Callable[[exp.Select, str], exp.Expression] | None = None
               ) -> exp.Select:
    """The rows of ``src`` typed as the evaluation reads them (see ``engine.Relation``):
    ``_key`` (text, stripped), each field typed, ``u:<field>`` for the fields whose text can
    fail to parse, ``t:<field>`` (the stripped text) for ``texts``. In layers: each value is
    stripped once (``x:<field>``), then typed once. Every column is read as text first, so a
    column the database holds typed (numeric, boolean, date, timestamptz in a UTC session)
    parses to its own value. ``layer(select, name)``: how a layer is read by the next
    (default: a subquery; Postgres would inline it into every use of its columns, so there
    each is a temp table)."""
    layer = layer or (lambda sel, name: sel.subquery(name))
    fields = [f for f in schema if f != key_field]
    x = {f: col("x:" + f) for f in fields}
    stripped = [exp.alias_(strip(exp.cast(col(key_field), VARCHAR)), "_key")]
    stripped += [exp.alias_(strip(exp.cast(col(f), VARCHAR)), "x:" + f, quoted=True)
                 for f in fields]
    layer1 = layer(exp.select(*stripped).from_(src), "_r")
    values = [exp.column("_key"), *x.values()]
    values += [exp.alias_(typed(x[f], schema[f], stripped=True), f, quoted=True)
               for f in fields]
    layer2 = layer(exp.select(*values).from_(layer1), "_t")
    out: list[exp.Expression] = [exp.column("_key"), *(col(f) for f in fields)]
    out += [exp.alias_(unparseable(x[f], col(f)), "u:" + f, quoted=True)
            for f in fields if schema[f] in CHECKED]
    out += [exp.alias_(exp.Nullif(this=x[f], expression=lit("")), "t:" + f, quoted=True)
            for f in texts]
    return exp.select(*out).from_(layer2)
