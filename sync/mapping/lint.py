"""Governance lint (SPEC): findings are warnings; ``validate --strict`` makes them fail.

``static(project)`` needs only the mapping: every segment has a description and an owner and
drives a treatment (a destination, directly or through a group); not too many primary segments.
``data(project, sizes, overlaps)`` needs the evaluated snapshot: empty and tiny segments, and
pairs of segments so alike (Jaccard) that they should be merged.
"""

from __future__ import annotations

from ..errors import Problem
from .loader import Project

__all__ = ["data", "jaccard", "primary_segments", "static"]

WARNING = "warning"


def primary_segments(project: Project) -> list[str]:
    """Segments that feed a destination directly or through a group, in mapping order."""
    m = project.mapping
    fed: set[str] = set()
    for d in m.destinations:
        if d.segment:
            fed.add(d.segment)
        elif d.group and d.group in m.groups:
            fed.update(m.groups[d.group].segments)
    return [s for s in m.segments if s in fed]


def static(project: Project) -> list[Problem]:
    """Lint that needs no data: descriptions, owners, treatments, number of primary segments."""
    m = project.mapping
    out: list[Problem] = []
    primary = primary_segments(project)
    for name, seg in m.segments.items():
        path = f"segments.{name}"
        if not (seg.description or "").strip():
            out.append(project.problem(path, f"segment '{name}' has no description",
                                       "add description: what it is and why it exists",
                                       WARNING))
        if not (seg.owner or "").strip():
            out.append(project.problem(path, f"segment '{name}' has no owner",
                                       "add owner: the team or person answerable for it",
                                       WARNING))
        if name not in primary:
            out.append(project.problem(
                path, f"segment '{name}' drives no treatment (no destination uses it, "
                "directly or through a group)",
                "add a destination for it, or remove it if nobody acts on it", WARNING))
    limit = m.lint.max_primary_segments
    if len(primary) > limit:
        out.append(project.problem(
            "segments", f"{len(primary)} primary segments (more than {limit}): "
            "too many for a team to act on", "merge or retire some, or raise "
            "lint.max_primary_segments", WARNING))
    return out


def jaccard(size_a: int, size_b: int, both: int) -> float:
    """|A ∩ B| / |A ∪ B| from the two sizes and the intersection (0 when both are empty)."""
    union = size_a + size_b - both
    return both / union if union > 0 else 0.0


def data(project: Project, sizes: dict[str, int],
         overlaps: dict[tuple[str, str], int]) -> list[Problem]:
    """Lint over the evaluated snapshot. ``sizes``: segment -> matched contacts;
    ``overlaps``: (a, b) -> contacts in both (each unordered pair once is enough)."""
    m = project.mapping
    out: list[Problem] = []
    for name, size in sizes.items():
        seg = m.segments.get(name)
        if seg is None:
            continue
        path = f"segments.{name}"
        floor = seg.min_size if seg.min_size is not None else m.lint.min_size
        if size == 0:
            out.append(project.problem(path, f"segment '{name}' is empty",
                                       "check its conditions against the data, or remove it",
                                       WARNING))
        elif size < floor:
            out.append(project.problem(
                path, f"segment '{name}' is tiny: {size} contacts (min_size {floor})",
                "widen its conditions, merge it into a broader segment, or set min_size:",
                WARNING))
    seen: set[frozenset[str]] = set()
    for (a, b), both in sorted(overlaps.items()):
        pair = frozenset((a, b))
        if a == b or pair in seen or a not in sizes or b not in sizes:
            continue
        seen.add(pair)
        score = jaccard(sizes[a], sizes[b], both)
        if score > m.lint.max_overlap:
            out.append(project.problem(
                f"segments.{b}", f"segments '{a}' and '{b}' overlap {score:.1%} (Jaccard): "
                "redundant: merge them", f"merge '{b}' into '{a}', or make their conditions "
                "distinct", WARNING))
    return out
