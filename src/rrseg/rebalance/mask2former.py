"""Mask2Former's set criterion as a loss term (``loss.pixel.type: mask2former``), the semantic targets it reads,
and the semantic inference that turns a mask classifier's output back into per-class scores.

The targets come from the label map as the release's ``MaskFormerSemanticDatasetMapper`` builds them: per image,
one binary mask per class present, sorted by class id; ignored pixels belong to no mask (so they are background
to every matched mask, as in the release, whose padded and ignored pixels are 0 in all masks).

The criterion is Hugging Face transformers' ``Mask2FormerLoss`` (its port of the release's ``SetCriterion`` and
``HungarianMatcher``): Hungarian matching of queries to masks on a cost of class probability, sigmoid BCE and
dice over ``num_points`` random points; the matched masks' BCE and dice over ``num_points`` points chosen by
uncertainty (``oversample_ratio`` x ``num_points`` candidates, ``importance_sample_ratio`` of them the most
uncertain); CE over the classes with "no object" weighted ``no_object_weight`` for the unmatched queries; each
earlier decoder layer matched and supervised the same way (deep supervision). rrseg calls HF's matcher and its
``loss_masks`` / ``loss_labels`` itself, so that the number of masks that normalises the mask losses is summed
over the processes with torch.distributed as the release does (HF's reduces only under accelerate), once per step.
The logits are read in float32 with autocast off (the release's matcher runs so too).

The term returns its parts, ``loss_cls`` (x ``class_weight``), ``loss_mask`` (x ``mask_weight``) and ``loss_dice``
(x ``dice_weight``), each summed over the decoder layers and scaled by ``loss_weight``: the trainer logs each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from rrseg.errors import RRSegError
from rrseg.ranges import ranged
from rrseg.rebalance.base import LossTerm, PixelLossOptions
from rrseg.types import MaskOutput, SegOutput

if TYPE_CHECKING:
    from rrseg.rebalance.counts import ClassCounts

__all__ = ["Mask2FormerCriterion", "Mask2FormerLossOptions", "semantic_targets"]


def semantic_targets(labels: Tensor, ignore_index: int, num_classes: int | None = None
                     ) -> tuple[list[Tensor], list[Tensor]]:
    """Per image of ``labels`` [B, H, W]: the classes present (int64 [K], ascending, ``ignore_index`` left out) and
    their binary masks (float [K, H, W], mask k is ``label == classes[k]``). A class id >= ``num_classes`` (when
    given) is an RRSegError."""
    classes, masks = [], []
    for label in labels:
        present = torch.unique(label)  # sorted
        present = present[present != ignore_index]
        if num_classes is not None and present.numel() and int(present[-1]) >= num_classes:
            raise RRSegError(f"label {int(present[-1])} is not a class of this {num_classes}-class model (nor the "
                             f"ignore index {ignore_index})")
        masks.append((label.unsqueeze(0) == present.view(-1, 1, 1)).float())
        classes.append(present.long())
    return classes, masks


def _num_masks(classes: list[Tensor], device: torch.device) -> Tensor:
    """The release's normaliser: the masks of this batch, averaged over the processes, at least 1."""
    n = torch.tensor(float(sum(len(c) for c in classes)), device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(n)
        n = n / torch.distributed.get_world_size()
    return n.clamp(min=1.0)


class Mask2FormerCriterion(LossTerm):
    """Mask2Former's set criterion on a :class:`~rrseg.types.MaskOutput` (see the module docstring)."""

    PARTS = (("loss_cls", "loss_cross_entropy"), ("loss_mask", "loss_mask"), ("loss_dice", "loss_dice"))

    def __init__(
        self,
        num_classes: int,
        *,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = True,
        ignore_index: int = 255,
        loss_weight: float = 1.0,
        name: str = "loss_mask2former",
    ) -> None:
        super().__init__(name, loss_weight)
        try:
            import scipy.optimize  # noqa: F401  (HF's matcher: linear_sum_assignment)
            from transformers.models.mask2former.modeling_mask2former import Mask2FormerConfig, Mask2FormerLoss
        except ImportError as e:
            raise RRSegError(f"loss.pixel.type mask2former needs transformers and scipy ({e}): "
                             "pip install 'rrseg[hf]'") from None
        config = Mask2FormerConfig(
            num_labels=num_classes, no_object_weight=no_object_weight, class_weight=class_weight,
            mask_weight=mask_weight, dice_weight=dice_weight, train_num_points=num_points,
            oversample_ratio=oversample_ratio, importance_sample_ratio=importance_sample_ratio,
        )
        self.criterion = Mask2FormerLoss(config, weight_dict={})  # weighted here, per part
        self.weights = {"loss_cls": float(class_weight), "loss_mask": float(mask_weight),
                        "loss_dice": float(dice_weight)}
        self.num_classes = int(num_classes)
        self.deep_supervision = bool(deep_supervision)
        self.ignore_index = int(ignore_index)

    def forward(self, out: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        if not isinstance(out, MaskOutput) or out.class_logits is None or out.mask_logits is None:
            raise RRSegError(f"{self.name}: Mask2Former's set criterion needs a mask-classification model's output "
                             f"(class and mask logits), got {type(out).__name__}")
        device = out.class_logits.device
        if self.criterion.empty_weight.device != device:
            self.criterion.to(device)
        classes, masks = semantic_targets(labels.to(device), self.ignore_index, self.num_classes)
        num_masks = _num_masks(classes, device)
        layers = [(out.class_logits, out.mask_logits)]  # the last layer first, then the earlier ones: the release's
        if self.deep_supervision:  # order (each matching draws its random points)
            layers += out.aux_outputs
        parts = {name: out.class_logits.new_zeros((), dtype=torch.float32) for name in self.weights}
        with torch.autocast(device.type, enabled=False):
            for class_logits, mask_logits in layers:
                class_logits, mask_logits = class_logits.float(), mask_logits.float()
                indices = self.criterion.matcher(mask_logits, class_logits, masks, classes)
                losses = {**self.criterion.loss_masks(mask_logits, masks, indices, num_masks),
                          **self.criterion.loss_labels(class_logits, classes, indices)}
                for name, hf_name in self.PARTS:
                    parts[name] = parts[name] + losses[hf_name]
        return {name: self.loss_weight * self.weights[name] * value for name, value in parts.items()}


@dataclass
class Mask2FormerLossOptions(PixelLossOptions):
    """mask2former: Mask2Former's set criterion (Hungarian matching, class CE, mask BCE and dice on sampled points,
    deep supervision) for mask-classification models (the mask2former_* models); defaults as the release's
    semantic configs."""

    OUTPUT: ClassVar[str] = "masks"
    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "class_weight": "the class CE's weight (and the class cost's in the matching)",
        "mask_weight": "the mask sigmoid BCE's weight (and its cost's in the matching)",
        "dice_weight": "the mask dice loss's weight (and its cost's in the matching)",
        "no_object_weight": "the class CE's weight of the no-object class (the unmatched queries)",
        "num_points": "points sampled per mask for the matching and the mask losses (the release: 112 x 112)",
        "oversample_ratio": "candidate points per sampled point, of which the most uncertain are taken",
        "importance_sample_ratio": "the share of the sampled points taken by uncertainty (the rest uniformly)",
        "deep_supervision": "every decoder layer's prediction matched and supervised, not only the last",
    }
    type: str = "mask2former"
    class_weight: float = ranged(2.0, ">= 0")
    mask_weight: float = ranged(5.0, ">= 0")
    dice_weight: float = ranged(5.0, ">= 0")
    no_object_weight: float = ranged(0.1, ">= 0")
    num_points: int = ranged(12544, ">= 1")
    oversample_ratio: float = ranged(3.0, ">= 1")
    importance_sample_ratio: float = ranged(0.75, "[0, 1]")
    deep_supervision: bool = True

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> Mask2FormerCriterion:
        return Mask2FormerCriterion(
            num_classes, class_weight=self.class_weight, mask_weight=self.mask_weight, dice_weight=self.dice_weight,
            no_object_weight=self.no_object_weight, num_points=self.num_points,
            oversample_ratio=self.oversample_ratio, importance_sample_ratio=self.importance_sample_ratio,
            deep_supervision=self.deep_supervision, ignore_index=ignore_index, loss_weight=self.loss_weight,
        )
