"""The engine over several DuckDB row groups (parallel scans): the full view's positional
join lines typed fields up with their flags, and the RFM quintiles from percentile cut-offs
equal SPEC's rank formula, ties included."""

from __future__ import annotations

import math
from datetime import datetime
from fractions import Fraction

import duckdb

from crmsync.sync.mapping.loader import load
from crmsync.sync.pipeline.runner import Runner

from conftest import write_mapping

N = 300_000  # > 2 row groups of 122,880


def _setup(tmp_path):
    csv = tmp_path / "c.csv"
    duckdb.sql(f"""COPY (SELECT 'k' || lpad(i::VARCHAR, 7, '0') AS id,
            CASE WHEN i % 97 = 0 THEN '' ELSE (DATE '2026-01-01' + (hash(i) % 300)::INT)::VARCHAR
            END AS last_order,
            CASE WHEN i % 89 = 0 THEN 'n/a' ELSE (hash(i * 7) % 12)::VARCHAR END AS orders,
            ((hash(i * 13) % 50000) / 100.0)::VARCHAR AS revenue,
            ['lead', 'customer', 'mql'][1 + i % 3] AS stage
        FROM range({N}) t(i)) TO '{csv}' (HEADER)""")
    return write_mapping(tmp_path / "m.yaml", {
        "version": 1,
        "sources": {"crm": {"type": "csv", "path": "c.csv", "key": "id", "schema": {
            "last_order": "date", "orders": "number", "revenue": "number",
            "stage": "enumeration"}}},
        "scores": {"rfm": {"type": "rfm", "recency": "last_order", "frequency": "orders",
                           "monetary": "revenue"}},
        "segments": {
            "champions": {"where": {"field": "rfm.segment", "eq": "Champions"}, "holdout": "10%"},
            "top": {"where": {"field": "revenue", "top_percent": 7.5}},
            "customers": {"where": {"field": "stage", "eq": "customer"}},
            "leads": {"where": {"field": "stage", "in": ["lead", "mql"]}}},
        "groups": {"life": {"exclusive": True, "segments": ["customers", "leads"]}},
        "destinations": [{"name": "f", "segment": "champions", "type": "csv",
                          "path": "o/f.csv"}]})


def test_full_view_aligns_and_rfm_matches_rank_formula(tmp_path):
    runner = Runner(load(_setup(tmp_path), env={}), as_of=datetime(2026, 11, 1))
    try:
        with runner.store.lock():
            ev = runner.evaluate()
        con = runner.store.con
        # the positional join pairs each contact's typed row with its own flags
        assert con.execute("SELECT count(*) FROM scored_crm POSITIONAL JOIN "
                           "(SELECT _key AS k FROM eval_crm) WHERE _key IS DISTINCT FROM k"
                           ).fetchone() == (0,)
        flags = ['"m:champions"', '"h:champions"', '"w:top"', '"m:leads"', '"u:orders"']
        mismatch = " OR ".join(f"f.{c} IS DISTINCT FROM e.{c}" for c in flags)
        assert con.execute(f"SELECT count(*) FROM {ev.view('crm')} f JOIN {ev.table('crm')} e "
                           f"USING (_key) WHERE {mismatch}").fetchone() == (0,)
        # SPEC: score = 1 + floor(5 * b / n), b = contacts with a strictly worse value
        pop = ("SELECT * FROM scored_crm WHERE last_order IS NOT NULL AND orders IS NOT NULL "
               "AND revenue IS NOT NULL")
        ranks = ", ".join(f"1 + (5 * (rank() OVER (ORDER BY {c}) - 1)) // count(*) OVER () AS {d}"
                          for d, c in (("r", "last_order"), ("f", "orders"), ("m", "revenue")))
        n, bad = con.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE s."rfm.r" <> x.r OR s."rfm.f" <> x.f
                 OR s."rfm.m" <> x.m) FROM scored_crm s JOIN (SELECT _key, {ranks} FROM ({pop}))
                 x USING (_key)""").fetchone()
        assert n > 0.9 * N and bad == 0
        # top 7.5%: everyone at or above the value at position ceil(0.075 * n)
        known = con.execute("SELECT count(revenue) FROM scored_crm").fetchone()[0]
        cut = con.execute("SELECT list(revenue ORDER BY revenue DESC)[?] FROM scored_crm",
                          [math.ceil(Fraction(75, 1000) * known)]).fetchone()[0]
        assert con.execute("SELECT count(*) FILTER (WHERE \"w:top\") FROM eval_crm").fetchone()[0] \
            == con.execute("SELECT count(*) FROM scored_crm WHERE revenue >= ?", [cut]).fetchone()[0]
        assert ev.unknown_counts["crm"]["orders"] == len(range(0, N, 89))
    finally:
        runner.close()
