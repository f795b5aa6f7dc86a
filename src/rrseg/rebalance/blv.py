"""BLV: Balancing Logit Variation (Wang et al., CVPR 2023).

During training each pixel's logits get a positive random perturbation |N(0, sigma)| clipped to [0, 1],
scaled per class by its log-frequency gap log(N) - log(n_c), normalised to a maximum of 1: rare classes get
the largest variation, which widens their decision regions. As released, frequencies are pixel counts and
sigma = 4. Inference is unchanged. Averaging (``avg_non_ignore``) as the other pixel losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from rrseg.ranges import ranged
from rrseg.rebalance.base import PixelLossOptions
from rrseg.rebalance.counts import ClassCounts, CountsLike
from rrseg.rebalance.pixel import PixelLoss
from rrseg.types import SegOutput

__all__ = ["BLVLoss", "BLVOptions"]


class BLVLoss(PixelLoss):
    def __init__(
        self,
        counts: CountsLike | ClassCounts,
        num_classes: int,
        name: str = "loss_blv",
        loss_weight: float = 1.0,
        sigma: float = 4.0,
        kind: str = "pixel",
        source: str = "logits",
        ignore_index: int = 255,
        avg_non_ignore: bool = True,
    ) -> None:
        super().__init__(name, loss_weight, source, ignore_index, avg_non_ignore)
        f = np.maximum(ClassCounts.load(counts, num_classes).frequencies(kind).astype(np.float64), 1.0)
        gap = np.log(f.sum()) - np.log(f)
        self.register_buffer("scale", torch.from_numpy(gap / gap.max()).float())
        self.sigma = float(sigma)

    def forward(self, out: SegOutput, labels: Tensor) -> Tensor:
        logits = self._logits(out, labels)
        # (the noise is drawn also for a batch with every pixel ignored, whose loss is 0: no host sync decides)
        noise = (torch.randn_like(logits) * self.sigma).clamp_(-1.0, 1.0).abs_()
        perturbed = logits + noise * self.scale.view(1, -1, 1, 1)
        return self._labelled_or_zero(self.loss_weight * self._ce(perturbed, labels), labels)


@dataclass
class BLVOptions(PixelLossOptions):
    """blv: CE on logits perturbed by |N(0, sigma)| clipped to [0, 1], scaled per class (pixel frequencies)."""

    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "sigma": "the perturbation's spread: |N(0, sigma)| clipped to [0, 1], scaled per class by its log-frequency "
                 "gap (largest for the rarest class)",
    }
    type: str = "blv"
    sigma: float = ranged(4.0, ">= 0")

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> BLVLoss:
        return BLVLoss(counts, num_classes, "loss_blv", self.loss_weight, sigma=self.sigma, ignore_index=ignore_index,
                       avg_non_ignore=self.avg_non_ignore)
