"""Benchmark: `crmsync plan` against a straightforward pandas implementation of the same rules.

Generates N contacts (bench/generate.py, seeded, at run time) in a temporary folder, writes a
mapping with 20 segments + RFM + a weighted score + an exclusive group + 3 suppressions + 10
csv destinations, then in the same run:

* times `crmsync plan --json` three ways, as subprocesses with each child's peak RSS
  (os.wait4): the first plan (pull of the new CSV into the store + evaluate + diff), the
  same plan again with the file unchanged (what a cron run sees between exports: the pull
  is skipped), and `plan --offline` (evaluate + diff over the stored snapshot);
* times the pandas baseline (read, type per SPEC, RFM quintiles, top/bottom percent, segments,
  group, suppressions, consent, holdout, desired per destination) in a subprocess too, and
  checks that its segment sizes and desired counts equal crmsync's;
* the diff micro-benchmark: a 1,000,000-member csv audience synced once with `crmsync run`,
  then 1% churn (0.5% leave, 0.5% join); times the core's diff (`DestinationSync.plan`, desired
  vs ledger anti-joins in the store) in-process.

    python bench/bench_plan.py --n 100000 --diff-n 100000      # quick
    python bench/bench_plan.py                                 # targets: 1,000,000 contacts
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402

AS_OF = "2026-11-01T00:00:00Z"
SEED = 424242
EU = ["GB", "DE", "FR", "NL", "ES", "IT", "SE"]
SCHEMA = {
    "lifecyclestage": "enumeration", "country": "enumeration", "industry": "enumeration",
    "hs_email_optout": "bool", "ads_consent": "bool", "num_employees": "number",
    "last_order_date": "date", "order_count": "number", "total_revenue": "number",
    "last_login": "datetime", "projects": "number", "email_clicks_30d": "number",
    "page_views_30d": "number", "interests": "multi", "created_at": "datetime",
}


def _f(field: str, op: str, value) -> dict:
    return {"field": field, op: value}


def bench_segments() -> dict[str, dict]:
    """The 20 segments (name -> where), shared by the mapping and (by hand) the baseline."""
    rfm = {"champions": "Champions", "loyal": "Loyal", "at_risk": "At Risk",
           "cannot_lose": "Cannot Lose Them", "hibernating": "Hibernating", "new_buyers": "New"}
    segs = {name: _f("rfm.segment", "eq", label) for name, label in rfm.items()}
    segs.update({
        "customers": _f("lifecyclestage", "eq", "customer"),
        "sql": _f("lifecyclestage", "in", ["sql", "opportunity"]),
        "mql": _f("lifecyclestage", "eq", "mql"),
        "leads": _f("lifecyclestage", "in", ["lead", "subscriber"]),
        "trials": _f("lifecyclestage", "eq", "trial"),
        "engagement_top": _f("engagement", "top_percent", 20),
        "engagement_bottom": _f("engagement", "bottom_percent", 40),
        "trial_power_users": {"all": [
            {"segment": "trials"}, _f("last_login", "within_last", "14d"),
            {"any": [_f("projects", "gte", 3), {"segment": "engagement_top"}]}]},
        "enterprise": _f("num_employees", "gte", 250),
        "smb": _f("num_employees", "between", [1, 49]),
        "high_value": _f("total_revenue", "top_percent", 5),
        "lapsed_customers": {"all": [{"segment": "customers"},
                                     _f("last_order_date", "not_within_last", "90d")]},
        "eu_non_software": {"all": [_f("country", "in", EU),
                                    {"not": _f("industry", "eq", "software")}]},
        "ai_curious": _f("interests", "has_any", ["ai", "analytics"]),
    })
    return segs


DESTS = [  # (name, segment or group, identifiers, consent)
    ("champions-ads", "champions", ["email", "phone", "first_name", "last_name", "country"], True),
    ("loyal-file", "loyal", ["email"], False),
    ("at-risk-file", "at_risk", ["email", "first_name"], False),
    ("cannot-lose-file", "cannot_lose", ["email", "phone"], False),
    ("lifecycle-file", "group:lifecycle", ["email"], False),
    ("trial-power-file", "trial_power_users", ["email", "phone"], False),
    ("engagement-ads", "engagement_top", ["email", "phone", "country"], True),
    ("enterprise-ads", "enterprise", ["email", "country"], True),
    ("high-value-file", "high_value", ["email"], False),
    ("lapsed-file", "lapsed_customers", ["email", "first_name"], False),
]


def write_mapping(folder: Path, csv_name: str) -> Path:
    (folder / "blocklist.csv").write_text("c000042\nc000777\nmanon.andersson@mail.example\n")
    segments = {n: {"description": n.replace("_", " "), "owner": "bench@acme.example", "where": w}
                for n, w in bench_segments().items()}
    segments["champions"]["holdout"] = "10%"
    dests = []
    for name, target, idents, consent in DESTS:
        d = {"name": name, "type": "csv", "path": f"out/{name}.csv", "identifiers": idents}
        if target.startswith("group:"):
            d["group"] = target.split(":", 1)[1]
        else:
            d["segment"] = target
        if consent:
            d["consent"] = "ads_consent"
        dests.append(d)
    mapping = {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": csv_name, "key": "id", "schema": SCHEMA,
                            "identity": {"email": "email", "phone": "phone",
                                         "first_name": "firstname", "last_name": "lastname",
                                         "country": "country", "phone_region": "US"}}},
        "scores": {"rfm": {"type": "rfm", "recency": "last_order_date",
                           "frequency": "order_count", "monetary": "total_revenue"},
                   "engagement": {"type": "weighted", "terms": [
                       {"field": "email_clicks_30d", "weight": 3},
                       {"field": "page_views_30d", "weight": 1}]}},
        "segments": segments,
        "groups": {"lifecycle": {"exclusive": True,
                                 "segments": ["customers", "sql", "mql", "leads"]}},
        "suppressions": {
            "unsubscribed": {"where": _f("hs_email_optout", "eq", True)},
            "competitors": {"where": _f("email", "ends_with", ["@rival.example", "@other.example"])},
            "blocklist": {"file": "blocklist.csv"},
        },
        "destinations": dests,
        "safeguards": {"max_remove_fraction": 0.25},
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


# ---------------------------------------------------------------- children with peak RSS


def _crmsync() -> list[str]:
    exe = Path(sys.executable).with_name("crmsync")
    return [str(exe)] if exe.exists() else [sys.executable, "-c",
                                             "from crmsync.cli import main; main()"]


# Linux keeps a process's peak RSS across exec, and a child forked from this (large)
# process starts with this process's RSS: so each command is started by a small launcher,
# which reports its own child's peak.
_LAUNCHER = ("import os, subprocess, sys, time; t = time.perf_counter(); "
             "p = subprocess.Popen(sys.argv[2:]); _, st, ru = os.wait4(p.pid, 0); "
             "open(sys.argv[1], 'w').write(f'{time.perf_counter() - t} {ru.ru_maxrss}'); "
             "sys.exit(os.waitstatus_to_exitcode(st))")


def run_child_rss(cmd: list[str]) -> tuple[float, float, str]:
    """Run a command; return (its wall seconds, its own peak RSS in MiB, its stdout)."""
    wall, peak, out, _ = run_child(cmd)
    return wall, peak, out


def run_child(cmd: list[str]) -> tuple[float, float, str, str]:
    """``run_child_rss`` with the child's stderr too (crmsync logs its pull time there)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, rss.name, *cmd],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}")
        wall, peak = rss.read().split()
        return float(wall), int(peak) / 1024, proc.stdout, proc.stderr


# ---------------------------------------------------------------- DuckDB's own read

DUCK_TYPES = {"enumeration": "VARCHAR", "multi": "VARCHAR", "bool": "BOOLEAN",
              "number": "DOUBLE", "date": "DATE", "datetime": "TIMESTAMPTZ"}


def duckdb_read(csv_path: Path, db: Path) -> dict:
    """The reference: DuckDB itself reading the file into a typed table of a database file,
    one statement, each column typed as the mapping's schema says (its own casts, not SPEC's
    rules: a value it cannot cast drops the row, ``ignore_errors``)."""
    import duckdb

    with csv_path.open() as fh:
        header = fh.readline().rstrip("\n").split(",")
    cols = ", ".join(f"'{c}': '{DUCK_TYPES.get(SCHEMA.get(c, ''), 'VARCHAR')}'" for c in header)
    con = duckdb.connect(str(db))
    t0 = time.perf_counter()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{csv_path}', header=true, "
                f"auto_detect=false, columns={{{cols}}}, ignore_errors=true)")
    con.close()
    return {"seconds": time.perf_counter() - t0}


def pull_seconds(stderr: str) -> float | None:
    """The pull's time as crmsync logs it (read + type + store: one statement)."""
    found = re.findall(r"pulled \S+: \d+ contacts \(full\) in ([0-9.]+)s", stderr)
    return float(found[-1]) if found else None


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of (contacts, value), per million contacts."""
    if len(points) < 2:
        return None
    xs, ys = [x / 1e6 for x, _ in points], [y for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


# ---------------------------------------------------------------- the pandas baseline


def baseline(csv_path: Path, folder: Path) -> dict:
    """The same rules, written the obvious way in pandas (one vectorised column at a time)."""
    import hashlib

    import numpy as np
    import pandas as pd

    from crmsync.sync.mapping.scores import GRID
    from crmsync.sync.mapping.values import EPOCH_RE, FALSE, ISO_RE, NUMBER_RE, TRUE

    t0 = time.perf_counter()
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    now = pd.Timestamp(AS_OF).tz_convert(None)
    df = pd.DataFrame({"key": raw["id"]})

    def text(col: str) -> pd.Series:
        s = raw[col].str.strip().str.lower()
        return s.where(s != "")

    def number(col: str) -> pd.Series:
        s = raw[col].str.strip()
        return pd.to_numeric(s.where(s.str.fullmatch(NUMBER_RE)), errors="coerce")

    def boolean(col: str) -> pd.Series:
        s = raw[col].str.strip().str.lower()
        return pd.Series(np.where(s.isin(TRUE), True, np.where(s.isin(FALSE), False, None)),
                         index=s.index, dtype="boolean")

    def when(col: str, as_date: bool) -> pd.Series:
        s = raw[col].str.strip()
        epoch = s.str.fullmatch(EPOCH_RE)
        iso = s.str.fullmatch(ISO_RE)
        out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
        out[epoch] = pd.to_datetime(s[epoch].astype("int64"), unit="ms")
        parsed = pd.to_datetime(s[iso].str.replace("z", "Z"), utc=True, errors="coerce",
                                format="ISO8601")
        out[iso] = parsed.dt.tz_convert(None)
        return out.dt.floor("D") if as_date else out

    for col, t in SCHEMA.items():
        if t in ("enumeration", "multi"):
            df[col] = text(col)
        elif t == "number":
            df[col] = number(col)
        elif t == "bool":
            df[col] = boolean(col)
        else:
            df[col] = when(col, t == "date")
    email = text("email")

    # RFM per SPEC: score = 1 + floor(5 * b / n), b = strictly worse values in the population
    pop = df[["last_order_date", "order_count", "total_revenue"]].notna().all(axis=1)
    n = int(pop.sum())
    scores = {}
    for dim, col in (("r", "last_order_date"), ("f", "order_count"), ("m", "total_revenue")):
        b = df.loc[pop, col].rank(method="min") - 1
        scores[dim] = (1 + (5 * b) // n).astype(int)
    grid = {(r, f + 1): label for r, row in GRID.items() for f, label in enumerate(row)}
    rf = list(zip(scores["r"], scores["f"], strict=True))
    df["rfm.segment"] = pd.Series([grid[x] for x in rf], index=scores["r"].index).str.lower()
    clicks, views = df["email_clicks_30d"], df["page_views_30d"]
    df["engagement"] = (3 * clicks.fillna(0) + views.fillna(0)).where(clicks.notna() | views.notna())

    def top(col: str, p: float, largest: bool = True) -> pd.Series:
        v = df[col].dropna().sort_values(ascending=not largest)
        if v.empty:
            return pd.Series(False, index=df.index)
        t = v.iloc[math.ceil(p / 100 * len(v)) - 1]
        return (df[col] >= t if largest else df[col] <= t).fillna(False)

    def has_any(col: str, values: list[str]) -> pd.Series:
        pat = "|".join(rf"(?:^|;)\s*{v}\s*(?:;|$)" for v in values)
        return df[col].str.contains(pat, regex=True).fillna(False).astype(bool)

    def isin(col: str, values: list[str]) -> pd.Series:
        return df[col].isin([v.lower() for v in values])

    def ge(col: str, v: float) -> pd.Series:
        return (df[col] >= v).fillna(False)

    stage = "lifecyclestage"
    m: dict[str, pd.Series] = {}
    for name, label in (("champions", "champions"), ("loyal", "loyal"), ("at_risk", "at risk"),
                        ("cannot_lose", "cannot lose them"), ("hibernating", "hibernating"),
                        ("new_buyers", "new")):
        m[name] = (df["rfm.segment"] == label).fillna(False)
    m["customers"] = isin(stage, ["customer"])
    m["sql"] = isin(stage, ["sql", "opportunity"])
    m["mql"] = isin(stage, ["mql"])
    m["leads"] = isin(stage, ["lead", "subscriber"])
    m["trials"] = isin(stage, ["trial"])
    m["engagement_top"] = top("engagement", 20)
    m["engagement_bottom"] = top("engagement", 40, largest=False)
    login = df["last_login"]
    recent = ((login >= now - pd.Timedelta(days=14)) & (login <= now)).fillna(False)
    m["trial_power_users"] = m["trials"] & recent & (ge("projects", 3) | m["engagement_top"])
    m["enterprise"] = ge("num_employees", 250)
    m["smb"] = ge("num_employees", 1) & (df["num_employees"] <= 49).fillna(False)
    m["high_value"] = top("total_revenue", 5)
    m["lapsed_customers"] = m["customers"] & (df["last_order_date"] < now - pd.Timedelta(days=90)
                                              ).fillna(False)
    m["eu_non_software"] = isin("country", EU) & ~(df["industry"] == "software").fillna(False)
    m["ai_curious"] = has_any("interests", ["ai", "analytics"])

    # exclusive group: first match wins
    taken = pd.Series(False, index=df.index)
    group = {}
    for s in ("customers", "sql", "mql", "leads"):
        group[s] = m[s] & ~taken
        taken |= m[s]
    held = {"champions": df["key"].map(  # README: int(md5("S:K")[:8], 16) < P/100 * 2^32
        lambda k: int(hashlib.md5(f"champions:{k}".encode()).hexdigest()[:8], 16) < 0.1 * 2**32)}
    blocked = [ln.strip() for ln in (folder / "blocklist.csv").read_text().splitlines() if ln.strip()]
    suppressed = ((df["hs_email_optout"] == True).fillna(False)  # noqa: E712
                  | email.str.endswith(("@rival.example", "@other.example")).fillna(False)
                  | df["key"].isin([b for b in blocked if "@" not in b])
                  | email.isin([b for b in blocked if "@" in b]))
    consent = (df["ads_consent"] == True).fillna(False)  # noqa: E712
    ids = {"email": email, "phone": text("phone"), "first_name": text("firstname"),
           "last_name": text("lastname"), "country": df["country"]}
    desired = {}
    for name, target, idents, needs_consent in DESTS:
        members = (taken if target.startswith("group:") else
                   m[target] & ~held.get(target, pd.Series(False, index=df.index)))
        has_id = pd.concat([ids[i].notna() for i in idents], axis=1).any(axis=1)
        ok = members & ~suppressed & has_id & (consent if needs_consent else True)
        desired[name] = int(ok.sum())
    return {"seconds": time.perf_counter() - t0,
            "segments": {k: int(v.sum()) for k, v in m.items()}, "desired": desired}


# ---------------------------------------------------------------- diff micro-benchmark


def diff_bench(n: int, folder: Path) -> dict:
    """A 1% churn on an n-member audience: time the core's diff against the store's ledger."""
    import numpy as np

    from crmsync.sync.mapping.loader import load
    from crmsync.sync.pipeline.build import make_destination
    from crmsync.sync.pipeline.push import DestinationSync
    from crmsync.sync.pipeline.runner import Runner

    extra = n // 100
    rng = np.random.default_rng(7)
    member = np.zeros(n + extra, dtype=bool)
    member[:n] = True

    def write(flags: np.ndarray) -> None:
        with (folder / "audience.csv").open("w") as fh:
            fh.write("id,email,member\n")
            fh.writelines(f"k{i:07d},u{i}@mail.example,{'true' if f else 'false'}\n"
                          for i, f in enumerate(flags.tolist()))

    write(member)
    mapping = {"version": 1,
               "sources": {"crm": {"type": "csv", "path": "audience.csv", "key": "id",
                                   "schema": {"member": "bool"}, "identity": {"email": "email"}}},
               "segments": {"audience": {"description": "all", "owner": "bench@acme.example",
                                         "where": _f("member", "eq", True)}},
               "destinations": [{"name": "audience-file", "segment": "audience", "type": "csv",
                                 "path": "out/audience.csv", "identifiers": ["email"]}]}
    path = folder / "diff.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    t_first, rss_first, _ = run_child_rss([*_crmsync(), "run", "-c", str(path), "--as-of", AS_OF])
    leave = rng.choice(n, size=extra // 2, replace=False)
    member[leave] = False
    member[n:n + extra // 2] = True  # 0.5% leave, 0.5% join: 1% churn
    write(member)
    runner = Runner(load(path, env={}))
    try:
        ev = runner.evaluate()
        cfg = runner.project.mapping.destinations[0]
        ds = DestinationSync(ev, cfg, make_destination(runner.project, 0, runner.now), 0)
        t0 = time.perf_counter()
        plan = ds.plan()
        t_diff = time.perf_counter() - t0
    finally:
        runner.close()
    t_run, rss_run, _ = run_child_rss([*_crmsync(), "run", "-c", str(path), "--as-of", AS_OF])
    return {"members": n, "first_run_s": t_first, "first_run_rss_mib": rss_first,
            "diff_s": t_diff, "add": plan.figures.add, "remove": plan.figures.remove,
            "unchanged": plan.figures.unchanged, "churn_run_s": t_run, "churn_run_rss_mib": rss_run}


# ---------------------------------------------------------------- main


def measure(n: int, folder: Path, pandas: bool) -> dict:
    """Every figure for ``n`` generated contacts, in one run: crmsync's three plans, DuckDB's
    own typed read of the same file and (``pandas``) the baseline, each in a child with its
    peak RSS."""
    t0 = time.perf_counter()
    csv_path = generate.generate(n, SEED, folder / "contacts.csv")
    t_gen = time.perf_counter() - t0
    mapping = write_mapping(folder, csv_path.name)
    cmd = [*_crmsync(), "plan", "-c", str(mapping), "--json", "--as-of", AS_OF]
    t_plan, rss_plan, out, err = run_child(cmd)  # first plan: pulls the new file
    plan = json.loads(out)
    t_pull = pull_seconds(err)
    t_warm, rss_warm, _ = run_child_rss(cmd)  # again, the file unchanged (cron)
    t_off, rss_off, _ = run_child_rss([*cmd, "--offline"])
    t_duck, rss_duck, out = run_child_rss([sys.executable, __file__, "--duckdb-read",
                                           str(csv_path), str(folder / "duck.duckdb")])
    duck = json.loads(out)
    fig = {
        "contacts": n, "csv_mib": csv_path.stat().st_size / 2**20, "generate_s": t_gen,
        "load_avg_1m": os.getloadavg()[0],
        "plan_s": t_plan, "plan_rss_mib": rss_plan,
        "plan_steps_s": {"pull (read + type + store, one statement)": t_pull,
                         "the rest (start-up, evaluate, count, diff)":
                             t_plan - t_pull if t_pull is not None else None},
        "plan_unchanged_s": t_warm, "plan_unchanged_rss_mib": rss_warm,
        "plan_offline_s": t_off, "plan_offline_rss_mib": rss_off,
        "duckdb_read_s": t_duck, "duckdb_read_statement_s": duck["seconds"],
        "duckdb_read_rss_mib": rss_duck,
        "plan_over_duckdb_read": t_plan / t_duck,
        "pull_over_duckdb_read": t_pull / t_duck if t_pull is not None else None,
    }
    if not pandas:
        fig["pandas"] = "skipped (it would need several GiB at this size)"
        return fig
    t_pd, rss_pd, out = run_child_rss([sys.executable, __file__, "--baseline", str(csv_path)])
    base = json.loads(out)
    ours = {k: v["matched"] for k, v in plan["segments"].items()}
    desired = {k: v["desired"] for k, v in plan["destinations"].items()}
    fig.update({
        "pandas_s": t_pd, "pandas_compute_s": base["seconds"], "pandas_rss_mib": rss_pd,
        "speedup": t_pd / t_plan, "speedup_unchanged": t_pd / t_warm,
        "speedup_offline": t_pd / t_off,
        "segments_agree": ours == base["segments"], "desired_agree": desired == base["desired"],
        "segment_mismatches": {k: (ours.get(k), base["segments"].get(k))
                               for k in set(ours) | set(base["segments"])
                               if ours.get(k) != base["segments"].get(k)},
    })
    return fig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="contacts to generate")
    ap.add_argument("--sizes", help="several sizes, e.g. 100000,1000000,5000000 (instead of "
                    "--n): figures per size and the slope of time and peak RSS")
    ap.add_argument("--pandas-max", type=int, default=2_000_000, help="skip the pandas "
                    "baseline above this many contacts (it needs ~1.4 GiB per million)")
    ap.add_argument("--diff-n", type=int, default=1_000_000, help="audience size for the diff "
                    "micro-benchmark (0 skips it)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--baseline", metavar="CSV", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--duckdb-read", nargs=2, metavar=("CSV", "DB"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.baseline:
        print(json.dumps(baseline(Path(args.baseline), Path(args.baseline).parent)))
        return
    if args.duckdb_read:
        print(json.dumps(duckdb_read(Path(args.duckdb_read[0]), Path(args.duckdb_read[1]))))
        return
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [args.n]
    runs = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
            runs.append(measure(n, Path(tmp), n <= args.pandas_max))
    with tempfile.TemporaryDirectory(prefix="crmsync-bench-") as tmp:
        diff = diff_bench(args.diff_n, Path(tmp)) if args.diff_n else None
    scaling = {f"{k}_per_million": slope([(r["contacts"], r[k]) for r in runs])
               for k in ("plan_s", "plan_rss_mib", "plan_offline_s", "plan_offline_rss_mib",
                         "duckdb_read_s")} if len(runs) > 1 else None
    figures = {"runs": runs, "scaling": scaling, "diff": diff}
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    for r in runs:
        report(r)
    if scaling:
        print("slope per million contacts: " + ", ".join(
            f"{k.removesuffix('_per_million')} {v:.2f}" for k, v in scaling.items()))
    if diff:
        print(f"diff of a {diff['members']:,}-member audience with 1% churn: "
              f"{diff['diff_s']:.2f}s (+{diff['add']:,} -{diff['remove']:,} ={diff['unchanged']:,}); "
              f"first run {diff['first_run_s']:.1f}s, churn run {diff['churn_run_s']:.1f}s "
              f"(peak RSS {max(diff['first_run_rss_mib'], diff['churn_run_rss_mib']):.0f} MiB)")


def report(r: dict) -> None:
    """One size's figures as a table."""
    print(f"{r['contacts']:,} contacts ({r['csv_mib']:.0f} MiB csv), 20 segments + RFM + "
          f"weighted score + 3 suppressions + 10 destinations (load {r['load_avg_1m']:.2f})")
    print(f"{'':40}{'seconds':>9}{'peak RSS':>12}")
    print(f"{'crmsync plan (new file: pull)':40}{r['plan_s']:9.2f}{r['plan_rss_mib']:9.0f} MiB")
    for step, sec in r["plan_steps_s"].items():
        print(f"{'  ' + step:40}{sec if sec is not None else float('nan'):9.2f}")
    print(f"{'crmsync plan (file unchanged)':40}{r['plan_unchanged_s']:9.2f}"
          f"{r['plan_unchanged_rss_mib']:9.0f} MiB")
    print(f"{'crmsync plan --offline':40}{r['plan_offline_s']:9.2f}"
          f"{r['plan_offline_rss_mib']:9.0f} MiB")
    print(f"{'DuckDB read_csv into a typed table':40}{r['duckdb_read_s']:9.2f}"
          f"{r['duckdb_read_rss_mib']:9.0f} MiB")
    print(f"first plan / DuckDB read: {r['plan_over_duckdb_read']:.2f}x")
    if "pandas_s" not in r:
        print(f"pandas baseline: {r['pandas']}")
        return
    print(f"{'pandas baseline (same rules)':40}{r['pandas_s']:9.2f}{r['pandas_rss_mib']:9.0f} MiB")
    print(f"speed-up over pandas: {r['speedup']:.1f}x (new file), {r['speedup_unchanged']:.1f}x "
          f"(unchanged), {r['speedup_offline']:.1f}x (--offline); segment sizes agree: "
          f"{r['segments_agree']}, desired per destination agree: {r['desired_agree']}")
    if r["segment_mismatches"]:
        print(f"  mismatches (crmsync, pandas): {r['segment_mismatches']}")


if __name__ == "__main__":
    main()
