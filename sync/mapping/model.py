"""The mapping file (version 1) as typed objects.

The pydantic models check shape; `sync.loader` adds file:line to their errors and
`sync.validate` does the semantic checks (fields against the schema, cycles, types).
Conditions are parsed by hand into small frozen dataclasses so that every error can name
its exact path (``segments.champions.where.all[2]``) and a fix.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from ..errors import Problem
from .operators import OPERATORS
from .types import FieldType

# ---------------------------------------------------------------- scalar types


_DURATION = re.compile(r"^\s*(\d+)\s*(min|h|d|w)\s*$")
_UNITS = {"min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


MAX_DURATION = timedelta(days=36525)


def parse_duration(text: Any) -> timedelta:
    """`Nmin`, `Nh`, `Nd`, `Nw` -> timedelta. Months and years are refused (say days)."""
    m = _DURATION.match(str(text))
    if not m:
        if re.match(r"^\s*\d+\s*(mo|month|months|m|y|yr|year|years)\s*$", str(text)):
            raise ValueError(f"bad duration {text!r}: months and years are not allowed; say days (e.g. 90d)")
        raise ValueError(f"bad duration {text!r}: use Nmin, Nh, Nd or Nw (e.g. 30d)")
    try:
        td = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    except OverflowError:
        td = timedelta.max
    if td > MAX_DURATION:
        raise ValueError(f"duration {text!r} is too long: at most 100 years (36525d)")
    return td


def is_duration(text: Any) -> bool:
    return isinstance(text, str) and bool(_DURATION.match(text))


def format_duration(td: timedelta) -> str:
    secs = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs // 60}min"


Duration = Annotated[
    timedelta,
    BeforeValidator(lambda v: v if isinstance(v, timedelta) else parse_duration(v)),
    PlainSerializer(format_duration),
]


def _percent(v: Any) -> float:
    if isinstance(v, str):
        s = v.strip().rstrip("%").strip()
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"bad percentage {v!r}: write e.g. 10%") from None
    if not isinstance(v, int | float) or not 0 <= v <= 100:
        raise ValueError(f"bad percentage {v!r}: must be between 0% and 100%")
    return float(v)


Percent = Annotated[float, BeforeValidator(_percent)]

# ---------------------------------------------------------------- conditions

GROUP_KEYS = ("all", "any", "not")


@dataclass(frozen=True)
class FieldCond:
    field: str
    op: str
    value: Any
    or_unknown: bool
    path: str


@dataclass(frozen=True)
class SegmentRef:
    segment: str
    path: str


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]
    path: str


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]
    path: str


@dataclass(frozen=True)
class Not:
    item: Condition
    path: str


Condition = FieldCond | SegmentRef | AllOf | AnyOf | Not


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def parse_condition(raw: Any, path: str, problems: list[Problem]) -> Condition | None:
    """Parse one condition; append Problems (never raise) and return None when unusable."""
    if not isinstance(raw, dict) or not raw:
        problems.append(Problem(path, "a condition must be a mapping",
                                "write { field: F, OP: VALUE }, { segment: NAME }, or all/any/not"))
        return None
    keys = set(raw)
    group = keys & set(GROUP_KEYS)
    if group:
        if len(keys) != 1:
            problems.append(Problem(path, f"'{sorted(group)[0]}' must stand alone in its condition",
                                    "nest the other keys inside it as their own conditions"))
            return None
        (key,) = group
        body = raw[key]
        if key == "not":
            inner = parse_condition(body, f"{path}.not", problems)
            return Not(inner, path) if inner is not None else None
        if not isinstance(body, list) or not body:
            problems.append(Problem(f"{path}.{key}", f"'{key}' takes a non-empty list of conditions"))
            return None
        items = [parse_condition(c, f"{path}.{key}[{i}]", problems) for i, c in enumerate(body)]
        if any(i is None for i in items):
            return None
        return (AllOf if key == "all" else AnyOf)(tuple(items), path)  # type: ignore[arg-type]
    if "segment" in keys:
        extra = keys - {"segment"}
        if extra:
            problems.append(Problem(path, f"unknown key '{sorted(extra)[0]}' next to 'segment'",
                                    "a segment reference is just { segment: NAME }"))
            return None
        return SegmentRef(str(raw["segment"]), path)
    if "field" not in keys:
        word = sorted(keys)[0]
        hint = did_you_mean(word, ["field", "segment", *GROUP_KEYS])
        problems.append(Problem(path, f"unknown key '{word}'", hint or
                                "a condition is { field: F, OP: VALUE }, { segment: NAME }, or all/any/not"))
        return None
    ops = keys - {"field", "or_unknown"}
    if len(ops) != 1:
        if not ops:
            problems.append(Problem(path, f"no operator for field '{raw['field']}'",
                                    "add one, e.g. { field: F, eq: VALUE }"))
        else:
            problems.append(Problem(path, f"more than one operator: {', '.join(sorted(ops))}",
                                    "combine them with all: [...]"))
        return None
    (op,) = ops
    if op not in OPERATORS:
        hint = did_you_mean(op, list(OPERATORS))
        problems.append(Problem(f"{path}.{op}", f"unknown operator '{op}'",
                                hint or f"operators: {', '.join(OPERATORS)}"))
        return None
    or_unknown = raw.get("or_unknown", False)
    if not isinstance(or_unknown, bool):
        problems.append(Problem(f"{path}.or_unknown", "or_unknown takes true or false"))
        return None
    return FieldCond(str(raw["field"]), op, raw[op], or_unknown, path)


def walk(cond: Condition):
    """Yield every node of a condition tree, depth first."""
    yield cond
    if isinstance(cond, AllOf | AnyOf):
        for c in cond.items:
            yield from walk(c)
    elif isinstance(cond, Not):
        yield from walk(cond.item)


# ---------------------------------------------------------------- mapping sections


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Open(BaseModel):
    """Common fields plus connector-specific ones, checked by the connector's Options model."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


IDENTIFIERS = ("email", "phone", "first_name", "last_name", "city", "state", "zip", "country",
               "date_of_birth", "gender", "external_id")
Identifier = Literal["email", "phone", "first_name", "last_name", "city", "state", "zip",
                     "country", "date_of_birth", "gender", "external_id"]


class Identity(Strict):
    """Which source fields are matchable identifiers."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    date_of_birth: str | None = None
    gender: str | None = None
    external_id: str | None = None
    phone_region: str = "US"

    def fields(self) -> dict[str, str]:
        """identifier name -> source field, for the identifiers that are mapped."""
        return {k: getattr(self, k) for k in IDENTIFIERS if getattr(self, k)}


class ConnectionConfig(Open):
    type: str
    base_url: str | None = None


class SourceConfig(Open):
    """A source: `connection:` (platform) or `type:` csv/jsonl; the rest goes to the connector."""

    type: str | None = None
    connection: str | None = None
    key: str | None = None
    schema_: dict[str, FieldType] = Field(default_factory=dict, alias="schema")
    properties: list[str] = Field(default_factory=list)
    identity: Identity = Field(default_factory=Identity)


class Bins(Strict):
    recency: list[Duration] | None = None  # e.g. [180d, 90d, 30d, 7d]: within 7d scores 5
    frequency: list[float] | None = None  # ascending thresholds: >= last scores 5
    monetary: list[float] | None = None


class RfmScore(Strict):
    type: Literal["rfm"]
    source: str | None = None
    recency: str
    frequency: str
    monetary: str
    bins: Bins | None = None
    segments_map: dict[str, list[str]] | None = None  # name -> regexes over the "RF" string


class Term(Strict):
    field: str
    weight: float


class WeightedScore(Strict):
    type: Literal["weighted"]
    source: str | None = None
    terms: list[Term]


class ClvScore(Strict):
    """Predicted value (SPEC "Predictive value (CLV)"): BG/NBD + Gamma-Gamma."""

    type: Literal["clv"]
    source: str | None = None
    first_purchase: str
    last_purchase: str
    purchases: str          # all purchases; repeat purchases = purchases - 1
    revenue: str            # total spend; the average order is revenue / purchases
    horizon: Duration = timedelta(days=90)


#: the fields a CLV score adds, each a number
CLV_FIELDS = ("p_alive", "purchases", "value", "tier")

Score = Annotated[RfmScore | WeightedScore | ClvScore, Field(discriminator="type")]


class SegmentConfig(Strict):
    description: str | None = None
    owner: str | None = None
    source: str | None = None
    cadence: Duration | None = None
    where: Any = None
    holdout: Percent | None = None
    min_size: int | None = None


class GroupConfig(Strict):
    exclusive: bool = True
    segments: list[str]
    description: str | None = None
    owner: str | None = None


class SuppressionConfig(Strict):
    where: Any = None
    file: str | None = None
    scope: list[str] | None = None  # destination names; None = every destination
    source: str | None = None


class DestinationConfig(Open):
    name: str
    type: str
    segment: str | None = None
    group: str | None = None
    connection: str | None = None
    mode: Literal["mirror", "add_only"] = "mirror"
    identifiers: list[Identifier] = Field(default_factory=list)
    consent: str | None = None
    batch_size: int | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0)
    max_remove_fraction: float | None = Field(default=None, ge=0, le=1)


class Safeguards(Strict):
    max_remove_fraction: float | None = Field(default=None, ge=0, le=1)


class Transition(Strict):
    from_: str = Field(alias="from")
    to: str


class AlertConfig(Strict):
    url: str
    on: list[Literal["failure", "safeguard", "transition"]] = Field(
        default_factory=lambda: ["failure", "safeguard"])
    transitions: list[Transition] = Field(default_factory=list)
    sample: int = 5  # contact keys quoted per transition


class LintConfig(Strict):
    min_size: int = 50
    max_primary_segments: int = 12
    max_overlap: float = 0.9


class Mapping(Strict):
    version: Literal[1]
    #: the mapping's name (default: the file name without its extension): the key of its
    #: rows in a store that several mappings share, and of its lock
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    store: str = ".crmsync/state.duckdb"
    #: where segments are evaluated and diffed: the embedded DuckDB store, or the Postgres
    #: database of the source (sync/segments/warehouse.py)
    engine: Literal["duckdb", "postgres"] = "duckdb"
    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)
    sources: dict[str, SourceConfig]
    scores: dict[str, Score] = Field(default_factory=dict)
    segments: dict[str, SegmentConfig] = Field(default_factory=dict)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    suppressions: dict[str, SuppressionConfig] = Field(default_factory=dict)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    safeguards: Safeguards = Field(default_factory=Safeguards)
    alerts: list[AlertConfig] = Field(default_factory=list)
    lint: LintConfig = Field(default_factory=LintConfig)
