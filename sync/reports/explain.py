"""`crmsync explain`: why a contact is or is not in each segment and destination."""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from ..errors import CrmsyncError
from ..mapping.model import AllOf, AnyOf, Condition, FieldCond, Not, SegmentRef
from ..mapping.scores import score_fields
from ..pipeline.push import Candidates
from ..sql import lit, q


def _describe(cond: Condition) -> str:
    if isinstance(cond, AllOf):
        return "all of"
    if isinstance(cond, AnyOf):
        return "any of"
    if isinstance(cond, Not):
        return "not"
    if isinstance(cond, SegmentRef):
        return f"in segment {cond.segment}"
    extra = " (or unknown)" if cond.or_unknown else ""
    return f"{cond.field} {cond.op} {cond.value!r}{extra}"


def explain(runner: Any, who: str, offline: bool = True) -> dict[str, Any]:
    with runner.store.lock():
        ev = runner.evaluate(offline)
        project, con = runner.project, ev.con  # where the evaluation ran
        for source, scfg in project.mapping.sources.items():
            table = ev.view(source)
            email = scfg.identity.email
            cond = f"_key = {lit(who)}"
            if email and "@" in who:
                cond += f" OR lower(trim({q(email)})) = {lit(who.strip().lower())}"
            row = con.execute(f"SELECT _key FROM {table} WHERE {cond} LIMIT 1").fetchone()
            if row:
                return _explain_row(ev, source, row[0])
    raise CrmsyncError(f"no contact with key or email {who!r} in the snapshot")


def _explain_row(ev: Any, source: str, key: str) -> dict[str, Any]:
    project, con = ev.project, ev.con
    table = ev.view(source)
    scored = q(f"scored_{source}")
    comp = ev.compiler(source, scored)

    def value_of(sql: str | exp.Expression) -> Any:
        if isinstance(sql, exp.Expression):
            sql = ev.sql(sql)
        return con.execute(f"SELECT {sql} FROM {table} WHERE _key = {lit(key)}").fetchone()[0]

    def node(cond: Condition) -> dict[str, Any]:
        out: dict[str, Any] = {"condition": _describe(cond),
                               "holds": bool(value_of(comp.compile(cond)))}
        if isinstance(cond, FieldCond):
            v = value_of(q(cond.field))
            out["value"] = None if v is None else str(v)
        if isinstance(cond, AllOf | AnyOf):
            out["items"] = [node(c) for c in cond.items]
        elif isinstance(cond, Not):
            out["items"] = [node(cond.item)]
        return out

    segs: dict[str, Any] = {}
    for s in project.mapping.segments:
        if project.source_of("segments", s) != source:
            continue
        where = project.where(s)
        info = {"where": node(where) if where else None,
                "matched_where": bool(value_of(q("w:" + s))),
                "member": bool(value_of(q("m:" + s))),
                "held_out": bool(value_of(f"{q('m:' + s)} AND {q('h:' + s)}"))}
        if info["matched_where"] and not info["member"]:
            for g, gcfg in project.mapping.groups.items():
                if s in gcfg.segments:
                    before = gcfg.segments[:gcfg.segments.index(s)]
                    won = [b for b in before if value_of(q("w:" + b))]
                    if won:
                        info["group"] = f"exclusive group {g}: in {won[0]} first"
        segs[s] = info
    dests: dict[str, Any] = {}
    for d in project.mapping.destinations:
        seg_list = project.segments_of(d)
        if project.source_of("segments", seg_list[0]) != source:
            continue
        in_seg = [s for s in seg_list if segs[s]["member"] and not segs[s]["held_out"]]
        sups = [n for n, c in project.mapping.suppressions.items()
                if project.source_of("suppressions", n) == source
                and (c.scope is None or d.name in c.scope) and value_of(q("s:" + n))]
        cands = Candidates.of(ev, d)  # consent and identifiers exactly as push reads them
        consent = bool(value_of(cands.consent))
        missing = [i for i in d.identifiers
                   if i not in cands.id_cols or value_of(cands.id_cols[i]) is None]
        reasons = []
        if not in_seg:
            reasons.append("not a member" + (" (held out)" if any(
                segs[s]["held_out"] for s in seg_list) else ""))
        if sups:
            reasons.append("suppressed by " + ", ".join(sups))
        if not consent:
            reasons.append(f"no consent ({d.consent} is not true)")
        if d.identifiers and len(missing) == len(d.identifiers):
            reasons.append("no identifier")
        synced = ev.store.ledger(d.name).state_of(key)
        dests[d.name] = {"sent": not reasons, "label": in_seg[0] if in_seg else None,
                         "reasons": reasons, "missing_identifiers": missing,
                         "synced": synced.value if synced else None}
    scores = {}
    for name, score in project.mapping.scores.items():
        if project.source_of("scores", name) == source:
            for f in score_fields(name, score):
                v = value_of(q(f))
                scores[f] = v if v is None or isinstance(v, int | float) else str(v)
    return {"key": key, "source": source, "scores": scores, "segments": segs,
            "destinations": dests}


def render(data: dict[str, Any]) -> str:
    lines = [f"contact {data['key']} (source {data['source']})"]

    def tree(n: dict[str, Any], depth: int) -> None:
        mark = "✓" if n["holds"] else "✗"
        val = f"  [value: {n['value']}]" if "value" in n else ""
        lines.append(f"{'  ' * depth}{mark} {n['condition']}{val}")
        for c in n.get("items", []):
            tree(c, depth + 1)

    if data.get("scores"):
        lines.append("scores: " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in data["scores"].items()))
    for s, info in data["segments"].items():
        state = "member" if info["member"] else "not a member"
        if info["held_out"]:
            state += ", held out"
        if info.get("group"):
            state += f" ({info['group']})"
        lines.append(f"segment {s}: {state}")
        if info["where"]:
            tree(info["where"], 1)
    for d, info in data["destinations"].items():
        verdict = (f"sent as a member of {info['label']}" if info["sent"]
                   else "not sent: " + "; ".join(info["reasons"]))
        lines.append(f"destination {d}: {verdict}")
    return "\n".join(lines)
