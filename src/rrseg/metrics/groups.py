"""Frequency groups: classes ranked by region (image) count, or by pixel count, and split into frequent /
common / rare.

The default split is the ADE20K one used by DisAlign (top 20 / next 55 / last 75 of 150 classes), applied
as the same fractions to other class counts, with two rules for few classes (:func:`default_group_sizes`):

- no group is left empty: frequent = max(1, round(C x 20/150)), common = max(1, round(C x 55/150)), rare =
  the rest; so the most frequent class is always "frequent" and, from 3 classes on, the ranking's last class
  always "rare";
- but there is no "rare" group below 3 classes (1 class: frequent only; 2 classes: frequent and common), as
  ranking two classes says which is more frequent, not that one is rare.

For 150 classes this is 20 / 55 / 75, for 30 (the demo) 4 / 11 / 15, for 19 (Cityscapes) 3 / 7 / 9, for 3
classes 1 / 1 / 1 (from 4 classes on the rules change nothing: the rounded fractions are never 0 there).
Classes are ranked by count, most frequent first; equal counts keep class order, so classes with the same
count can fall on both sides of a border. ``sizes`` (absolute group sizes) or ``thresholds`` (minimum region
counts for frequent and for common) override the default.

``ranked_groups`` names the groups after their ranking: by region count ``frequent`` / ``common`` / ``rare``
(the names reports have always had), by pixel count ``pixel_frequent`` / ``pixel_common`` / ``pixel_rare``
(LTSS reports both rankings).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rrseg.errors import RRSegError
from rrseg.metrics.confusion import SegMetrics

__all__ = [
    "GROUP_BY",
    "GROUP_NAMES",
    "MIN_CLASSES_FOR_RARE",
    "PIXEL_GROUP_NAMES",
    "default_group_sizes",
    "frequency_groups",
    "group_ranking",
    "group_summary",
    "ranked_groups",
]

GROUP_NAMES = ("frequent", "common", "rare")
PIXEL_PREFIX = "pixel_"
PIXEL_GROUP_NAMES = tuple(PIXEL_PREFIX + g for g in GROUP_NAMES)
GROUP_BY = ("region", "pixel", "both")  # eval.group_by / rrseg score --group-by
ADE20K_SIZES = (20, 55, 75)


MIN_CLASSES_FOR_RARE = 3


def default_group_sizes(num_classes: int) -> tuple[int, int]:
    """(frequent, common) sizes of the default split for ``num_classes`` classes; rare is the rest (see the
    module: ADE20K's fractions, at least one class per group, no rare group below 3 classes)."""
    c = int(num_classes)
    total = sum(ADE20K_SIZES)
    n_freq = min(c, max(1, round(c * ADE20K_SIZES[0] / total)))
    n_common = max(1, round(c * ADE20K_SIZES[1] / total))
    # what is left for rare: none below MIN_CLASSES_FOR_RARE classes, at least one from there on
    n_common = min(n_common, c - n_freq - (1 if c >= MIN_CLASSES_FOR_RARE else 0))
    return n_freq, max(0, n_common)


def frequency_groups(
    region_counts: Sequence[int] | np.ndarray,
    sizes: tuple[int, int] | None = None,
    thresholds: tuple[float, float] | None = None,
) -> dict[str, np.ndarray]:
    """Class indices of each group, most frequent first; ties keep class order."""
    counts = np.asarray(region_counts, dtype=np.float64)
    c = counts.size
    order = np.argsort(-counts, kind="stable")
    if sizes is not None and thresholds is not None:
        raise ValueError("give group sizes or count thresholds, not both")
    if thresholds is not None:
        t_freq, t_common = thresholds
        if t_freq < t_common:
            raise ValueError(f"thresholds must be (frequent >= common), got {thresholds}")
        return {
            "frequent": order[counts[order] >= t_freq],
            "common": order[(counts[order] < t_freq) & (counts[order] >= t_common)],
            "rare": order[counts[order] < t_common],
        }
    n_freq, n_common = default_group_sizes(c) if sizes is None else sizes
    if n_freq < 0 or n_common < 0 or n_freq + n_common > c:
        raise ValueError(f"group sizes {(n_freq, n_common)} do not fit {c} classes")
    return {
        "frequent": order[:n_freq],
        "common": order[n_freq : n_freq + n_common],
        "rare": order[n_freq + n_common :],
    }


def ranked_groups(
    region_counts: Sequence[int] | np.ndarray | None,
    pixel_counts: Sequence[int] | np.ndarray | None = None,
    group_by: str = "region",
    sizes: tuple[int, int] | None = None,
    thresholds: tuple[float, float] | None = None,
) -> dict[str, np.ndarray]:
    """The groups of ``group_by`` ("region", "pixel" or "both"), named after their ranking (see the module).

    ``sizes`` apply to both rankings; ``thresholds`` are region counts, for the region ranking only. Asking
    for pixel groups without pixel counts is an RRSegError.
    """
    if group_by not in GROUP_BY:
        raise RRSegError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    out: dict[str, np.ndarray] = {}
    if group_by in ("region", "both"):
        if region_counts is None:
            raise RRSegError(f"group_by {group_by!r} ranks classes by region count, but no region counts were given")
        out.update(frequency_groups(region_counts, sizes, thresholds))
    if group_by in ("pixel", "both"):
        if pixel_counts is None:
            raise RRSegError(
                f"group_by {group_by!r} ranks classes by pixel count, but these class counts hold image (region) "
                "counts only; give counts from `rrseg stats` (JSON with pixel_counts) or a released "
                "*_image_label_stats.txt next to its *_pix_label_stats.txt"
            )
        if thresholds is not None and group_by == "pixel":
            raise RRSegError("group thresholds are region counts; pixel groups take group sizes")
        out.update({PIXEL_PREFIX + k: v for k, v in frequency_groups(pixel_counts, sizes).items()})
    return out


def group_ranking(name: str) -> str:
    """"pixel" for a group of the pixel-count ranking (``pixel_*``), else "region"."""
    return "pixel" if name.startswith(PIXEL_PREFIX) else "region"


def group_summary(metrics: SegMetrics, groups: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{"all": ..., "frequent": ..., "common": ..., "rare": ...}`` each with mIoU, mAcc, mFPR, ..."""
    out = {"all": metrics.summary()}
    for name, classes in groups.items():
        out[name] = metrics.summary(classes)
    return out
