"""The bundled demo: deterministic data, the documented seed, a mapping that validates and plans."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from crmsync.sync.mapping.loader import load
from crmsync.sync.pipeline import checks

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "mappings" / "demo.yaml"
CONTACTS = ROOT / "mappings" / "demo" / "contacts.csv"
AS_OF = "2026-11-01T00:00:00Z"


def _generator():
    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _generator()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = gen.generate(3000, 7, tmp_path / "a.csv")
    b = gen.generate(3000, 7, tmp_path / "b.csv")
    c = gen.generate(3000, 8, tmp_path / "c.csv")
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_columns_keys_and_dirty_values(tmp_path: Path) -> None:
    path = gen.generate(5000, 3, tmp_path / "c.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == gen.COLUMNS
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 5000 and ids[0] == "c000001"
    col = {c: [r[c] for r in rows] for c in gen.COLUMNS}
    assert any(v.endswith(("@rival.example", "@other.example")) for v in col["email"])
    assert any(v and "@" not in v for v in col["email"]) or any(v.endswith("@") for v in col["email"])
    assert any(v != v.strip() or (v and v != v.lower()) for v in col["lifecyclestage"])
    assert any(v in gen.BAD_DATES for v in col["last_order_date"])
    assert any(v.isdigit() and len(v) == 13 for v in col["last_order_date"])  # epoch ms
    assert any(v in gen.BAD_NUMBERS for v in col["order_count"])
    assert any(v.startswith("+") for v in col["phone"]) and any("(" in v for v in col["phone"])
    assert "" in col["hs_email_optout"] and {"yes", "1", "TRUE"} & set(col["hs_email_optout"])
    assert any(";" in v for v in col["interests"])
    # dates count back from the fixed reference, never the wall clock
    assert max(v[:10] for v in col["created_at"]) <= "2026-11-01"


def test_bundled_contacts_are_the_documented_seed(tmp_path: Path) -> None:
    with CONTACTS.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == gen.COLUMNS
        assert sum(1 for _ in reader) == gen.DEMO_ROWS
    if np.__version__.split(".")[:2] != gen.GENERATED_WITH_NUMPY.split(".")[:2]:
        pytest.skip(f"bundled data made with numpy {gen.GENERATED_WITH_NUMPY}; "
                    f"numpy {np.__version__} may draw other streams")
    fresh = gen.generate(gen.DEMO_ROWS, gen.DEMO_SEED, tmp_path / "contacts.csv")
    assert fresh.read_bytes() == CONTACTS.read_bytes()


def test_demo_mapping_loads_and_validates() -> None:
    project = load(DEMO, env={})
    errors = [p for p in checks.check(project) if p.severity == "error"]
    assert errors == []
    m = project.mapping
    assert len(m.segments) >= 10
    assert all(s.description and s.owner for s in m.segments.values())
    assert any(s.holdout for s in m.segments.values())
    assert {"unsubscribed", "competitors", "blocklist"} <= set(m.suppressions)
    assert all(d.type == "csv" for d in m.destinations)
    assert any(d.consent for d in m.destinations) and any(d.group for d in m.destinations)


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """The demo mapping and data under a temporary folder, so runs write nothing in the repo."""
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings" / "demo", folder / "demo")
    shutil.copy(DEMO, folder / "demo.yaml")
    return folder / "demo.yaml"


def test_demo_validates_strict_and_every_segment_is_populated(cli, demo_copy: Path) -> None:
    res = cli("validate", "-c", demo_copy, "--strict")
    assert res.exit_code == 0, res.output
    plan = cli.json("plan", "-c", demo_copy, "--as-of", AS_OF)
    sizes = {name: s["matched"] for name, s in plan["segments"].items()}
    assert all(n >= 50 for n in sizes.values()), sizes
    assert plan["segments"]["champions"]["held_out"] > 0
    dests = plan["destinations"]
    assert dests["champions-ads"]["no_consent"] > 0
    assert sum(d["suppressed"] for d in dests.values()) > 0
    assert any("could not be parsed" in w for w in plan["warnings"])
    assert not (demo_copy.parent.parent / "out").exists()  # plan writes no destination


def test_demo_run_twice_second_changes_nothing(cli, demo_copy: Path) -> None:
    first = cli("run", "-c", demo_copy, "--as-of", AS_OF)
    assert first.exit_code == 0, first.output
    out = demo_copy.parent.parent / "out"
    assert (out / "lifecycle.csv").exists()
    second = cli("run", "-c", demo_copy, "--as-of", AS_OF)
    assert second.exit_code == 0, second.output
    ok = [line for line in second.stdout.splitlines() if ": ok" in line]
    assert len(ok) == len(load(demo_copy, env={}).mapping.destinations), second.stdout
    assert all(" +0 -0 " in line for line in ok), second.stdout
