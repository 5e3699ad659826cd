"""`crmsync segments` (sizes, overlap matrix, quality-gate findings) and the figures of
`crmsync report`."""

from __future__ import annotations

from typing import Any

from ..mapping import lint
from ..pipeline.push import sent_counts
from ..sql import q


def segment_report(runner: Any, offline: bool = True) -> dict[str, Any]:
    with runner.store.lock():
        ev = runner.evaluate(offline)
        project, con = runner.project, ev.con  # where the evaluation ran
        sizes = ev.segment_sizes()
        # sent: members that at least one of their destinations would receive
        sent = sent_counts(ev, project.mapping.destinations)
        for s, v in sizes.items():
            v["sent"] = sent.get(s, 0)
        overlaps: dict[tuple[str, str], int] = {}
        for source in project.mapping.sources:
            segs = [s for s in project.mapping.segments
                    if project.source_of("segments", s) == source]
            pairs = [(a, b) for i, a in enumerate(segs) for b in segs[i + 1:]]
            if not pairs:
                continue
            sel = ", ".join(f"count(*) FILTER (WHERE {q('m:' + a)} AND {q('m:' + b)})"
                            for a, b in pairs)
            row = con.execute(f"SELECT {sel} FROM {ev.table(source)}").fetchone()
            overlaps.update({p: int(n) for p, n in zip(pairs, row, strict=True)})
    findings = lint.static(project) + lint.data(
        project, {s: v["matched"] for s, v in sizes.items()}, overlaps)
    return {"segments": sizes, "_overlaps": overlaps,
            "overlap": {f"{a}|{b}": n for (a, b), n in overlaps.items() if n},
            "findings": [p.to_dict() for p in findings], "warnings": ev.warnings,
            "scores": {n: f.as_dict() for n, f in ev.clv_fits.items()}}


def render_overlap(sizes: dict[str, dict[str, int]], overlaps: dict[tuple[str, str], int]
                   ) -> str:
    """The overlap matrix as text: members in both segments (the diagonal: matched)."""
    names = list(sizes)
    both = {**overlaps, **{(b, a): n for (a, b), n in overlaps.items()}}
    cells = [[str(sizes[a]["matched"] if a == b else both.get((a, b), "")) for b in names]
             for a in names]
    width = max([len(str(len(names))) + 2, *(len(c) for row in cells for c in row)])
    label = max(len(n) for n in names) + len(str(len(names))) + 3
    lines = ["overlap (contacts in both segments; the diagonal: matched):",
             " " * label + " ".join(f"[{j}]".rjust(width) for j in range(1, len(names) + 1))]
    for i, (a, row) in enumerate(zip(names, cells, strict=True), 1):
        lines.append(f"[{i}] {a}".ljust(label) + " ".join(c.rjust(width) for c in row))
    return "\n".join(lines)


def render_fit(name: str, fit: dict[str, Any]) -> str:
    """A CLV score's fitted parameters as one line (time in days)."""
    def fmt(keys: str) -> str:
        return ", ".join(f"{k}={fit[k]:.4g}" for k in keys.split())

    head = f"score {name} (clv, time in days): "
    if fit["r"] is None:
        return head + f"not fitted over {fit['n']} contacts"
    out = (head + f"BG/NBD over {fit['n']} contacts: {fmt('r alpha a b')}, "
           f"log-likelihood {fit['log_likelihood']:.1f}")
    if fit["p"] is None:
        return out + f"; Gamma-Gamma not fitted over {fit['n_repeat']} repeat buyers"
    return out + f"; Gamma-Gamma over {fit['n_repeat']} repeat buyers: {fmt('p q gamma')}"
