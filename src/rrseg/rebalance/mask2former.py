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

Two long-tail switches, training only (inference is unchanged):

- ``query_prior: region``, the *rebalanced query classifier*: RR's region-level logit adjustment applied to the
  model's own region classifier. A query's class logits (not its no-object logit) get the log region-count prior
  log(n_c / sum n) added inside the classification loss, the balanced softmax RR puts on its region branch. Every
  query sees it, the unmatched ones (target "no object") too: then one softmax, the balanced one, is what the raw
  logits are trained under, whichever queries the matching (which changes from step to step and from layer to
  layer) picks, and the no-object logit learns against the same adjusted class logits everywhere. Adjusting only
  the matched queries (``query_prior: region_matched``) trained the same logits under two softmaxes; in a
  200-iteration CPU run it reached 9.8 mIoU against 14.5 with every query adjusted (plain: 7.2), with no more
  false positives for the latter (docs/BENCHMARKS.md, "Region rebalance for mask classification").
- ``matcher: frequency``, LTSS's frequency-based matcher (caopulan/Mask2Former-LT, TMM 2024;
  ``mask2former/modeling/matcher.py`` ``HungarianMatcher``, ``match_method == 'multi-match'``): the cost matrix as
  the release's, then target k of class c repeated to q_c columns, q_c = max(1, ceil(s * sqrt(t / f_c))), f_c
  the class's image frequency (images containing it / training images), and one Hungarian assignment over the
  widened matrix (:func:`repeated_assignment`). A target can so take several queries; the mask losses are still
  normalised by the number of target masks, as LTSS's unchanged ``SetCriterion``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.ranges import ranged
from rrseg.rebalance.base import LossTerm, PixelLossOptions
from rrseg.types import MaskOutput, SegOutput

if TYPE_CHECKING:
    from rrseg.rebalance.counts import ClassCounts

__all__ = [
    "FrequencyMatcher",
    "Mask2FormerCriterion",
    "Mask2FormerLossOptions",
    "frequency_queries",
    "repeated_assignment",
    "semantic_targets",
]


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


def frequency_queries(image_counts: Sequence[int] | np.ndarray, num_images: int, t: float = 3e-4,
                      s: float = 2.0) -> list[int]:
    """LTSS's queries per class (``HungarianMatcher.get_category_query_num``): q_c = max(1, ceil(s * sqrt(t / f_c))),
    f_c = ``image_counts[c] / num_images``; a class in no image is counted as in one (LTSS's own counts have none;
    its code would fail on the infinite q)."""
    counts = np.maximum(np.asarray(image_counts, dtype=np.float64), 1.0)
    q = np.maximum(1.0, s * np.sqrt(t / (counts / float(num_images))))
    return [math.ceil(v) for v in q.tolist()]


def repeated_assignment(cost: Tensor | np.ndarray, repeats: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The Hungarian assignment of queries (rows of ``cost`` [Q, K]) to targets (columns), target k repeated to
    ``repeats[k]`` columns, as LTSS's multi-match: the K columns, then each target's ``repeats[k] - 1`` copies in
    target order, one ``linear_sum_assignment`` over the widened matrix, a copy's column mapped back to its target.
    With more columns than queries every query is assigned; with fewer, every column is (each target exactly
    ``repeats[k]`` queries). Returns (query indices ascending, their targets)."""
    from scipy.optimize import linear_sum_assignment

    cost = cost.detach().cpu().numpy() if isinstance(cost, Tensor) else np.asarray(cost)
    if cost.ndim != 2 or len(repeats) != cost.shape[1]:
        raise ValueError(f"repeated_assignment needs a [queries, targets] cost and one repeat count per target, got "
                         f"{cost.shape} and {len(repeats)}")
    targets = np.arange(cost.shape[1])
    copies = np.repeat(targets, np.maximum(np.asarray(repeats, dtype=np.int64) - 1, 0))
    columns = np.concatenate([targets, copies])
    rows, cols = linear_sum_assignment(cost[:, columns])
    return rows, columns[cols]


class FrequencyMatcher(nn.Module):
    """LTSS's frequency-based matcher: the cost of HF's ``Mask2FormerHungarianMatcher`` (the same random points,
    drawn in the same order), assigned by :func:`repeated_assignment` with ``queries_per_class[c]`` columns per target
    of class c. With one query per class it is HF's matcher."""

    def __init__(self, queries_per_class: Sequence[int], cost_class: float = 2.0, cost_mask: float = 5.0,
                 cost_dice: float = 5.0, num_points: int = 12544) -> None:
        super().__init__()
        self.queries_per_class = [int(q) for q in queries_per_class]
        self.cost_class, self.cost_mask, self.cost_dice = float(cost_class), float(cost_mask), float(cost_dice)
        self.num_points = int(num_points)

    @torch.no_grad()
    def forward(self, masks_queries_logits: Tensor, class_queries_logits: Tensor, mask_labels: list[Tensor],
                class_labels: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """HF's matcher's signature and result: per image (query indices, target indices), int64."""
        from transformers.models.mask2former import modeling_mask2former as hf

        indices = []
        for i in range(masks_queries_logits.shape[0]):
            probs = class_queries_logits[i].softmax(-1)
            pred_mask = masks_queries_logits[i][:, None]
            target_mask = mask_labels[i].to(pred_mask)[:, None]
            points = torch.rand(1, self.num_points, 2, device=pred_mask.device)
            target_mask = hf.sample_point(target_mask, points.repeat(target_mask.shape[0], 1, 1),
                                          align_corners=False).squeeze(1)
            pred_mask = hf.sample_point(pred_mask, points.repeat(pred_mask.shape[0], 1, 1),
                                        align_corners=False).squeeze(1)
            cost = (self.cost_mask * hf.pair_wise_sigmoid_cross_entropy_loss(pred_mask, target_mask)
                    + self.cost_class * -probs[:, class_labels[i]]
                    + self.cost_dice * hf.pair_wise_dice_loss(pred_mask, target_mask))
            top = torch.finfo(cost.dtype).max  # as HF: a non-finite cost is matched last, not an error
            cost = torch.nan_to_num(cost, nan=top, posinf=top, neginf=top)
            # capped at the queries, which leaves every assignment possible: no target can take more queries
            repeats = [min(self.queries_per_class[int(c)], cost.shape[0]) for c in class_labels[i].tolist()]
            rows, cols = repeated_assignment(cost, repeats)
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        q = self.queries_per_class
        return f"classes={len(q)}, queries_per_class=[{min(q)}..{max(q)}]"


class Mask2FormerCriterion(LossTerm):
    """Mask2Former's set criterion on a :class:`~rrseg.types.MaskOutput` (see the module docstring).

    ``query_log_prior`` [C]: the rebalanced query classifier's adjustment, added to the class logits (not the
    no-object one) of every query in the classification loss (of the matched ones only with
    ``prior_on_unmatched=False``); None: the release's loss. ``queries_per_class`` [C]: LTSS's frequency-based
    matcher with q_c columns per target of class c (:class:`FrequencyMatcher`); None: the release's matcher.
    """

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
        query_log_prior: Tensor | None = None,
        prior_on_unmatched: bool = True,
        queries_per_class: Sequence[int] | None = None,
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
        if query_log_prior is not None:
            query_log_prior = torch.as_tensor(query_log_prior, dtype=torch.float32)
            if query_log_prior.shape != (self.num_classes,):
                raise ValueError(f"query_log_prior needs one value per class ({self.num_classes}), got shape "
                                 f"{tuple(query_log_prior.shape)}")
            # the no-object logit is not adjusted: a 0 in its column
            query_log_prior = torch.cat([query_log_prior, query_log_prior.new_zeros(1)])
        self.register_buffer("query_log_prior", query_log_prior)
        self.prior_on_unmatched = bool(prior_on_unmatched)
        if queries_per_class is not None:
            if len(queries_per_class) != self.num_classes or min(queries_per_class) < 1:
                raise ValueError(f"queries_per_class needs a count >= 1 per class ({self.num_classes}), got "
                                 f"{len(queries_per_class)} counts, the least {min(queries_per_class, default=None)}")
            self.criterion.matcher = FrequencyMatcher(queries_per_class, class_weight, mask_weight, dice_weight,
                                                      num_points)

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
                          "loss_cross_entropy": self._class_loss(class_logits, classes, indices)}
                for name, hf_name in self.PARTS:
                    parts[name] = parts[name] + losses[hf_name]
        return {name: self.loss_weight * self.weights[name] * value for name, value in parts.items()}

    def _class_loss(self, class_logits: Tensor, classes: list[Tensor], indices: list[tuple[Tensor, Tensor]]
                    ) -> Tensor:
        """The queries' classification loss: HF's ``loss_labels`` (CE over C + 1 classes, no-object weighted
        ``no_object_weight``, the weighted mean over the queries), its logits adjusted by the query prior if set."""
        if self.query_log_prior is None:
            return self.criterion.loss_labels(class_logits, classes, indices)["loss_cross_entropy"]
        b, q, _ = class_logits.shape
        target = torch.full((b, q), self.num_classes, dtype=torch.int64, device=class_logits.device)
        matched = torch.zeros((b, q, 1), dtype=torch.bool, device=class_logits.device)
        for i, (src, tgt) in enumerate(indices):
            target[i, src.to(target.device)] = classes[i][tgt].to(target.device)
            matched[i, src.to(target.device)] = True
        prior = self.query_log_prior.to(class_logits.dtype)
        adjusted = class_logits + (prior if self.prior_on_unmatched else torch.where(matched, prior, 0.0))
        return F.cross_entropy(adjusted.transpose(1, 2), target, weight=self.criterion.empty_weight)


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
        "query_prior": "the rebalanced query classifier: region adds the log region-count prior log(n_c / sum n) "
                       "(loss.counts) to every query's class logits, not the no-object one, in the classification "
                       "loss (training only); region_matched: to the matched queries' only; none: the release's "
                       "loss",
        "matcher": "the matching of queries to masks: hungarian (the release's, one query per mask) or frequency "
                   "(LTSS's frequency-based matcher: a mask of class c takes q_c = max(1, ceil(matcher_s x "
                   "sqrt(matcher_t / f_c))) queries, f_c the share of training images holding c, from loss.counts)",
        "matcher_t": "the frequency matcher's t (LTSS's MATCHER.T, 3e-4 on ADE20K-Full)",
        "matcher_s": "the frequency matcher's s (LTSS's MATCHER.S, 2 on ADE20K-Full)",
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
    query_prior: Literal["none", "region", "region_matched"] = "none"
    matcher: Literal["hungarian", "frequency"] = "hungarian"
    matcher_t: float = ranged(3e-4, "> 0")
    matcher_s: float = ranged(2.0, "> 0")

    def build(self, counts: ClassCounts | None, num_classes: int, ignore_index: int = 255) -> Mask2FormerCriterion:
        """The criterion; ``counts`` (``ClassCounts.load``'s sources) are read by the two switches only, the
        frequency matcher's needing the number of training images too."""
        log_prior = per_class = None
        if self.query_prior != "none" or self.matcher == "frequency":
            from rrseg.rebalance.counts import ClassCounts

            if counts is None:
                raise RRSegError(f"loss.pixel ({self.type}): query_prior {self.query_prior!r} / matcher "
                                 f"{self.matcher!r} need class counts (loss.counts)")
            counts = ClassCounts.load(counts, num_classes)
            if self.query_prior != "none":
                log_prior = counts.log_prior("region")
            if self.matcher == "frequency":
                if not counts.num_images:
                    raise RRSegError("loss.pixel.matcher frequency needs the number of training images (f_c = "
                                     "images holding c / images), which these class counts do not hold: counts "
                                     "counted by rrseg (loss.counts null) or written by `rrseg stats` have it")
                per_class = frequency_queries(counts.image_counts, counts.num_images, self.matcher_t,
                                              self.matcher_s)
        return Mask2FormerCriterion(
            num_classes, class_weight=self.class_weight, mask_weight=self.mask_weight, dice_weight=self.dice_weight,
            no_object_weight=self.no_object_weight, num_points=self.num_points,
            oversample_ratio=self.oversample_ratio, importance_sample_ratio=self.importance_sample_ratio,
            deep_supervision=self.deep_supervision, ignore_index=ignore_index, loss_weight=self.loss_weight,
            query_log_prior=log_prior, prior_on_unmatched=self.query_prior == "region", queries_per_class=per_class,
        )
