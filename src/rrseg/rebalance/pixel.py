"""Pixel-level loss terms: cross-entropy (plain, auxiliary, class-weighted), focal, balanced softmax.

All read ``out.logits`` (or ``out.aux_logits`` with ``source="aux_logits"``) and resize them bilinearly to the
label size as mmsegmentation does. Averaging (``avg_non_ignore``, mmsegmentation's name for the switch): the sum
of the per-pixel losses (0 at ignored pixels; class-weighted where there are class weights) divided by the
number of labelled pixels (``True``, mmseg >= 0.23, PyTorch's mean for unweighted losses) or by the number of
all pixels, ignored ones included (``False``, mmseg 0.17, which the released RR configs ran). Class-weighted CE
can instead divide by the sum of the labelled pixels' class weights (``divide_by_weight_sum``, PyTorch's rule
for ``F.cross_entropy(weight=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rrseg.ranges import ranged
from rrseg.rebalance.base import LossTerm, PixelLossOptions, resize_logits
from rrseg.rebalance.counts import ClassCounts, CountsLike
from rrseg.types import SegOutput

__all__ = [
    "BalancedSoftmaxLoss",
    "BalancedSoftmaxOptions",
    "CrossEntropyLoss",
    "CrossEntropyOptions",
    "FocalLoss",
    "FocalOptions",
    "PixelLoss",
    "WeightedCEOptions",
    "class_last",
    "class_weights",
]


def class_weights(counts: ClassCounts, scheme: str, kind: str = "pixel") -> Tensor:
    """Per-class weights from frequencies f (zero counts taken as 1).

    ``log``: w = 1 + log(max f / f), the pixel-reweighting baseline of the RR paper.
    ``inv_sqrt``: w = 1 / sqrt(f), scaled to mean 1.
    """
    f = np.maximum(counts.frequencies(kind).astype(np.float64), 1.0)
    if scheme == "log":
        w = 1.0 + np.log(f.max() / f)
    elif scheme == "inv_sqrt":
        w = 1.0 / np.sqrt(f)
        w = w / w.mean()
    else:
        raise ValueError(f"class weight scheme must be 'log' or 'inv_sqrt', got {scheme!r}")
    return torch.from_numpy(w).float()


def class_last(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """[B, C, H, W] logits in channels_last memory format and [B, H, W] labels -> [B*H*W, C] pixel rows (a view)
    and [B*H*W] labels: the same cross-entropy, softmax over contiguous memory. Other logits pass unchanged."""
    if logits.dim() == 4 and logits.is_contiguous(memory_format=torch.channels_last):
        return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]), labels.reshape(-1)
    return logits, labels


class PixelLoss(LossTerm):
    """The base of the pixel losses: reads ``out.logits`` (or ``out.aux_logits``, ``source``) resized to the
    labels, leaves out ``ignore_index`` and averages as ``avg_non_ignore`` says (the module docstring)."""

    def __init__(self, name: str, loss_weight: float, source: str, ignore_index: int,
                 avg_non_ignore: bool = True) -> None:
        super().__init__(name, loss_weight)
        if source not in ("logits", "aux_logits"):
            raise ValueError(f"source must be 'logits' or 'aux_logits', got {source!r}")
        self.source = source
        self.ignore_index = ignore_index
        self.avg_non_ignore = bool(avg_non_ignore)

    def _average(self, losses: Tensor, labels: Tensor) -> Tensor:
        """Per-pixel losses (0 at ignored pixels) -> their sum over labelled pixels or, as mmseg 0.17's
        ``weight_reduce_loss`` with reduction "mean", their mean over every pixel."""
        if self.avg_non_ignore:  # (a count of 0 comes with a sum of 0: 0 / 1, no 0 / 0 in the backward pass)
            return losses.sum() / (labels != self.ignore_index).sum().clamp(min=1)
        return losses.mean()

    def _labelled_or_zero(self, loss: Tensor, labels: Tensor) -> Tensor:
        """``loss``, or 0 when every pixel is ignored (PyTorch's mean would be 0 / 0), decided on the device:
        no host synchronisation. The 0 keeps the graph (a zero gradient); the NaN of the unselected branch
        never reaches a gradient (``torch.where`` sends it 0)."""
        return torch.where((labels != self.ignore_index).any(), loss, 0.0)

    def _ce(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Unweighted pixel CE, averaged as above (PyTorch's fused mean where that is the same number)."""
        logits, labels = class_last(logits, labels.long())
        if self.avg_non_ignore:
            return F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        return self._average(F.cross_entropy(logits, labels, reduction="none", ignore_index=self.ignore_index),
                             labels)

    def _logits(self, out: SegOutput, labels: Tensor) -> Tensor:
        """``out.logits`` (or ``source``) resized to the labels, in float32; on the CPU in channels_last memory
        format, which :func:`class_last` turns into pixel rows without a copy."""
        logits = getattr(out, self.source)
        if logits is None:
            raise ValueError(f"loss term {self.name!r} needs model output {self.source!r}, which is None")
        if logits.device.type == "cpu" and logits.dim() == 4:
            # the same bilinear weights, resized by the CPU's channels_last kernel: ~5x faster than NCHW's at the
            # demo's sizes, and with the class dimension last the softmax reads contiguous rows (the demo's
            # training step 0.88x; benchmarks/results/pixel_loss_cpu.json). CUDA keeps NCHW: its measured path
            logits = logits.contiguous(memory_format=torch.channels_last)
        return resize_logits(logits, labels).float()


class CrossEntropyLoss(PixelLoss):
    """Pixel cross-entropy, optionally class-weighted (``weight`` [C]).

    With ``weight``, each pixel's loss is multiplied by its class weight; the sum is divided by a pixel count
    (``avg_non_ignore``, as mmseg) or, with ``divide_by_weight_sum=True``, by the sum of the labelled pixels'
    weights (PyTorch's ``F.cross_entropy(weight=...)`` mean).
    """

    def __init__(
        self,
        name: str = "loss_ce",
        loss_weight: float = 1.0,
        source: str = "logits",
        weight: Tensor | None = None,
        ignore_index: int = 255,
        avg_non_ignore: bool = True,
        divide_by_weight_sum: bool = False,
    ) -> None:
        super().__init__(name, loss_weight, source, ignore_index, avg_non_ignore)
        if divide_by_weight_sum and not avg_non_ignore:
            raise ValueError("divide_by_weight_sum=True averages over the labelled pixels' weights; "
                             "it needs avg_non_ignore=True")
        self.divide_by_weight_sum = bool(divide_by_weight_sum)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight).float())

    def forward(self, out: SegOutput, labels: Tensor) -> Tensor:
        logits, labels = class_last(self._logits(out, labels), labels.long())
        if self.divide_by_weight_sum or (self.weight is None and self.avg_non_ignore):
            # PyTorch's own mean: over labelled pixels, or over their weights (the same without weights)
            loss = F.cross_entropy(logits, labels, weight=self.weight, ignore_index=self.ignore_index)
        else:
            loss = self._average(F.cross_entropy(logits, labels, weight=self.weight, reduction="none",
                                                 ignore_index=self.ignore_index), labels)
        return self._labelled_or_zero(self.loss_weight * loss, labels)


@dataclass
class CrossEntropyOptions(PixelLossOptions):
    """ce: plain pixel cross-entropy."""

    type: str = "ce"

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> CrossEntropyLoss:
        return CrossEntropyLoss("loss_ce", self.loss_weight, ignore_index=ignore_index,
                                avg_non_ignore=self.avg_non_ignore)


@dataclass
class WeightedCEOptions(PixelLossOptions):
    """weighted_ce: cross-entropy with per-class weights from the pixel frequencies (:func:`class_weights`)."""

    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "weight_scheme": "the class weights from the pixel frequencies f: log: w = 1 + log(max f / f); inv_sqrt: "
                         "1 / sqrt(f), mean 1",
        "divide_by_weight_sum": "divide by the sum of the labelled pixels' class weights (PyTorch's rule); needs "
                                "avg_non_ignore",
    }
    type: str = "weighted_ce"
    weight_scheme: Literal["log", "inv_sqrt"] = "log"
    divide_by_weight_sum: bool = False

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> CrossEntropyLoss:
        return CrossEntropyLoss("loss_wce", self.loss_weight, weight=class_weights(counts, self.weight_scheme),
                                divide_by_weight_sum=self.divide_by_weight_sum, ignore_index=ignore_index,
                                avg_non_ignore=self.avg_non_ignore)


class FocalLoss(PixelLoss):
    """Focal loss (Lin et al. 2017): CE scaled by (1 - p_t)^gamma, averaged as ``avg_non_ignore`` says."""

    def __init__(
        self,
        name: str = "loss_focal",
        loss_weight: float = 1.0,
        gamma: float = 2.0,
        source: str = "logits",
        ignore_index: int = 255,
        avg_non_ignore: bool = True,
    ) -> None:
        super().__init__(name, loss_weight, source, ignore_index, avg_non_ignore)
        self.gamma = float(gamma)

    def forward(self, out: SegOutput, labels: Tensor) -> Tensor:
        logits, labels = class_last(self._logits(out, labels), labels.long())
        valid = labels != self.ignore_index
        logp = F.log_softmax(logits, dim=1)
        logp_t = logp.gather(1, labels.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
        # ignored pixels weigh 0 (a mask, not a boolean index, which would read their number back to the host)
        losses = -((1.0 - logp_t.exp()) ** self.gamma) * logp_t * valid
        return self._labelled_or_zero(self.loss_weight * self._average(losses, labels), labels)


@dataclass
class FocalOptions(PixelLossOptions):
    """focal: CE scaled by (1 - p_t)^gamma."""

    OPTIONS_HELP: ClassVar[dict[str, str]] = {"gamma": "the focusing power: CE x (1 - p_t)^gamma (0: plain CE)"}
    type: str = "focal"
    gamma: float = ranged(2.0, ">= 0")

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> FocalLoss:
        return FocalLoss("loss_focal", self.loss_weight, gamma=self.gamma, ignore_index=ignore_index,
                         avg_non_ignore=self.avg_non_ignore)


class BalancedSoftmaxLoss(PixelLoss):
    """Logit adjustment / balanced softmax at pixel level: CE on logits + log prior (training only)."""

    def __init__(
        self,
        counts: CountsLike | ClassCounts,
        num_classes: int,
        name: str = "loss_bsm",
        loss_weight: float = 1.0,
        prior: str = "pixel",
        tau: float = 1.0,
        source: str = "logits",
        ignore_index: int = 255,
        avg_non_ignore: bool = True,
    ) -> None:
        super().__init__(name, loss_weight, source, ignore_index, avg_non_ignore)
        cc = ClassCounts.load(counts, num_classes)
        self.register_buffer("log_prior", tau * cc.log_prior(prior))

    def forward(self, out: SegOutput, labels: Tensor) -> Tensor:
        logits = self._logits(out, labels)
        adjusted = logits + self.log_prior.view(1, -1, 1, 1)
        return self._labelled_or_zero(self.loss_weight * self._ce(adjusted, labels), labels)


@dataclass
class BalancedSoftmaxOptions(PixelLossOptions):
    """balanced_softmax: CE on logits + tau * log prior, the prior from pixel or region (image) counts."""

    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "prior": "the counts of the log prior: pixel or region (image) counts",
        "tau": "the prior's scale: CE on logits + tau x log prior",
    }
    type: str = "balanced_softmax"
    prior: Literal["pixel", "region"] = "pixel"
    tau: float = ranged(1.0, ">= 0")

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> BalancedSoftmaxLoss:
        return BalancedSoftmaxLoss(counts, num_classes, "loss_bsm", self.loss_weight, prior=self.prior, tau=self.tau,
                                   ignore_index=ignore_index, avg_non_ignore=self.avg_non_ignore)
