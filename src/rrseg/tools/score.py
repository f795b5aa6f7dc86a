"""Score prediction index PNGs against ground-truth label files (PNG, or TIFF as ADE20K-Full's), matched by file
stem, the way the paper reports: dataset-level confusion matrix, per-class figures, frequency groups."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rrseg.data.labels import check_label_dtype, find_files, read_label, reduce_zero_label
from rrseg.errors import RRSegError
from rrseg.metrics.confusion import ConfusionMatrix, SegMetrics
from rrseg.parallel import parallel_map

__all__ = ["GT_SUFFIXES", "match_pairs", "score_folders"]

# Ground-truth label files in a folder: index PNGs, or integer TIFFs (ADE20K-Full's annotations_detectron2).
GT_SUFFIXES = (".png", ".tif", ".tiff")


def _index(root: str | os.PathLike, what: str, strip: Sequence[str], suffixes: Sequence[str] = (".png",),
           files: Sequence[Path] | None = None) -> dict[str, Path]:
    if files is None:
        files = sorted({f for suffix in suffixes for f in find_files(root, suffix)})
    if not files:
        kinds = "/".join(s.lstrip(".").upper() for s in suffixes)
        raise RRSegError(f"{root}: no {what} {kinds} files found")
    out: dict[str, Path] = {}
    for f in files:
        stem = f.stem
        for s in sorted(strip, key=len, reverse=True):  # longest ending first (_gtFine_labelTrainIds)
            if s and stem.endswith(s):
                stem = stem[: -len(s)]
                break
        if stem in out:
            raise RRSegError(f"{root}: two {what} files with stem {stem!r}: {out[stem]} and {f}")
        out[stem] = f
    return out


def _listing(items: list[str], limit: int = 8) -> str:
    head = ", ".join(items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


def match_pairs(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    gt_suffixes: Sequence[str] = (),
    gt_files: Sequence[str | os.PathLike] | None = None,
) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) pairs by stem; a ground truth without prediction is an error. The ground
    truth is every PNG / TIFF under ``gt_dir``, or ``gt_files`` (a dataset's label files) when given."""
    preds = _index(pred_dir, "prediction", ())
    files = None if gt_files is None else [Path(f) for f in gt_files]
    gts = _index(gt_dir, "ground-truth", gt_suffixes, GT_SUFFIXES, files)
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise RRSegError(f"{pred_dir}: no prediction for {len(missing)} of {len(gts)} ground-truth files: "
                         f"{_listing(missing)}")
    return [(preds[s], gts[s]) for s in sorted(gts)]


def _score_pair(args: tuple) -> tuple[np.ndarray | None, str | None]:
    pred_path, gt_path, num_classes, reduce_zero, ignore_index, gt_dtype, gt_hint = args
    try:
        pred = read_label(pred_path)
        gt = read_label(gt_path)
        if gt_dtype is not None:
            check_label_dtype(gt, gt_path, gt_dtype, gt_hint)
    except RRSegError as e:
        return None, str(e)
    if pred.shape != gt.shape:
        (ph, pw), (gh, gw) = pred.shape, gt.shape
        return None, f"{pred_path} is {ph}x{pw} but {gt_path} is {gh}x{gw}"
    if reduce_zero:
        gt = reduce_zero_label(gt, ignore_index)
    cm = ConfusionMatrix(num_classes, ignore_index)
    try:
        cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
    except ValueError as e:
        return None, f"{Path(pred_path).name}: {e}"
    return cm.mat.numpy(), None


def score_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    num_classes: int,
    reduce_zero: bool = False,
    ignore_index: int = 255,
    workers: int | None = None,
    gt_suffixes: Sequence[str] = ("_labelTrainIds", "_gtFine_labelTrainIds"),
    gt_files: Sequence[str | os.PathLike] | None = None,
    gt_dtype: np.dtype | None = None,
    gt_dtype_hint: str = "",
) -> tuple[SegMetrics, int]:
    """The confusion-matrix metrics of all pairs and the number of pairs scored. ``ignore_index`` may be above
    255 (ADE20K-Full's 65535); ``gt_files`` / ``gt_dtype``: a dataset's label files and pixel type."""
    pairs = match_pairs(pred_dir, gt_dir, gt_suffixes, gt_files)
    items = [(str(p), str(g), num_classes, reduce_zero, ignore_index, gt_dtype, gt_dtype_hint) for p, g in pairs]
    total = np.zeros((num_classes, num_classes), np.int64)
    problems: list[str] = []
    for mat, problem in parallel_map(_score_pair, items, workers):
        if problem is not None:
            problems.append(problem)
        else:
            total += mat
    if problems:
        raise RRSegError(f"{len(problems)} unusable prediction/ground-truth pairs: {_listing(problems, 5)}")
    return SegMetrics(total), len(pairs)
