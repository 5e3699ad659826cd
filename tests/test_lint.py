"""Governance lint (sync.lint): warnings with line, path and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmsync.sync.errors import Problem
from crmsync.sync.mapping import lint, loader

DATA = Path(__file__).parent / "data" / "validate"


@pytest.fixture(scope="module")
def project() -> loader.Project:
    return loader.load(DATA / "lint.yaml", env={})


def line_of(snippet: str) -> int:
    hits = [i for i, t in enumerate((DATA / "lint.yaml").read_text().splitlines(), 1)
            if t.startswith(snippet)]
    assert len(hits) == 1, hits
    return hits[0]


def by_message(problems: list[Problem], text: str) -> list[Problem]:
    return [p for p in problems if text in p.message]


def test_primary_segments(project):
    assert lint.primary_segments(project) == ["customers", "leads", "mql", "vip"]


def test_static_findings_are_warnings_with_line_path_fix(project):
    problems = lint.static(project)
    assert problems and all(p.severity == "warning" for p in problems)
    assert all(p.fix and p.line for p in problems)
    (p,) = by_message(problems, "'leads' has no description")
    assert p.path == "segments.leads" and p.line == line_of("  leads:")
    assert "add description:" in p.fix
    (p,) = by_message(problems, "'mql' has no owner")
    assert p.path == "segments.mql" and p.line == line_of("  mql:")
    assert "add owner:" in p.fix
    assert by_message(problems, "'vip' has no owner")  # blank counts as missing
    (p,) = by_message(problems, "drives no treatment")
    assert p.path == "segments.orphan" and p.line == line_of("  orphan:")
    assert "add a destination" in p.fix


def test_too_many_primary_segments(project):
    (p,) = by_message(lint.static(project), "primary segments")
    assert p.message.startswith("4 primary segments (more than 3)")
    assert p.path == "segments" and p.line == line_of("segments:")
    assert "lint.max_primary_segments" in p.fix


def test_static_is_quiet_on_a_governed_mapping():
    good = loader.load(DATA / "good.yaml", env={"HUBSPOT_TOKEN": "x", "SLACK_WEBHOOK_URL": "y"})
    assert lint.static(good) == []


def test_default_limits_from_spec():
    good = loader.load(DATA / "good.yaml", env={"HUBSPOT_TOKEN": "x", "SLACK_WEBHOOK_URL": "y"})
    assert (good.mapping.lint.min_size, good.mapping.lint.max_primary_segments,
            good.mapping.lint.max_overlap) == (50, 12, 0.9)
    problems = lint.data(good, {"champions": 49, "at_risk": 50, "engaged": 60},
                         {("at_risk", "engaged"): 50})
    # champions is under the default min_size 50; jaccard(50, 60, 50) = 0.833 < 0.9
    assert [p.path for p in problems] == ["segments.champions"]
    problems = lint.data(good, {"at_risk": 100, "engaged": 100}, {("at_risk", "engaged"): 95})
    assert [p.path for p in problems] == ["segments.engaged"]  # 95/105 = 0.905 > 0.9


def test_empty_and_tiny_segments(project):
    sizes = {"customers": 5000, "leads": 499, "mql": 99, "orphan": 0, "vip": 100}
    problems = lint.data(project, sizes, {})
    assert all(p.severity == "warning" for p in problems)
    assert {p.path for p in problems} == {"segments.leads", "segments.mql", "segments.orphan"}
    (p,) = by_message(problems, "'leads' is tiny")
    assert "499 contacts (min_size 500)" in p.message  # the segment's own min_size wins
    assert p.line == line_of("  leads:")
    (p,) = by_message(problems, "'mql' is tiny")
    assert "99 contacts (min_size 100)" in p.message  # mapping.lint.min_size
    (p,) = by_message(problems, "'orphan' is empty")
    assert "remove it" in p.fix


def test_redundant_pairs(project):
    sizes = {"customers": 1000, "leads": 1000, "mql": 1000, "vip": 1000}
    overlaps = {("customers", "leads"): 900,  # 900/1100 = 0.818 > 0.8
                ("leads", "customers"): 900,  # same pair, other order: reported once
                ("mql", "vip"): 888,  # 888/1112 = 0.799: fine
                ("customers", "nope"): 1000}  # unknown segment: ignored
    problems = lint.data(project, sizes, overlaps)
    (p,) = problems
    assert "'customers' and 'leads' overlap 81.8% (Jaccard)" in p.message
    assert "redundant: merge them" in p.message
    assert p.path == "segments.leads" and p.line == line_of("  leads:")
    assert "merge 'leads' into 'customers'" in p.fix


@pytest.mark.parametrize("a, b, both, expected", [
    (10, 10, 10, 1.0), (10, 10, 0, 0.0), (0, 0, 0, 0.0), (3, 1, 1, 1 / 3)])
def test_jaccard(a, b, both, expected):
    assert lint.jaccard(a, b, both) == pytest.approx(expected)
