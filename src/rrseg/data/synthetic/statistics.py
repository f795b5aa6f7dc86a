"""The long-tail statistics of a dataset in the folder layout, and the checks against ADE20K's shape."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rrseg.data.stats import spearman


def count_split(root: Path, split: str, workers: int | None) -> tuple:
    """(ClassCounts, info, dataset) of one split, counted by :func:`rrseg.data.stats.compute_stats`."""
    from rrseg.data.folder import FolderDataset
    from rrseg.data.stats import compute_stats

    ds = FolderDataset(root, split)
    counts, info = compute_stats(ds.label_files, ds.num_classes, ds.reduce_zero_label, ds.ignore_index, workers)
    return counts, info, ds


def long_tail_statistics(train, val=None) -> dict:
    """The issue's long-tail statistics from the training (and validation) split's ClassCounts."""
    img, pix = train.image_counts.astype(np.float64), train.pixel_counts.astype(np.float64)
    per_region = pix / np.maximum(img, 1)
    rarest = int(np.argmin(img))
    return {
        "classes": int(img.size),
        "train_images": int(train.num_images),
        "val_images": int(val.num_images) if val is not None else 0,
        "image_count_max": int(img.max()),
        "image_count_min": int(img.min()),
        "image_imbalance": float(img.max() / max(img.min(), 1)),
        "rarest_class": rarest,
        "rarest_train_images": int(img[rarest]),
        "rarest_val_images": int(val.image_counts[rarest]) if val is not None else 0,
        "min_val_images": int(val.image_counts.min()) if val is not None else 0,
        "spearman_image_pixel": spearman(img, pix),
        "pixels_per_region_max": float(per_region.max()),
        "pixels_per_region_min": float(per_region.min()),
        "pixels_per_region_spread": float(per_region.max() / max(per_region.min(), 1e-9)),
        "classes_per_image": float(img.sum() / max(train.num_images, 1)),
        "pixel_imbalance": float(pix.max() / max(pix.min(), 1)),
    }


def synthetic_statistics(root: str | os.PathLike, workers: int | None = None) -> dict:
    """The long-tail statistics of a dataset in the folder layout (train and val splits), from its label files."""
    train, _, _ = count_split(Path(root), "train", workers)
    val, _, _ = count_split(Path(root), "val", workers)
    return long_tail_statistics(train, val)


STAT_CHECKS = (  # (key, comparison, target, what the design aims at): development checks, not shown to users
    ("image_imbalance", ">=", 100.0, "image-count imbalance >= 100x"),
    ("rarest_train_images", ">=", 10, "rarest class in >= 10 training images"),
    ("min_val_images", ">=", 3, "every class in >= 3 validation images"),
    ("spearman_image_pixel", "~", 0.6, "Spearman(image, pixel counts) ~ 0.6 (0.45..0.75)"),
    ("pixels_per_region_spread", ">=", 30.0, "pixels per region spread >= 30x"),
    ("classes_per_image", ">=", 3.0, "several classes per image (>= 3)"),
)


def check_statistics(stats: dict) -> list[tuple[str, bool]]:
    """(what, passed) for each of the design's constraints (``STAT_CHECKS``): checks for developing the
    generator (tests/data/test_synthetic.py holds the default set to them), not something a user must meet; a
    small set (few classes or images) misses some by construction."""
    res = []
    for key, op, target, what in STAT_CHECKS:
        v = stats[key]
        ok = (0.45 <= v <= 0.75) if op == "~" else v >= target
        res.append((what, bool(ok)))
    return res


def format_statistics(stats: dict, checks: bool = False) -> str:
    """The statistics as text, with ADE20K's figures for comparison; ``checks=True`` adds the design checks
    ("[ok]" / "[NOT MET]" per constraint of :func:`check_statistics`), for development only: what
    ``make_synthetic`` logs leaves them out."""
    lines = [
        f"classes {stats['classes']}, images {stats['train_images']} train / {stats['val_images']} val",
        f"image counts: max {stats['image_count_max']}, min {stats['image_count_min']} "
        f"({stats['image_imbalance']:.0f}x; ADE20K 283x)",
        f"rarest class (#{stats['rarest_class']}): {stats['rarest_train_images']} train images, "
        f"{stats['rarest_val_images']} val images (every class >= {stats['min_val_images']} val images)",
        f"Spearman(image counts, pixel counts): {stats['spearman_image_pixel']:.2f} (ADE20K 0.63)",
        f"pixels per region: {stats['pixels_per_region_min']:.0f} .. {stats['pixels_per_region_max']:.0f} "
        f"({stats['pixels_per_region_spread']:.0f}x; ADE20K 69x)",
        f"classes per image: {stats['classes_per_image']:.1f} (ADE20K 8.2)",
    ]
    if checks:
        for what, ok in check_statistics(stats):
            lines.append(f"  [{'ok' if ok else 'NOT MET'}] {what}")
    return "\n".join(lines)
