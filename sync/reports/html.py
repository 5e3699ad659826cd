"""`crmsync report -o report.html`: one self-contained HTML file (no scripts, no network)."""

from __future__ import annotations

from html import escape
from typing import Any

from ..store.database import Store

CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.ok{color:#176b2c}.failed,.safeguard{color:#b00020}svg{vertical-align:middle}"""


def _spark(values: list[int], w: int = 160, h: int = 28) -> str:
    if len(values) < 2:
        return ""
    top = max(values) or 1
    step = w / (len(values) - 1)
    pts = " ".join(f"{i * step:.1f},{h - v / top * (h - 2) - 1:.1f}" for i, v in enumerate(values))
    return (f'<svg width="{w}" height="{h}"><polyline fill="none" stroke="#3465a4" '
            f'stroke-width="1.5" points="{pts}"/></svg>')


def _table(head: list[str], rows: list[list[Any]], raw: bool = False) -> str:
    th = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else escape(str(c))}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def render(store: Store, segments: dict[str, dict[str, int]],
           overlap: dict[tuple[str, str], int], title: str) -> str:
    parts = [f"<h1>{escape(title)}</h1>", "<h2>Segment sizes over time</h2>"]
    rows = []
    for seg, cur in segments.items():
        hist = store.size_history(seg, 50)
        rows.append([escape(seg), cur["matched"], cur["held_out"], _spark(hist)])
    parts.append(_table(["segment", "matched", "held out", "last runs"], rows, raw=True))
    names = list(segments)
    parts.append("<h2>Overlap (contacts in both)</h2>")
    cells = []
    for a in names:
        row = [escape(a)]
        for b in names:
            n = segments[a]["matched"] if a == b else overlap.get((a, b), overlap.get((b, a), 0))
            base = max(1, min(segments[a]["matched"], segments[b]["matched"]))
            shade = int(255 - 155 * min(1.0, n / base))
            row.append(f'<span style="background:rgb({shade},{shade},255);padding:2px 6px">'
                       f"{n}</span>")
        cells.append(row)
    parts.append(_table(["", *names], cells, raw=True))
    moves = store.last_moves()
    parts.append("<h2>Migrations between segments (last run)</h2>")
    parts.append(_table(["from", "to", "contacts"], moves) if moves
                 else "<p>No moves recorded yet.</p>")
    parts.append("<h2>Last runs per destination</h2>")
    last = [[f.name, started, f.status, f.adds, f.removes, f.updates, f.rejected, f.deferred,
             f.calls, f.retries, f.duration, f.message] for started, f in store.last_runs(5)]
    parts.append(_table(["destination", "started", "status", "adds", "removes", "updates",
                         "rejected", "deferred", "calls", "retries", "seconds", "message"],
                        last))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
