"""Segmentation metrics: a mergeable confusion matrix, per-class figures and frequency groups."""

from rrseg.metrics.confusion import ConfusionMatrix, SegMetrics
from rrseg.metrics.groups import (
    GROUP_BY,
    GROUP_NAMES,
    PIXEL_GROUP_NAMES,
    frequency_groups,
    group_ranking,
    group_summary,
    ranked_groups,
)

__all__ = [
    "GROUP_BY",
    "GROUP_NAMES",
    "PIXEL_GROUP_NAMES",
    "ConfusionMatrix",
    "SegMetrics",
    "frequency_groups",
    "group_ranking",
    "group_summary",
    "ranked_groups",
]
