"""Frequency groups: classes ranked by region (image) count and split into frequent / common / rare.

The default split is the ADE20K one used by DisAlign (top 20 / next 55 / last 75 of 150 classes), applied
as the same fractions to other class counts. ``sizes`` (absolute group sizes) or ``thresholds`` (minimum
region counts for frequent and for common) override it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rrseg.metrics.confusion import SegMetrics

__all__ = ["GROUP_NAMES", "frequency_groups", "group_summary"]

GROUP_NAMES = ("frequent", "common", "rare")
ADE20K_SIZES = (20, 55, 75)


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
    if sizes is None:
        n_freq = round(c * ADE20K_SIZES[0] / sum(ADE20K_SIZES))
        n_common = round(c * ADE20K_SIZES[1] / sum(ADE20K_SIZES))
    else:
        n_freq, n_common = sizes
    if n_freq < 0 or n_common < 0 or n_freq + n_common > c:
        raise ValueError(f"group sizes {(n_freq, n_common)} do not fit {c} classes")
    return {
        "frequent": order[:n_freq],
        "common": order[n_freq : n_freq + n_common],
        "rare": order[n_freq + n_common :],
    }


def group_summary(metrics: SegMetrics, groups: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``{"all": ..., "frequent": ..., "common": ..., "rare": ...}`` each with mIoU, mAcc, mFPR, ..."""
    out = {"all": metrics.summary()}
    for name, classes in groups.items():
        out[name] = metrics.summary(classes)
    return out
