"""`crmsync report -o report.html`: one self-contained HTML file (inline CSS and SVG; no script,
no font, no network), rendered from the view model ``view.ReportView``.

Sections (ids are stable, for links and tests): ``sizes``, ``overlap``, ``migrations`` (with
``transitions``), ``destinations``, ``value`` (CLV fits and lift)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import Any

from ..store.report import NONE
from .charts import Series, bar_chart, line_chart
from .view import DestinationView, GroupView, Matrix, ReportView

CSS = """
:root{--fg:#1f2328;--mut:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--blue:#0969da;--orange:#bc4c00;
--green:#1a7f37;--red:#cf222e}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0 auto;padding:16px;max-width:1400px}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.25em;margin:1.6em 0 .4em;padding-top:.4em;
border-top:1px solid var(--line)}h3{font-size:1.05em;margin:1em 0 .3em}
.sub,.none,.cap{color:var(--mut)}.cap{font-size:.9em;margin:.2em 0}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.95em}nav a{color:var(--blue)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:#fff;
min-width:0}
.card h3{margin:0;font-size:1em}.card .desc{color:var(--mut);font-size:.85em;margin:2px 0 4px}
.figs{font-size:.9em;margin:2px 0}.figs b{font-variant-numeric:tabular-nums}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:.9em;color:var(--mut);margin:.3em 0}
.key{display:inline-block;width:22px;height:0;border-top:2.5px solid;vertical-align:middle;
margin-right:5px}.key.sent{border-top-style:dashed;border-color:var(--orange)}
.key.matched{border-color:var(--blue)}.key.add,.key.remove{height:10px;border:0;width:12px}
.key.add{background:var(--green)}.key.remove{background:var(--red)}
svg.chart{width:100%;height:auto;display:block;overflow:visible}
svg text{font-size:11px;fill:var(--mut)}svg .yl{text-anchor:end}svg .xl,svg .bl{text-anchor:middle}
svg .bl{font-size:10px;fill:var(--fg)}
svg .grid{stroke:#eaeef2}svg .axis,svg .tick{stroke:#8c959f}
svg polyline{fill:none;stroke-width:2}svg polyline.matched{stroke:var(--blue)}
svg polyline.sent{stroke:var(--orange);stroke-dasharray:5 3}
svg circle.matched{fill:var(--blue)}svg circle.sent{fill:var(--orange)}
svg .add{fill:var(--green)}svg .remove{fill:var(--red)}
.scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums;margin:.3em 0}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:right;white-space:nowrap}
th{background:var(--bg);font-weight:600}th.row,td.row{text-align:left}
td.diag{color:var(--mut);font-style:italic}td.zero{color:#afb8c1}
.heat td.cell{min-width:3.2em}
.status{display:inline-block;padding:0 7px;border-radius:10px;font-size:.85em;font-weight:600;
background:#dafbe1;color:var(--green)}.status.failed,.status.safeguard,.status.crashed{
background:#ffebe9;color:var(--red)}.status.skipped,.status.planned{background:var(--bg);
color:var(--mut)}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:1px 12px;margin:.4em 0;
font-size:.9em}dl.kv dt{color:var(--mut)}dl.kv dd{margin:0;font-variant-numeric:tabular-nums}
details{margin:.4em 0}summary{cursor:pointer;color:var(--blue)}
.msg{white-space:normal;max-width:32em;text-align:left}
.pair{display:flex;flex-wrap:wrap;gap:0 32px}.pair>div{min-width:0;max-width:100%}
h4{margin:.6em 0 .1em;font-size:.95em}
.rejects{font-size:.85em}.rejects ul{margin:2px 0 6px;padding-left:1.2em}
@media (max-width:520px){body{padding:10px;font-size:14px}.grid{grid-template-columns:1fr}}
"""


def _n(v: Any) -> str:
    return "–" if v is None else f"{v:,}" if isinstance(v, int) else escape(str(v))


def _dt(v: datetime | None) -> str:
    return "–" if v is None else f"{v:%Y-%m-%d %H:%M}"


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table in its own horizontally scrolling box; cells are HTML already."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(c if c.startswith("<t") else f"<td>{c}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><tr>{th}</tr>{body}</table></div>'


def _heat(n: int, top: int, extra: str = "") -> str:
    """A count cell shaded by its share of ``top``."""
    if not n:
        return f'<td class="cell zero{extra}">0</td>'
    a = 0.08 + 0.72 * min(1.0, n / max(top, 1))
    ink = "#fff" if a > 0.5 else "inherit"
    return (f'<td class="cell{extra}" style="background:rgba(9,105,218,{a:.2f});color:{ink}">'
            f"{n:,}</td>")


# ---------------------------------------------------------------- sections


def _sizes(v: ReportView) -> str:
    out = ['<section id="sizes"><h2>Segment sizes over time</h2>',
           '<div class="legend"><span><i class="key matched"></i>matched</span>'
           '<span><i class="key sent"></i>sent (to at least one destination)</span>'
           f"<span>x: the runs' as-of dates; {v.runs} run(s) recorded</span></div>",
           '<div class="grid">']
    for s in v.segments:
        series = [Series("matched", [(p.as_of, p.matched) for p in s.history], "matched"),
                  Series("sent", [(p.as_of, p.sent) for p in s.history if p.sent is not None],
                         "sent")]
        out.append(
            f'<div class="card segment" id="size-{escape(s.name)}"><h3>{escape(s.name)}</h3>'
            f'<div class="desc">{escape(s.description)}</div>'
            f'<div class="figs">now: <b>{s.matched:,}</b> matched · <b>{s.sent:,}</b> sent'
            + (f" · <b>{s.held_out:,}</b> held out" if s.held_out else "") + "</div>"
            + line_chart(series, f"{s.name}: matched and sent per run") + "</div>")
    out.append("</div></section>")
    return "".join(out)


def _overlap(v: ReportView) -> str:
    names = [s.name for s in v.segments]
    size = {s.name: s.matched for s in v.segments}
    both = {**v.overlap, **{(b, a): n for (a, b), n in v.overlap.items()}}
    rows = []
    for i, a in enumerate(names, 1):
        cells = [f'<td class="row">{i}. {escape(a)}</td>']
        for b in names:
            if a == b:
                cells.append(f'<td class="diag">{size[a]:,}</td>')
            else:
                cells.append(_heat(both.get((a, b), 0), min(size[a], size[b])))
        rows.append(cells)
    return ('<section id="overlap"><h2>Overlap</h2><p class="cap">Contacts in both segments '
            "now; the shade is the share of the smaller one; the diagonal is each segment's "
            "size.</p>" + _table(["segment", *map(str, range(1, len(names) + 1))], rows,
                                 "heat") + "</section>")


def _matrix(mx: Matrix) -> str:
    top = max((n for (a, b), n in mx.counts.items() if a != b), default=1)
    head = ["from \\ to", *(escape(c) if c != NONE else "(left)" for c in mx.cols)]
    rows = []
    for a in mx.rows:
        cells = [f'<td class="row">{escape(a) if a != NONE else "(joined)"}</td>']
        for b in mx.cols:
            n = mx.counts.get((a, b), 0)
            if a == b == NONE:
                cells.append("<td></td>")
            elif a == b:
                cells.append(f'<td class="diag">{n:,}</td>' if mx.stays else "<td>–</td>")
            else:
                cells.append(_heat(n, top))
        rows.append(cells)
    return f'<p class="cap">{escape(mx.caption)}</p>' + _table(head, rows, "heat migration")


def _group(g: GroupView) -> str:
    last = _matrix(g.last) if g.last else '<p class="none">none: fewer than two runs recorded</p>'
    window = (_matrix(g.window) if g.window else
              '<p class="none">none: no moves recorded in the window</p>')
    return (f'<div class="group" id="group-{escape(g.name)}"><h3>Group {escape(g.name)}</h3>'
            f'<div class="pair"><div><h4>Last two runs</h4>{last}</div>'
            f"<div><h4>Window</h4>{window}</div></div></div>")


def _migrations(v: ReportView) -> str:
    out = ['<section id="migrations"><h2>Migrations between segments</h2>',
           '<p class="cap">Exclusive groups: contacts from one segment (row) to another '
           "(column) between runs; the diagonal (italic) stayed; (joined): from none of the "
           "group's segments, (left): to none."
           + (f" Window: runs as of {_dt(v.since)} or later (report --since)." if v.since
              else "") + "</p>"]
    out += [_group(g) for g in v.groups] or ['<p class="none">none: no exclusive group</p>']
    out.append('<div id="transitions"><h3>Transitions named by alerts</h3>')
    if v.transitions:
        out.append(_table(["from", "to", "last run", "in the window", "last seen"],
                          [[f'<td class="row">{escape(t.from_)}</td>', escape(t.to),
                            _n(t.last_run), _n(t.window), _dt(t.last_seen)]
                           for t in v.transitions]))
    else:
        out.append('<p class="none">none: no alert names a transition</p>')
    return "".join(out) + "</div></section>"


def _readback(rb: dict[str, Any] | None) -> str:
    if not rb:
        return "not reported"
    parts = []
    if rb.get("size") is not None:
        parts.append(f"size {_n(rb['size'])}")
    lo, hi = rb.get("approximate_count_lower_bound"), rb.get("approximate_count_upper_bound")
    if lo is not None or hi is not None:
        parts.append(f"size {_n(lo)}–{_n(hi)}")
    if rb.get("match_rate") is not None:
        parts.append(f"match rate {_n(rb['match_rate'])}%")
    if rb.get("operation_status"):
        st = rb["operation_status"]
        parts.append(f"status {escape(str(st.get('description') or st) if isinstance(st, dict) else st)}")
    if not parts:
        parts.append("no size yet")
    return escape(", ".join(parts)) + f' <span class="sub">(as of {_dt(rb.get("as_of"))})</span>'


def _destination(d: DestinationView) -> str:
    out = [f'<div class="card dest" id="dest-{escape(d.name)}"><h3>{escape(d.name)}</h3>'
           f'<div class="desc">{escape(d.type)} · {escape(d.segment)}</div>']
    if d.last is None:
        return "".join(out) + '<p class="none">no run recorded yet</p></div>'
    r, when = d.last.figures, d.last.as_of
    rej = "".join(f"<li>{j['count']:,} {escape(j['reason'])}</li>" for j in d.rejects)
    out.append(
        f'<dl class="kv"><dt>last run</dt><dd>{_dt(when)} '
        f'<span class="status {escape(r.status)}">{escape(r.status)}</span></dd>'
        f"<dt>adds / removes</dt><dd>+{r.adds:,} / −{r.removes:,}"
        + (f" · {r.updates:,} updated" if r.updates else "") + "</dd>"
        f"<dt>rejected</dt><dd>{r.rejected:,}"
        + (f" · {r.no_identifier:,} without identifier" if r.no_identifier else "") + "</dd>"
        f"<dt>API calls</dt><dd>{r.calls:,} ({r.retries:,} retries)</dd>"
        f"<dt>duration</dt><dd>{r.duration:.2f} s</dd>"
        f"<dt>platform</dt><dd>{_readback(d.readback)}</dd></dl>"
        + (f'<p class="cap">{escape(r.message)}</p>' if r.message else "")
        + (f'<div class="rejects"><span class="sub">not sent, by reason</span>'
           f"<ul>{rej}</ul></div>" if rej else ""))
    out.append(bar_chart([(x.as_of, x.figures.adds, x.figures.removes) for x in d.runs],
                         f"{d.name}: adds and removes per run"))
    rows = []
    for x in reversed(d.runs):
        f = x.figures
        rows.append([_dt(x.as_of), f'<td><span class="status {escape(f.status)}">'
                     f"{escape(f.status)}</span></td>", _n(f.desired if f.planned else None),
                     _n(f.adds), _n(f.removes), _n(f.updates), _n(f.rejected), _n(f.calls),
                     _n(f.retries), f"{f.duration:.2f}", f'<td class="msg">{escape(f.message)}</td>'])
    out.append(f"<details><summary>all {len(d.runs)} run(s)</summary>" + _table(
        ["as of", "status", "desired", "adds", "removes", "updates", "rejected", "calls",
         "retries", "seconds", "message"], rows) + "</details>")
    return "".join(out) + "</div>"


def _destinations(v: ReportView) -> str:
    return ('<section id="destinations"><h2>Destinations</h2>'
            '<div class="legend"><span><i class="key add"></i>adds</span>'
            '<span><i class="key remove"></i>removes</span></div><div class="grid">'
            + "".join(_destination(d) for d in v.destinations) + "</div></section>")


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return _n(x)


def _value(v: ReportView) -> str:
    out = ['<section id="value"><h2>Predicted value and lift</h2><h3>CLV fits</h3>']
    names = ["r", "alpha", "a", "b", "p", "q", "gamma", "n", "log_likelihood"]
    if v.clv and any("n_repeat" in f for f in v.clv.values()):
        names.insert(names.index("n") + 1, "n_repeat")
    if v.clv:
        out.append('<p class="cap">BG/NBD (r, alpha, a, b; time in days) over n contacts and '
                   "Gamma-Gamma (p, q, gamma) over the repeat buyers, fitted over the stored "
                   "snapshot; – : not fitted.</p>")
        out.append(_table(["score", *names], [[f'<td class="row">{escape(s)}</td>',
                                               *(_fmt(f.get(k)) for k in names)]
                                              for s, f in v.clv.items()], "clv"))
    else:
        out.append('<p class="none">none: no clv score in the mapping</p>')
    out.append('<div id="lift"><h3>Lift (sent vs held out)</h3>')
    rows = []
    for x in v.lift or []:
        head = [f'<td class="row">{escape(x["segment"])}</td>', escape(str(x["outcome"]))]
        if x.get("too_few"):
            rows.append([*head, *(f"{_n(x.get(g, {}).get('n'))}" for g in ("sent", "held_out")),
                         '<td colspan="7" class="row">too few to judge (under 30 in a group)'
                         "</td>"])
            continue
        s, h, lf = x["sent"], x["held_out"], x["lift"]
        rows.append([*head, _n(s["n"]), _n(h["n"]), _fmt(s["value"]), _fmt(h["value"]),
                     _fmt(lf["absolute"]), _fmt(lf.get("relative") if lf.get("relative") is None
                                                else f"{lf['relative']:+.1%}"),
                     f"[{_fmt(lf['ci_low'])}, {_fmt(lf['ci_high'])}]", _fmt(lf["p_value"], 3)])
    if rows:
        out.append(_table(["segment", "outcome", "sent", "held out", "sent value",
                           "held-out value", "lift", "relative", "95% CI", "p-value"], rows,
                          "lift"))
    else:
        out.append('<p class="none">none: no lift measured (report --outcome FIELD '
                   "measures it for each segment with a holdout)</p>")
    return "".join(out) + "</div></section>"


def render(view: ReportView) -> str:
    """The report as one HTML document."""
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("sizes", "Sizes"), ("overlap", "Overlap"), ("migrations", "Migrations"),
        ("destinations", "Destinations"), ("value", "Value & lift")))
    head = (f"<header><h1>{escape(view.title)}</h1><p class=\"sub\">last run as of "
            f"{_dt(view.as_of)} · {view.runs} run(s) recorded</p><nav>{nav}</nav></header>")
    body = head + _sizes(view) + _overlap(view) + _migrations(view) + _destinations(view) + \
        _value(view)
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{escape(view.title)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>")
