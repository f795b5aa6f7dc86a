"""Per-class image (region) and pixel counts over label files (index PNGs, integer TIFFs), in parallel.

The counts feed RR's prior (image counts) and the pixel-level baselines (pixel counts). The JSON written
by ``rrseg stats`` is what :meth:`rrseg.rebalance.ClassCounts.load` reads; ``--txt`` also writes the
released one-integer-per-line format. ``plot_class_counts`` draws image against pixel counts per class
(``rrseg stats --plot``), with their ``spearman`` rank correlation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrseg.data.labels import check_label_dtype, find_files, read_label, reduce_zero_label
from rrseg.errors import RRSegError
from rrseg.parallel import parallel_map
from rrseg.rebalance.counts import ClassCounts

__all__ = ["compute_stats", "label_histogram", "plot_class_counts", "spearman", "stats_files", "uint8_histogram"]


def uint8_histogram(values: np.ndarray) -> np.ndarray:
    """256-bin histogram of a uint8 array, several times faster than np.bincount on label maps.

    Label maps are made of regions, so long runs of one value: when runs are few, each run adds its length
    to its value's bin (one vectorised comparison finds them). Otherwise bytes are counted in pairs (as
    uint16, 65536 bins, half the elements) and both bytes of each pair are folded back to 256 bins.
    """
    flat = np.ascontiguousarray(values).ravel()
    if flat.size == 0:
        return np.zeros(256, np.int64)
    boundaries = np.flatnonzero(flat[1:] != flat[:-1])
    if len(boundaries) * 16 < flat.size:
        starts = np.concatenate(([0], boundaries + 1))
        lengths = np.diff(np.append(starts, flat.size))
        return np.bincount(flat[starts], weights=lengths, minlength=256).astype(np.int64)
    odd = flat.size % 2
    pairs = np.bincount(flat[: flat.size - odd].view(np.uint16), minlength=65536).reshape(256, 256)
    hist = pairs.sum(0) + pairs.sum(1)  # the two bytes of each pair, whatever the byte order
    if odd:
        hist[flat[-1]] += 1
    return hist


def label_histogram(
    path: str | os.PathLike,
    num_classes: int,
    reduce_zero: bool = False,
    ignore_index: int = 255,
    label_dtype: np.dtype | None = None,
    label_dtype_hint: str = "",
) -> tuple[np.ndarray, dict[int, int]]:
    """Pixel count of each class in one label file, and {bad value: pixels} for values outside the range.

    The histogram is taken over the raw file values and then remapped (reduce_zero_label shifts it by one),
    so no per-pixel conversion is needed. ``label_dtype``: the pixel type the file must have (a
    ``label_dtype`` DataError otherwise), as a dataset's ``LABEL_DTYPE``.
    """
    label = read_label(path, writable=False)
    if label_dtype is not None:
        check_label_dtype(label, path, label_dtype, label_dtype_hint)
    flat = label.ravel()
    if flat.dtype != np.uint8:
        flat = flat.astype(np.int64)
        if flat.size and flat.min() < 0:
            neg = int(flat.min())
            return np.zeros(num_classes, np.int64), {neg: int((flat == neg).sum())}
    raw = uint8_histogram(flat) if flat.dtype == np.uint8 else np.bincount(flat, minlength=256)
    values = np.flatnonzero(raw)
    mapped = reduce_zero_label(values, ignore_index) if reduce_zero else values  # on the values, not the pixels
    hist = np.zeros(num_classes, np.int64)
    bad: dict[int, int] = {}
    for v, m in zip(values.tolist(), mapped.tolist()):
        if 0 <= m < num_classes:
            hist[m] += raw[v]
        elif m != ignore_index:  # keyed by the value in the file, which is what the user can look for
            bad[v] = bad.get(v, 0) + int(raw[v])
    return hist, bad


def _work(args: tuple[str, int, bool, int, np.dtype | None, str]) -> tuple[str, np.ndarray | None, dict[int, int],
                                                                          str | None]:
    path, num_classes, reduce_zero, ignore_index, label_dtype, hint = args
    try:
        hist, bad = label_histogram(path, num_classes, reduce_zero, ignore_index, label_dtype, hint)
    except RRSegError as e:
        return path, None, {}, str(e)
    return path, hist, bad, None


def compute_stats(
    label_files: Sequence[str | os.PathLike],
    num_classes: int,
    reduce_zero_label: bool = False,
    ignore_index: int = 255,
    workers: int | None = None,
    on_bad_label: str = "error",
    progress: bool = False,
    label_dtype: np.dtype | None = None,
    label_dtype_hint: str = "",
) -> tuple[ClassCounts, dict]:
    """Counts over ``label_files``: images containing each class, and pixels of each class.

    A value outside [0, num_classes) that is not ``ignore_index`` raises an RRSegError naming the file
    and the value, or with ``on_bad_label="skip"`` the file is left out and listed in the returned info.
    ``ignore_index`` may be above 255 (ADE20K-Full's 65535). ``label_dtype``: every file must have this pixel
    type (a dataset's ``LABEL_DTYPE``); a file of another type is a bad label like an unreadable one.
    """
    if on_bad_label not in ("error", "skip"):
        raise ValueError(f"on_bad_label must be 'error' or 'skip', got {on_bad_label!r}")
    if not label_files:
        raise RRSegError("no label files to count")
    dtype = None if label_dtype is None else np.dtype(label_dtype)
    items = [(str(p), num_classes, reduce_zero_label, ignore_index, dtype, label_dtype_hint) for p in label_files]
    image_counts = np.zeros(num_classes, np.int64)
    pixel_counts = np.zeros(num_classes, np.int64)
    skipped: list[dict] = []
    counted = 0

    for path, hist, bad, error in parallel_map(_work, items, workers, progress=progress,
                                               description="counting labels"):
        if error is not None or bad:
            if on_bad_label == "error":
                if error is not None:
                    raise RRSegError(error)
                value = min(bad)
                shift = " (minus 1 with reduce_zero_label)" if reduce_zero_label else ""
                raise RRSegError(
                    f"{path}: label value {value}{shift} ({bad[value]} pixels) is outside [0, {num_classes}) "
                    f"and is not the ignore value {ignore_index}"
                )
            skipped.append({"path": path, "error": error, "bad_values": bad})
            continue
        image_counts += hist > 0
        pixel_counts += hist
        counted += 1
    info = {
        "num_images": counted,
        "skipped": skipped,
        "options": {
            "num_classes": num_classes,
            "reduce_zero_label": reduce_zero_label,
            "ignore_index": ignore_index,
            "on_bad_label": on_bad_label,
        },
    }
    return ClassCounts(image_counts, pixel_counts, counted), info


def stats_files(label_dir: str | os.PathLike, suffix: str = ".png") -> list[Path]:
    """The label files ``rrseg stats`` counts: every ``*suffix`` under ``label_dir``, recursively (e.g. ``.tif``
    for ADE20K-Full's ``annotations_detectron2``)."""
    files = find_files(label_dir, suffix)
    if not files:
        raise RRSegError(f"{label_dir}: no *{suffix} label files found")
    return files


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation with average ranks for ties; NaN when either side is constant."""
    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for v in np.unique(x):
            tie = x == v
            r[tie] = r[tie].mean()
        return r
    ra, rb = ranks(np.asarray(a, np.float64)), ranks(np.asarray(b, np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def plot_class_counts(
    counts: ClassCounts,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> float:
    """Per-class image count against pixel count, log-log, written atomically as PNG; returns the Spearman
    correlation of the two counts over the classes present (drawn; absent classes are counted in a note).

    Classes are named next to their point where the name fits: rarest and most frequent first (the ends of
    the tail), then the others, each name kept only if it overlaps no name already placed and stays inside
    the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rrseg.metrics.report import save_figure

    if counts.pixel_counts is None:
        raise RRSegError("the count plot needs pixel counts, but these class counts hold image counts only")
    img = counts.image_counts.astype(np.float64)
    pix = counts.pixel_counts.astype(np.float64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(counts.num_classes)]
    if len(names) != counts.num_classes:
        raise RRSegError(f"{len(names)} class names for {counts.num_classes} classes")
    present = np.flatnonzero((img > 0) & (pix > 0))
    rho = spearman(img[present], pix[present]) if present.size >= 2 else float("nan")

    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    ax.scatter(pix[present], img[present], s=14, alpha=0.8, color="tab:blue", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pixel count (labelled pixels of the class)")
    ax.set_ylabel("image count (images containing the class)")
    rho_s = "n/a" if math.isnan(rho) else f"{rho:.2f}"
    ax.set_title(title or f"{counts.num_classes} classes: image count against pixel count, "
                 f"Spearman \u03c1 = {rho_s}", fontsize=10)
    absent = counts.num_classes - present.size
    if absent:
        ax.text(0.01, 0.01, f"{absent} classes absent (not drawn)", transform=ax.transAxes, fontsize=7,
                color="0.3")
    ax.grid(alpha=0.3, which="both", linewidth=0.5)
    fig.tight_layout()
    _name_points(fig, ax, present, pix, img, names)
    save_figure(fig, path)
    return rho


def _name_points(fig, ax, present: np.ndarray, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    """Label points with their class name where the label fits (no overlap, inside the axes)."""
    if present.size == 0:
        return
    order = present[np.argsort(y[present], kind="stable")]
    # the ends of the tail first (rarest, most frequent, alternating), then the middle
    ends = [int(c) for pair in zip(order, order[::-1]) for c in pair]
    seen: set[int] = set()
    priority = [c for c in ends if not (c in seen or seen.add(c))]
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    placed = [ax.title.get_window_extent(renderer)]
    for c in priority:
        text = ax.annotate(names[c], (x[c], y[c]), xytext=(3, 2), textcoords="offset points", fontsize=6,
                           color="0.15", zorder=4)
        box = text.get_window_extent(renderer).expanded(1.05, 1.15)
        inside = (box.x0 >= axes_box.x0 and box.x1 <= axes_box.x1 and box.y0 >= axes_box.y0
                  and box.y1 <= axes_box.y1)
        if not inside or any(box.overlaps(other) for other in placed):
            text.remove()
        else:
            placed.append(box)
