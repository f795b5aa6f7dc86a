"""A confusion-matrix accumulator and the usual segmentation figures computed from it.

Semantics follow mmsegmentation: figures are dataset-level sums (not means of per-image figures); pixels
labelled ``ignore_index`` are left out; a class whose union (or, for accuracy, whose label area) is zero
gets NaN and is left out of the means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ConfusionMatrix", "SegMetrics"]


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a.astype(np.float64) / b.astype(np.float64)
    out[b == 0] = np.nan
    return out


@dataclass(frozen=True)
class SegMetrics:
    """Figures from a confusion matrix ``mat[label, pred]`` (int64, [C, C])."""

    mat: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.mat.shape[0])

    @property
    def tp(self) -> np.ndarray:
        return np.diag(self.mat).copy()

    @property
    def label_area(self) -> np.ndarray:
        return self.mat.sum(1)

    @property
    def pred_area(self) -> np.ndarray:
        return self.mat.sum(0)

    @property
    def fp(self) -> np.ndarray:
        return self.pred_area - self.tp

    @property
    def fn(self) -> np.ndarray:
        return self.label_area - self.tp

    @property
    def iou(self) -> np.ndarray:
        return _div(self.tp, self.label_area + self.pred_area - self.tp)

    @property
    def acc(self) -> np.ndarray:
        """Per-class accuracy (recall), as mmsegmentation's ``Acc``."""
        return _div(self.tp, self.label_area)

    @property
    def precision(self) -> np.ndarray:
        return _div(self.tp, self.pred_area)

    @property
    def dice(self) -> np.ndarray:
        return _div(2 * self.tp, self.label_area + self.pred_area)

    @property
    def fp_rate(self) -> np.ndarray:
        """False-positive rate FP / (FP + TN): share of the pixels of other classes predicted as this one."""
        return _div(self.fp, self.mat.sum() - self.label_area)

    @property
    def fdr(self) -> np.ndarray:
        """False-discovery rate FP / (TP + FP) = 1 - precision: share of this class's predictions that are wrong."""
        return _div(self.fp, self.pred_area)

    @property
    def aAcc(self) -> float:
        total = self.mat.sum()
        return float(self.tp.sum() / total) if total else float("nan")

    @property
    def mIoU(self) -> float:
        return _nanmean(self.iou)

    @property
    def mAcc(self) -> float:
        return _nanmean(self.acc)

    @property
    def mDice(self) -> float:
        return _nanmean(self.dice)

    def summary(self, classes: np.ndarray | list[int] | None = None) -> dict[str, float]:
        """Means over ``classes`` (all by default): mIoU, mAcc, mDice, mPrecision, mFPR, mFDR."""
        idx = np.arange(self.num_classes) if classes is None else np.asarray(classes, dtype=np.int64)
        return {
            "mIoU": _nanmean(self.iou[idx]),
            "mAcc": _nanmean(self.acc[idx]),
            "mDice": _nanmean(self.dice[idx]),
            "mPrecision": _nanmean(self.precision[idx]),
            "mFPR": _nanmean(self.fp_rate[idx]),
            "mFDR": _nanmean(self.fdr[idx]),
        }

    def per_class(self) -> dict[str, list]:
        """Per-class figures as JSON-ready lists (NaN becomes None)."""

        def clean(a: np.ndarray) -> list:
            return [None if (isinstance(v, float) and np.isnan(v)) else v for v in a.tolist()]

        return {
            "iou": clean(self.iou),
            "acc": clean(self.acc),
            "precision": clean(self.precision),
            "dice": clean(self.dice),
            "fp_rate": clean(self.fp_rate),
            "fdr": clean(self.fdr),
            "tp": self.tp.tolist(),
            "fp": self.fp.tolist(),
            "fn": self.fn.tolist(),
            "label_pixels": self.label_area.tolist(),
        }


class ConfusionMatrix:
    """Accumulates ``mat[label, pred]`` pixel counts (int64) over batches; mergeable across processes.

    ``update`` takes predicted class indices and labels of the same shape ([H, W] or [B, H, W]); pixels
    whose label equals ``ignore_index`` are skipped. ``compute`` gives a :class:`SegMetrics`.

    ``validate_args`` chooses how values outside ``[0, num_classes)`` on labelled pixels are caught. True:
    a synchronous check that raises a ``ValueError`` naming the label or the prediction. False: no host
    synchronisation at all (a GPU evaluation loop keeps its queue full); one asynchronous device-side
    assertion guards the range instead, and a bad value stops the process with a device error, not a
    ``ValueError``. None (default): True on the CPU, where the check costs nothing, False elsewhere; pass
    True to debug bad labels on a GPU.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: torch.device | str = "cpu",
        validate_args: bool | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.validate_args = self.mat.device.type == "cpu" if validate_args is None else bool(validate_args)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, label: Tensor) -> None:
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(label.shape)}")
        label = label.to(self.mat.device).reshape(-1)
        pred = pred.to(self.mat.device).reshape(-1)
        if label.numel() == 0:  # a static shape: no synchronisation
            return
        if self.validate_args:
            self._update_checked(pred, label)
        else:
            self._update_async(pred, label)

    def _update_checked(self, pred: Tensor, label: Tensor) -> None:
        """Drop ignored pixels, check the range on the host (clear error), bincount."""
        c = self.num_classes
        valid = label != self.ignore_index
        if not bool(valid.all()):
            label, pred = label[valid], pred[valid]
        if label.numel() == 0:
            return
        # int32 codes halve the memory traffic of the bincount; C*C < 2**31 always holds here.
        code_dtype = torch.int32 if c * c < 2**31 else torch.int64
        label = label.to(code_dtype)
        pred = pred.to(code_dtype)
        lo = min(int(label.min()), int(pred.min()))
        hi = max(int(label.max()), int(pred.max()))
        if lo < 0 or hi >= c:
            what = "label" if int(label.min()) < 0 or int(label.max()) >= c else "prediction"
            raise ValueError(f"{what} value outside [0, {c}) and not ignore_index={self.ignore_index}")
        self.mat += torch.bincount(label * c + pred, minlength=c * c).view(c, c)

    def _update_async(self, pred: Tensor, label: Tensor) -> None:
        """Static shapes only: ignored pixels go to one spare histogram bin instead of being filtered out
        (a boolean index needs the host to know how many remain), and the histogram is a fixed-size
        ``index_add_`` (``bincount`` reads its input's maximum on the host on CUDA)."""
        c = self.num_classes
        valid = label != self.ignore_index
        code_dtype = torch.int32 if c * c + 1 < 2**31 else torch.int64
        label = label.to(code_dtype)
        pred = pred.to(code_dtype)
        in_range = (label >= 0) & (label < c) & (pred >= 0) & (pred < c)
        torch._assert_async(
            (in_range | ~valid).all(),
            f"ConfusionMatrix.update: a label or prediction outside [0, {c}) on a pixel that is not "
            f"ignore_index={self.ignore_index} (ConfusionMatrix(validate_args=True) names which)",
        )
        # out-of-range pixels also go to the spare bin, so a bad value can never index outside the histogram
        code = torch.where(valid & in_range, label * c + pred, c * c)
        hist = torch.zeros(c * c + 1, dtype=torch.int64, device=self.mat.device)
        hist.index_add_(0, code, torch.ones((), dtype=torch.int64, device=hist.device).expand(code.numel()))
        self.mat += hist[: c * c].view(c, c)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all processes of the default group (no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> SegMetrics:
        return SegMetrics(self.mat.detach().cpu().numpy().copy())
