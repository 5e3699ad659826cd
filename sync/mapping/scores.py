"""What the mapping's scores add to a source: the fields each score derives, and SPEC's RFM
grid (the segment names an RFM score labels contacts with, unless its ``segments_map``)."""

from __future__ import annotations

from .model import CLV_FIELDS, ClvScore, FieldType, RfmScore, WeightedScore

#: SPEC's RFM grid: GRID[r][f - 1] is the segment of a contact scored R = r, F = f
GRID = {
    5: ["New", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"],
    4: ["Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Loyal"],
    3: ["About to Sleep", "About to Sleep", "Need Attention", "Loyal", "Loyal"],
    2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Cannot Lose Them"],
    1: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Cannot Lose Them"],
}

#: the grid's segment names, row by row from R = 5, each row from F = 5
RFM_SEGMENTS = tuple(dict.fromkeys(label for r in sorted(GRID, reverse=True)
                                   for label in reversed(GRID[r])))


def score_fields(name: str, score: RfmScore | WeightedScore | ClvScore) -> dict[str, FieldType]:
    """The fields score ``name`` adds (``rfm.r`` ... ``rfm.segment``; a weighted score, one;
    a CLV score, ``value.p_alive`` ... ``value.tier``)."""
    if isinstance(score, WeightedScore):
        return {name: FieldType.number}
    if isinstance(score, ClvScore):
        return {f"{name}.{f}": FieldType.number for f in CLV_FIELDS}
    return {f"{name}.r": FieldType.number, f"{name}.f": FieldType.number,
            f"{name}.m": FieldType.number, f"{name}.score": FieldType.string,
            f"{name}.segment": FieldType.enumeration}
