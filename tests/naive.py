"""A deliberately naive, per-row evaluator of SPEC's rule semantics: the oracle for the engine.

Written straight from SPEC ("Rule semantics" and "RFM"), one contact at a time, with no code
shared with crmsync's engine, so that the property test in ``test_engine_oracle.py`` compares
two independent readings of the contract. Slow on purpose; correctness is all that matters.

Input is plain data: rows (dicts of raw strings), a schema ``{field: type}``, the key column,
and the mapping's ``scores`` / ``segments`` / ``groups`` / ``suppressions`` / ``destinations``
sections as the dicts a YAML loader returns. ``evaluate`` returns every set a test compares.

Where SPEC is silent the choices made here are listed in ``SILENT``. The property test keeps
the first four out of its data; the last three it does generate, as readings SPEC's text
supports (values are typed by the field's type; "a list: any of"; string comparisons ignore
case and surrounding whitespace).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

#: Readings of points SPEC leaves open (see the module docstring for which are generated).
SILENT = {
    "whitespace-only string": "unknown (empty once trimmed)",
    "number/bool/date with surrounding spaces": "trimmed before parsing",
    "all-digit date text": "epoch milliseconds, never ISO basic format",
    "datetime text in a date field": "truncated to its UTC day (values and operands alike)",
    "not_contains with a list": "holds when the value contains none of them",
    "matches": "re.search on the trimmed value, case-insensitive",
}

UNKNOWN = None  # every parsed value is a python value, or None for unknown

_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_BOOL = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_ISO_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
_ISO_DATETIME = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
_EPOCH_MS = re.compile(r"^-?[0-9]+$")
_DURATION = re.compile(r"^([0-9]+)(min|h|d|w)$")
_UNIT = {"min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# R first, F second (SPEC's grid)
GRID = {
    5: ["New", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"],
    4: ["Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Loyal"],
    3: ["About to Sleep", "About to Sleep", "Need Attention", "Loyal", "Loyal"],
    2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Cannot Lose Them"],
    1: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Cannot Lose Them"],
}


# ---------------------------------------------------------------- value parsing


def parse_number(raw: Any) -> float | None:
    if raw is None or isinstance(raw, bool):
        return UNKNOWN
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    return float(text) if _NUMBER.match(text) else UNKNOWN


def parse_bool(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if raw is None:
        return UNKNOWN
    return _BOOL.get(str(raw).strip().lower(), UNKNOWN)


def parse_instant(raw: Any, day_only: bool = False) -> datetime | None:
    """ISO 8601 (offset or none = UTC) or integer epoch milliseconds -> aware UTC datetime."""
    if raw is None or isinstance(raw, bool):
        return UNKNOWN
    if isinstance(raw, datetime):
        out = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
    elif isinstance(raw, date):
        out = datetime(raw.year, raw.month, raw.day, tzinfo=UTC)
    elif isinstance(raw, int):
        out = EPOCH + timedelta(milliseconds=raw)
    else:
        out = _parse_instant_text(str(raw).strip())
    if out is None:
        return UNKNOWN
    out = out.astimezone(UTC)
    if day_only:
        out = datetime(out.year, out.month, out.day, tzinfo=UTC)
    return out


def _parse_instant_text(text: str) -> datetime | None:
    try:
        if _EPOCH_MS.match(text):
            return EPOCH + timedelta(milliseconds=int(text))
        m = _ISO_DATE.match(text)
        if m:
            return datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC)
        m = _ISO_DATETIME.match(text)
        if not m:
            return UNKNOWN
        micro = int((m[7] or "0").ljust(6, "0"))
        tz = UTC
        if m[8] and m[8] != "Z":
            sign = 1 if m[8][0] == "+" else -1
            hours, minutes = int(m[8][1:3]), int(m[8][4:6])
            if hours > 23 or minutes > 59:
                return UNKNOWN
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        return datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6] or 0),
                        micro, tzinfo=tz)
    except (ValueError, OverflowError):
        return UNKNOWN


def parse_text(raw: Any) -> str | None:
    if raw is None:
        return UNKNOWN
    text = str(raw).strip().lower()
    return text or UNKNOWN


def parse_multi(raw: Any) -> frozenset[str] | None:
    if raw is None:
        return UNKNOWN
    items = frozenset(p.strip().lower() for p in str(raw).split(";") if p.strip())
    return items or UNKNOWN


def parse_value(raw: Any, ftype: str) -> Any:
    """A raw value typed by its schema type; None when unknown."""
    if ftype == "number":
        return parse_number(raw)
    if ftype == "bool":
        return parse_bool(raw)
    if ftype in ("date", "datetime"):
        return parse_instant(raw, day_only=ftype == "date")
    if ftype == "multi":
        return parse_multi(raw)
    return parse_text(raw)  # string, enumeration


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"bad duration {text!r}")
    return timedelta(**{_UNIT[m[2]]: int(m[1])})


# ---------------------------------------------------------------- scores


def rfm_scores(values: dict[str, tuple[Any, Any, Any]], name: str) -> dict[str, dict[str, Any]]:
    """key -> {name.r, name.f, name.m, name.score, name.segment}; only for the population."""
    pop = {k: v for k, v in values.items() if all(x is not None for x in v)}
    n = len(pop)
    out: dict[str, dict[str, Any]] = {}
    for k, (r, f, m) in pop.items():
        scores = []
        for dim, mine in enumerate((r, f, m)):
            b = sum(1 for other in pop.values() if other[dim] < mine)  # strictly worse
            scores.append(1 + (5 * b) // n)
        rs, fs, ms = scores
        out[k] = {f"{name}.r": float(rs), f"{name}.f": float(fs), f"{name}.m": float(ms),
                  f"{name}.score": f"{rs}{fs}{ms}",
                  f"{name}.segment": GRID[rs][fs - 1].lower()}
    return out


def weighted_score(row: dict[str, Any], terms: list[dict[str, Any]]) -> float | None:
    known = [(t["weight"], row[t["field"]]) for t in terms if row.get(t["field"]) is not None]
    if not known:
        return UNKNOWN
    return sum(float(w) * v for w, v in known)


# ---------------------------------------------------------------- the evaluator


@dataclass
class Result:
    where: dict[str, set[str]]  # segment -> keys whose own where holds
    members: dict[str, set[str]]  # after exclusive groups (what `matched` counts)
    held_out: dict[str, set[str]]
    sent: dict[str, set[str]]  # destination name -> keys sent
    suppressed: dict[str, set[str]] = field(default_factory=dict)  # destination -> members dropped
    no_consent: dict[str, set[str]] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> typed row
    types: dict[str, str] = field(default_factory=dict)  # every field incl. score fields


def held_out(segment: str, key: str, percent: float) -> bool:
    """SPEC's deterministic holdout, with the hash crmsync uses."""
    h = int(hashlib.md5(f"{segment}:{key}".encode()).hexdigest()[:8], 16)
    return h < percent / 100 * 2**32


def percent_value(p: Any) -> float:
    return float(str(p).strip().rstrip("%"))


class Evaluator:
    """Evaluates conditions one row at a time over a typed snapshot."""

    def __init__(self, rows: list[dict[str, Any]], schema: dict[str, str], key: str,
                 scores: dict[str, dict] | None, segments: dict[str, dict], as_of: datetime):
        self.key = key
        self.now = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        self.segments = segments
        self.types: dict[str, str] = {c: "string" for r in rows for c in r}
        self.types.update(schema)
        self.rows: dict[str, dict[str, Any]] = {}
        for raw in rows:
            k = str(raw[key])
            self.rows[k] = {f: parse_value(raw.get(f), t) for f, t in self.types.items()}
        self._add_scores(scores or {})
        self._thresholds: dict[tuple[str, str, float], Any] = {}

    def _add_scores(self, scores: dict[str, dict]) -> None:
        for name, cfg in scores.items():
            if cfg["type"] == "rfm":
                vals = {k: (r[cfg["recency"]], r[cfg["frequency"]], r[cfg["monetary"]])
                        for k, r in self.rows.items()}
                got = rfm_scores(vals, name)
                for part, t in (("r", "number"), ("f", "number"), ("m", "number"),
                                ("score", "string"), ("segment", "string")):
                    self.types[f"{name}.{part}"] = t
                    for k, r in self.rows.items():
                        r[f"{name}.{part}"] = got.get(k, {}).get(f"{name}.{part}")
            else:
                self.types[name] = "number"
                for r in self.rows.values():
                    r[name] = weighted_score(r, cfg["terms"])

    # ------------------------------------------------ conditions

    def holds(self, cond: dict[str, Any], key: str) -> bool:
        if "all" in cond:
            return all(self.holds(c, key) for c in cond["all"])
        if "any" in cond:
            return any(self.holds(c, key) for c in cond["any"])
        if "not" in cond:
            return not self.holds(cond["not"], key)
        if "segment" in cond:
            return self.holds(self.segments[cond["segment"]]["where"], key)
        return self.field_holds(cond, key)

    def field_holds(self, cond: dict[str, Any], key: str) -> bool:
        fname = cond["field"]
        (op,) = set(cond) - {"field", "or_unknown"}
        arg = cond[op]
        value = self.rows[key][fname]
        if value is None:
            if op == "is_known":
                return arg is False or bool(cond.get("or_unknown"))
            return bool(cond.get("or_unknown"))
        ftype = self.types[fname]
        return self.apply(op, arg, value, ftype, fname)

    def operand(self, arg: Any, ftype: str) -> Any:
        if ftype == "number":
            return parse_number(arg)
        if ftype == "bool":
            return parse_bool(arg)
        if ftype in ("date", "datetime"):  # typed by the field's type: a date is a day
            return parse_instant(arg, day_only=ftype == "date")
        if ftype == "multi":
            return parse_text(arg)
        return str(arg).strip().lower()

    def apply(self, op: str, arg: Any, v: Any, ftype: str, fname: str) -> bool:
        one = lambda a: self.operand(a, ftype)  # noqa: E731
        many = lambda a: [one(x) for x in (a if isinstance(a, list) else [a])]  # noqa: E731
        now = self.now
        if op == "is_known":
            return arg is True
        if op == "eq":
            return v == one(arg)
        if op == "ne":
            return v != one(arg)
        if op == "in":
            return v in many(arg)
        if op == "not_in":
            return v not in many(arg)
        if op in ("gt", "gte", "lt", "lte"):
            c = one(arg)
            return {"gt": v > c, "gte": v >= c, "lt": v < c, "lte": v <= c}[op]
        if op == "between":
            lo, hi = one(arg[0]), one(arg[1])
            return lo <= v <= hi
        if op == "contains":
            return any(n in v for n in many(arg))
        if op == "not_contains":
            return not any(n in v for n in many(arg))
        if op == "starts_with":
            return any(v.startswith(n) for n in many(arg))
        if op == "ends_with":
            return any(v.endswith(n) for n in many(arg))
        if op == "matches":
            return re.search(str(arg), v, re.IGNORECASE) is not None
        if op == "within_last":
            return now - parse_duration(arg) <= v <= now
        if op == "not_within_last":
            return v < now - parse_duration(arg)
        if op == "within_next":
            return now <= v <= now + parse_duration(arg)
        if op in ("before", "after"):
            edge = (now - parse_duration(arg)) if _DURATION.match(str(arg).strip()) else one(arg)
            return v < edge if op == "before" else v > edge
        if op in ("top_percent", "bottom_percent"):
            t = self.threshold(fname, op, percent_value(arg))
            return t is not None and (v >= t if op == "top_percent" else v <= t)
        if op in ("has_any", "has_all", "has_none"):
            wanted = [x for x in many(arg) if x is not None]
            return {"has_any": any(w in v for w in wanted),
                    "has_all": all(w in v for w in wanted),
                    "has_none": not any(w in v for w in wanted)}[op]
        raise ValueError(f"operator {op!r} not in SPEC")

    def threshold(self, fname: str, op: str, p: float) -> Any:
        """SPEC: sort the n known values (largest first for top), t = value at ceil(P/100*n)."""
        known = [r[fname] for r in self.rows.values() if r[fname] is not None]
        n = len(known)
        pos = math.ceil(Fraction(str(p)) * n / 100)
        if n == 0 or pos < 1:
            return None
        ordered = sorted(known, reverse=op == "top_percent")
        return ordered[min(pos, n) - 1]


def evaluate(rows: list[dict[str, Any]], schema: dict[str, str], key: str, *,
             segments: dict[str, dict], as_of: datetime, scores: dict[str, dict] | None = None,
             groups: dict[str, dict] | None = None, suppressions: dict[str, dict] | None = None,
             destinations: list[dict] | None = None,
             suppression_files: dict[str, list[str]] | None = None,
             identity: dict[str, str] | None = None) -> Result:
    """Everything SPEC says about who is in which segment and who is sent where.

    ``suppression_files`` maps a suppression name to the lines of its file (emails or keys);
    ``identity`` maps identifier names to source fields (for matching file lines by email).
    """
    ev = Evaluator(rows, schema, key, scores, segments, as_of)
    keys = list(ev.rows)
    where = {s: {k for k in keys if ev.holds(cfg["where"], k)} for s, cfg in segments.items()}
    members = {s: set(ks) for s, ks in where.items()}
    for g in (groups or {}).values():
        if g.get("exclusive", True) is False:
            continue
        for k in keys:
            first = next((s for s in g["segments"] if k in where[s]), None)
            for s in g["segments"]:
                if s != first:
                    members[s].discard(k)
    held = {s: {k for k in members[s] if cfg.get("holdout") is not None
                and held_out(s, k, percent_value(cfg["holdout"]))}
            for s, cfg in segments.items()}
    email_field = (identity or {}).get("email")
    raw_email = {str(r[key]): str(r.get(email_field) or "").strip().lower() for r in rows} \
        if email_field else {}
    result = Result(where, members, held, {}, values=ev.rows, types=ev.types)
    for d in destinations or []:
        seg = d["segment"]
        out = members[seg] - held[seg]
        supp: set[str] = set()
        for name, sc in (suppressions or {}).items():
            if sc.get("scope") is not None and d["name"] not in sc["scope"]:
                continue
            if sc.get("where") is not None:
                supp |= {k for k in keys if ev.holds(sc["where"], k)}
            lines = {x.strip().lower() for x in (suppression_files or {}).get(name, []) if x.strip()}
            supp |= {k for k in keys if k.strip().lower() in lines or raw_email.get(k) in lines}
        consent = d.get("consent")
        no_consent = {k for k in keys if consent and ev.rows[k].get(consent) is not True}
        result.suppressed[d["name"]] = out & supp
        result.no_consent[d["name"]] = (out - supp) & no_consent
        result.sent[d["name"]] = out - supp - no_consent
    return result
