"""Region Rebalance (Cui et al., arXiv 2204.01969), top to bottom.

Pixels of one region are strongly correlated, so a class's number of independent examples is closer to
its *region* (image) count than to its pixel count. RR therefore pools the decoder's pixel features of
each ground-truth class into one region feature and trains an auxiliary region classifier whose logits are
shifted by the log of the region-count prior (balanced softmax). It runs in training only; inference is
unchanged.

The released code upsamples the 128-channel features to the label size and multiplies by a one-hot
(pixels x classes) matrix. ``region_pool`` computes the same means exactly without either tensor: the sum
over label pixels of bilinearly upsampled features equals a weighted sum of the low-resolution features,
with weights given by the adjoint of bilinear upsampling applied to the class masks (4 scatter-adds).

The release's DeepLabV3+ and OCRNet RR heads (``sep_aspp_head_rebalance``, ``ocr_head_rebalance``, compiled
files only; RR-SPEC) differ from the UPerNet head in three ways, each an option here (off by default):

- ``ignored_region``: they pool ``torch.unique(y)`` without dropping 255, so the ignored pixels form one more
  region (its feature is their mean, its label the ignore index). mmseg's cross-entropy with ``ignore_index``
  gives it loss 0 but its 'mean' counts it: the region loss is divided by all regions, the ignored one
  included. It is also a column of the consistency softmax.
- ``prior_eps``: the prior is ``log(n / sum n + 1e-12)`` (a zero count gives log 1e-12) instead of taking a zero
  count as 1. With ``smooth=1.0`` the targets are hard (the soft-target sum equals mmseg's hard-target CE).
- ``consistency_weight``: ``loss_consistency`` = for each labelled pixel, -log(p + 1e-12) of its own region,
  p = softmax over the present regions (the ignored one included) of ``pixel_logits @ region_logits.T``
  (region logits without the prior), summed and divided by (labelled pixels + 1e-12). The pixel logits are
  the decode head's (``SegOutput.logits``) resized to the label size as mmseg's ``losses`` does before it
  (bilinear, align_corners=False). The product is taken at the logits' resolution and the K-channel result
  resized (bilinear resizing is linear, so this equals resizing the C-channel logits first, up to rounding,
  and costs K instead of C channels at label size). K = the regions present in the batch, as the release:
  this term reads K back to the host (the region loss itself keeps the fixed table's static shapes).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.ranges import ranged
from rrseg.rebalance.base import RegionLossOptions, resize_logits
from rrseg.rebalance.counts import ClassCounts, CountsLike
from rrseg.types import MaskOutput, SegOutput

__all__ = [
    "DEBUG_CHECKS",
    "CeCoOptions",
    "RROptions",
    "RegionPool",
    "RegionRebalance",
    "RegionSlots",
    "region_pool",
    "region_slots",
    "region_table",
    "rr_options",
    "simplex_etf",
]

# Synchronous label checks with the named error on accelerators too (slower: one host sync per step).
DEBUG_CHECKS = os.environ.get("RRSEG_DEBUG", "") not in ("", "0")
# RR on a mask classifier (Mask2Former) pools its per-pixel mask features; it has no pixel logits to be consistent with
MASK_MODEL_CONSISTENCY = ("loss.region.consistency_weight: the consistency term needs per-pixel class logits, which a "
                          "mask-classification model (Mask2Former) does not have; set it to 0")


class RegionPool(NamedTuple):
    features: Tensor  # [K, D] mean feature of each region
    labels: Tensor  # [K] class of each region
    image_index: Tensor  # [K] image of each region; -1 when pooled over the whole batch
    pixel_counts: Tensor  # [K] labelled pixels in each region


def _source_taps(out_size: int, in_size: int, align_corners: bool, device: torch.device):
    """For each output coordinate: the two input taps and their weights, as PyTorch's bilinear does."""
    dst = torch.arange(out_size, device=device, dtype=torch.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * scale
    else:
        src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_(min=0.0)
    lo = src.floor().long().clamp_(max=in_size - 1)
    hi = torch.where(lo < in_size - 1, lo + 1, lo)
    w_hi = src - lo
    return lo, hi, 1.0 - w_hi, w_hi


def _check_labels(labels: Tensor, num_classes: int, ignore_index: int) -> None:
    """Labels are in [0, C) or ``ignore_index``. On the CPU (outside ``torch.compile``) or with ``debug=True`` a
    synchronous check raises the named one-line error; on an accelerator an asynchronous device assert keeps
    the step free of host synchronisation (the labels were already checked where they were made)."""
    valid = ((labels >= 0) & (labels < num_classes)) | (labels == ignore_index)
    if DEBUG_CHECKS or (labels.device.type == "cpu" and not torch.compiler.is_compiling()):
        if not bool(valid.all()):
            bad = labels[~valid][0].item()
            raise ValueError(
                f"label value {bad} is outside [0, {num_classes}) and is not ignore_index={ignore_index}"
            )
    else:
        torch._assert_async(valid.all(), f"region_pool: a label is outside [0, {num_classes}) and not ignore_index")


def _pixel_rows(
    features: Tensor, labels: Tensor, num_classes: int, ignore_index: int, per_image: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Checked long labels on the features' device, whether each pixel is labelled, and its region row
    (``class``, or ``image * C + class`` per image; 0 for ignored pixels, which weigh 0)."""
    if features.dim() != 4 or labels.dim() != 3 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"region_pool expects features [B, D, h, w] and labels [B, H, W] with the same B, "
            f"got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.to(device=features.device, dtype=torch.long)
    _check_labels(labels, num_classes, ignore_index)
    keep = labels != ignore_index
    cls = torch.where(keep, labels, 0)  # ignored pixels add weight 0 to class 0's row: no filtering
    img = torch.arange(features.shape[0], device=features.device).view(-1, 1, 1)
    return keep, (img * num_classes + cls if per_image else cls), img


def _row_sums(features: Tensor, labels_hw: tuple[int, int], keep: Tensor, row: Tensor, rows: int,
              blocks: bool, align_corners: bool, counts: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum of the bilinearly upsampled features over the labelled pixels of each of ``rows`` rows (``row``: each
    pixel's row) and the rows' pixel counts. ``blocks``: row ``image * (rows / B) + r`` takes pixels of that
    image only (a [B, rows / B, h*w] table, one matmul per image); else one [rows, B*h*w] table. ``counts``: the
    rows' pixel counts when the caller has them (else counted here)."""
    b, d, h, w = features.shape
    device = features.device
    acc_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    img = torch.arange(b, device=device).view(b, 1, 1)
    # Row offsets into the flat weight table: per image a [rows / B, h*w] block of its own cells, or per row
    # the cells of every image.
    base = row * (h * w) if blocks else row * (b * h * w) + img * (h * w)
    if counts is None:
        counts = torch.zeros(rows, dtype=torch.long, device=device)
        counts.index_add_(0, row.reshape(-1), keep.reshape(-1).long())

    # Adjoint of separable bilinear upsampling: every labelled pixel sends its 4 bilinear weights back to
    # the feature cells it was interpolated from, into the row of its region.
    y0, y1, wy0, wy1 = _source_taps(labels_hw[0], h, align_corners, device)
    x0, x1, wx0, wx1 = _source_taps(labels_hw[1], w, align_corners, device)
    keep_w = keep.to(acc_dtype)
    weights = torch.zeros(rows * (h * w if blocks else b * h * w), dtype=acc_dtype, device=device)
    for yy, wy in ((y0, wy0), (y1, wy1)):
        for xx, wx in ((x0, wx0), (x1, wx1)):
            cell = (yy.view(-1, 1) * w + xx.view(1, -1)).unsqueeze(0)  # [1, H, W]
            tap = (wy.view(-1, 1) * wx.view(1, -1)).to(acc_dtype).unsqueeze(0)
            weights.index_add_(0, (base + cell).reshape(-1), (keep_w * tap).reshape(-1))

    # Products in the features' own [B, D, h*w] layout (weights transposed, not the features): the gradient then
    # comes back contiguous, where a permuted copy's gradient is channels-last, which costs a copy forward and
    # the BatchNorm before it a ~6x slower backward on the CPU (the branch: 0.90x the time at 150 classes).
    feats = features.to(acc_dtype).reshape(b, d, h * w)
    if blocks:
        sums = torch.bmm(feats, weights.view(b, rows // b, h * w).transpose(1, 2)).transpose(1, 2).reshape(rows, d)
    else:
        sums = torch.bmm(feats, weights.view(rows, b, h * w).permute(1, 2, 0)).sum(0).T
    return sums, counts


def region_table(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    ignore_index: int = 255,
    per_image: bool = False,
    align_corners: bool = True,
) -> tuple[Tensor, Tensor]:
    """Mean feature and labelled-pixel count of every *possible* region: a fixed table of K = C rows (one per
    class, pooled over the batch) or K = B x C rows (row ``image * C + class``) with ``per_image=True``.

    Absent regions get count 0 and a zero mean. Shapes depend only on the input shapes and no value is read
    back to the host, so the training step needs no synchronisation and ``torch.compile`` traces one graph
    whatever classes a batch holds. Means accumulate in float32 (float64 for float64 input) and are returned
    in that dtype; counts are int64.
    """
    keep, row, _ = _pixel_rows(features, labels, num_classes, ignore_index, per_image)
    rows = features.shape[0] * num_classes if per_image else num_classes
    sums, counts = _row_sums(features, labels.shape[-2:], keep, row, rows, per_image, align_corners)
    return sums / counts.clamp(min=1).to(sums.dtype).unsqueeze(1), counts


class RegionSlots(NamedTuple):
    means: Tensor  # [S, D] mean feature of the region in each slot (0 for an empty slot)
    counts: Tensor  # [S] its labelled pixels (0: an empty slot)
    keys: Tensor  # [S] its row in region_table's table: class, or image * C + class per image
    overflow: Tensor  # [] regions present but left without a slot (0 unless more than S are present)


def region_slots(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    slots: int,
    ignore_index: int = 255,
    per_image: bool = False,
    align_corners: bool = True,
    priority: Tensor | None = None,
) -> RegionSlots:
    """``region_table`` in ``slots`` rows: the regions present fill the slots, so the cost follows the regions a
    batch holds, not the class count (a table of C rows costs C x B x h x w floats: 444 MB at 847 classes and
    batch 8 x 512^2), with static shapes and no host synchronisation all the same.

    A region's slot is its rank among the present ones: ``cumsum`` over the rows in ``priority`` order (a
    permutation of the rows; default: row order). Each slot's mean and count equal its row of the table
    exactly; slots past the present regions are empty (count 0). When more than ``slots`` regions are present
    the rest, last in ``priority`` order, are left out, and ``overflow`` says how many.
    """
    keep, row, _ = _pixel_rows(features, labels, num_classes, ignore_index, per_image)
    rows = features.shape[0] * num_classes if per_image else num_classes
    region_counts = torch.zeros(rows, dtype=torch.long, device=features.device)
    region_counts.index_add_(0, row.reshape(-1), keep.reshape(-1).long())
    present = region_counts > 0
    order = torch.arange(rows, device=features.device) if priority is None else priority.to(features.device)
    rank = torch.empty_like(order).scatter_(0, order, torch.cumsum(present[order].long(), 0) - 1)
    slot_of = torch.where(present & (rank < slots), rank, slots)  # slot ``slots``: absent, or no slot left
    pixel_slot = slot_of[row]
    keep = keep & (pixel_slot < slots)
    keys = torch.zeros(slots + 1, dtype=torch.long, device=features.device)
    keys = keys.scatter_(0, slot_of, torch.arange(rows, device=features.device))[:slots]
    # each slot's count is its region's, read from the count above (an empty slot: 0) rather than counted again
    counts = torch.zeros(slots + 1, dtype=torch.long, device=features.device).scatter_(0, slot_of, region_counts)
    sums, counts = _row_sums(features, labels.shape[-2:], keep, torch.where(keep, pixel_slot, 0), slots, False,
                             align_corners, counts=counts[:slots])
    overflow = (present.sum() - slots).clamp(min=0)
    return RegionSlots(sums / counts.clamp(min=1).to(sums.dtype).unsqueeze(1), counts, keys, overflow)


def region_pool(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    ignore_index: int = 255,
    per_image: bool = False,
    align_corners: bool = True,
) -> RegionPool:
    """Mean of the bilinearly upsampled ``features`` over the pixels of each class present in ``labels``.

    ``features`` is [B, D, h, w]; ``labels`` is [B, H, W] (any size). One region per class present in the
    batch, or per (image, class) with ``per_image=True``; regions come sorted by (image, class). Pixels equal
    to ``ignore_index`` are dropped. Equals ``F.interpolate(features, (H, W), mode="bilinear",
    align_corners=align_corners)`` followed by a one-hot mean, without materialising either.
    Accumulates in float32 (float64 for float64 input); the result has the dtype of ``features``.
    Keeping only the present regions reads their number back to the host; training uses ``region_table``.
    """
    means, counts = region_table(features, labels, num_classes, ignore_index, per_image, align_corners)
    keys = (counts > 0).nonzero().squeeze(1)
    region_labels = keys % num_classes if per_image else keys
    image_index = keys // num_classes if per_image else torch.full_like(keys, -1)
    return RegionPool(means[keys].to(features.dtype), region_labels, image_index, counts[keys])


def simplex_etf(dim: int, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """A fixed simplex equiangular tight frame as a [num_classes, dim] classifier with unit-norm rows."""
    if num_classes < 2:
        raise ValueError(f"a simplex ETF needs at least 2 classes, got {num_classes}")
    if dim < num_classes:
        raise ValueError(f"a simplex ETF of {num_classes} classes needs hidden dim >= {num_classes}, got {dim}")
    u, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=generator, dtype=torch.float64))
    centred = u @ (torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes)
    etf = math.sqrt(num_classes / (num_classes - 1)) * centred  # [dim, C]
    return F.normalize(etf.T, dim=1).float()


# ------------------------------------------------------------------------------------------------ options
# The region losses' options and their defaults, declared here once: the config's loss.region section is these
# dataclasses, and RegionRebalance's keyword defaults below are read from them.


@dataclass
class RROptions(RegionLossOptions):
    """rr: Region Rebalance, the released defaults (frozen branch, region-count prior, soft targets 0.5)."""

    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "loss_weight": "the region loss's weight in the training loss",
        "trainable": "the region branch learns too (false, as released: frozen at its random init, its BatchNorm "
                     "statistics still updated)",
        "per_image": "one region per class per image rather than per class in the process's batch",
        "prior": "the log prior added to the region logits: from region (image) counts, pixel counts, or none",
        "smooth": "the true-class target probability; null: 0.5 for rr, 1.0 for ceco",
        "reduce_channels": "the branch's 1x1 reduction of the features (conv + BatchNorm): its channels",
        "hidden_channels": "the branch's hidden layer (Linear + ReLU): its width",
        "dropout": "the dropout before the region classifier",
        # the release's DeepLabV3+ / OCRNet heads (see the module docstring)
        "prior_eps": "the release's DeepLabV3+ / OCRNet heads: the prior log(n / sum n + prior_eps); null: a zero "
                     "count taken as 1",
        "ignored_region": "the release's DeepLabV3+ / OCRNet heads: the ignored pixels as one more region (loss 0, "
                          "counted in the mean)",
        "consistency_weight": "the release's DeepLabV3+ / OCRNet heads: the weight of their consistency term (each "
                              "labelled pixel's logits against the regions' logits); 0: none",
        "slots": "the region table's rows when the classes (x images, per_image) are more: filled from the regions "
                 "present, rarest classes first, so the cost follows the classes present; a batch with more "
                 "regions leaves the most frequent out and the train record counts them (region_overflow); null: "
                 "a row for every class",
    }
    type: str = "rr"
    loss_weight: float = ranged(1.0, ">= 0")
    trainable: bool = False
    per_image: bool = False
    prior: Literal["region", "pixel", "none"] = "region"
    smooth: float | None = ranged(None, "(0, 1]")
    reduce_channels: int = ranged(128, ">= 1")
    hidden_channels: int = ranged(512, ">= 1")
    dropout: float = ranged(0.1, "[0, 1)")
    prior_eps: float | None = ranged(None, "> 0")
    ignored_region: bool = False
    consistency_weight: float = ranged(0.0, ">= 0")
    slots: int | None = ranged(128, ">= 1")

    ETF: ClassVar[bool] = False  # CeCo's classifier (a simplex ETF) instead of a Linear one

    def build(
        self,
        in_channels: int,
        num_classes: int,
        counts: CountsLike | ClassCounts | None = None,
        ignore_index: int = 255,
    ) -> RegionRebalance:
        """A :class:`RegionRebalance` with these options for features of ``in_channels`` channels; ``counts``
        as ``ClassCounts.load`` takes them (not needed with ``prior="none"``). Bad values: a one-line RRSegError."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "type"}
        try:
            return RegionRebalance(in_channels, num_classes, counts, etf=self.ETF, ignore_index=ignore_index,
                                   **options)
        except RRSegError:
            raise
        except ValueError as e:
            raise RRSegError(f"region loss {self.type!r}: {e}") from None


@dataclass
class CeCoOptions(RROptions):
    """ceco: RR with a fixed simplex-ETF classifier over L2-normalised region features (CeCo, CVPR 2023)."""

    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "logit_scale": "the scale of the ETF classifier's logits (over L2-normalised region features)",
    }
    ETF: ClassVar[bool] = True
    type: str = "ceco"
    logit_scale: float = ranged(5.0, "> 0")


def rr_options(*, etf: bool = False, **options: Any) -> RROptions:
    """The typed options of RegionRebalance's keyword options (those the integrations take): CeCo's with
    ``etf=True``, else RR's. An option neither takes is a one-line RRSegError naming the valid ones."""
    cls = CeCoOptions if etf else RROptions
    valid = [f.name for f in dataclasses.fields(cls) if f.name != "type"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        ceco = not etf and unknown[0] in {f.name for f in dataclasses.fields(CeCoOptions)}
        hint = " (a CeCo option: with etf=True)" if ceco else ""
        raise RRSegError(f"unknown RR option {unknown[0]!r}{hint}; options: etf, {', '.join(valid)}")
    return cls(**options)


class RegionRebalance(nn.Module):
    """The auxiliary region-rebalance loss, a drop-in term for any segmentation model.

    Call it with the tensor that feeds the model's pixel classifier ([B, D, h, w]) and the labels
    ([B, H, W], ``ignore_index`` for unlabelled pixels); it returns ``loss_weight`` times the region loss.
    Defaults are the released ones: reduce (1x1 conv to 128, no bias, BatchNorm), gain (Linear 128 -> 512,
    ReLU), Dropout 0.1, Linear 512 -> C, all frozen at random init (BatchNorm statistics still update);
    log prior from region (image) counts; soft targets with true-class probability 0.5; weight 1.0.

    Switches: ``trainable`` (the branch learns too), ``per_image`` (one region per class per image rather
    than per batch), ``prior`` ("region", "pixel" or "none"), ``etf`` (CeCo: fixed simplex ETF classifier,
    L2-normalised region features, logits scaled by ``logit_scale``, default smoothing 1.0); ``prior_eps``,
    ``ignored_region`` and ``consistency_weight`` (with ``smooth=1.0``: the release's DeepLabV3+ / OCRNet
    heads, see the module docstring).
    In eval mode it returns 0 without computing anything. The last region logits and labels are kept in
    ``last_logits`` / ``last_labels`` (detached, present regions only) for inspection.

    Training uses a fixed region table (``region_table``): every class (or image x class) has a row, absent
    ones are masked out of the mean, ignored pixels weigh 0 and labels are checked asynchronously on an
    accelerator, so the step has no host synchronisation and no data-dependent shape (``torch.compile``
    traces it in one graph). Dropout therefore draws its mask over all K rows. When the classes (x images)
    outnumber ``slots`` (128 by default: ADE20K's 150 classes, COCO-Stuff's 171, ADE20K-Full's 847), the table
    has ``slots`` rows instead, filled from the regions present (``region_slots``), rarest class first: the
    same static shapes, a cost that follows the regions a batch holds, and the same loss while they fit
    (a batch of 4 holds about 25-30 classes on these datasets); regions past the last slot are left out and
    counted in ``overflow`` (the train record's ``region_overflow``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        counts: CountsLike | ClassCounts | None = None,
        *,
        prior: str = RROptions.prior,
        reduce_channels: int = RROptions.reduce_channels,
        hidden_channels: int = RROptions.hidden_channels,
        dropout: float = RROptions.dropout,
        smooth: float | None = RROptions.smooth,
        loss_weight: float = RROptions.loss_weight,
        trainable: bool = RROptions.trainable,
        per_image: bool = RROptions.per_image,
        etf: bool = False,
        logit_scale: float = CeCoOptions.logit_scale,
        ignore_index: int = 255,
        align_corners: bool = True,
        name: str = "loss_rr",
        prior_eps: float | None = RROptions.prior_eps,
        ignored_region: bool = RROptions.ignored_region,
        consistency_weight: float = RROptions.consistency_weight,
        slots: int | None = RROptions.slots,
    ) -> None:
        super().__init__()
        if prior not in ("region", "pixel", "none"):
            raise ValueError(f"prior must be 'region', 'pixel' or 'none', got {prior!r}")
        if prior != "none" and counts is None:
            raise ValueError(f"prior={prior!r} needs class counts (a list, a stats JSON, a released "
                             "*_image_label_stats.txt or its name), or prior='none'")
        smooth = (1.0 if etf else 0.5) if smooth is None else float(smooth)
        if not 0.0 < smooth <= 1.0:
            raise ValueError(f"smooth is the true-class target probability and must be in (0, 1], got {smooth}")
        if num_classes < 2:
            raise ValueError(f"Region Rebalance needs at least 2 classes, got num_classes={num_classes}")
        if prior_eps is not None and not prior_eps > 0.0:
            raise ValueError(f"prior_eps must be > 0 (or null: a zero count taken as 1), got {prior_eps}")
        if consistency_weight < 0.0:
            raise ValueError(f"consistency_weight must be >= 0, got {consistency_weight}")
        if consistency_weight and per_image:
            raise ValueError("consistency_weight needs regions pooled over the batch (per_image=False), as released")
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1 (or null: a row for every class), got {slots}")
        self.num_classes = num_classes
        self.smooth = smooth
        self.loss_weight = float(loss_weight)
        self.per_image = per_image
        self.etf = etf
        self.logit_scale = float(logit_scale)
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.name = name
        self.prior_eps = prior_eps
        self.ignored_region = bool(ignored_region)
        self.consistency_weight = float(consistency_weight)
        self.slots = slots

        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, reduce_channels, kernel_size=1, bias=False), nn.BatchNorm2d(reduce_channels)
        )
        self.gain = nn.Sequential(nn.Linear(reduce_channels, hidden_channels), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        if etf:
            self.register_buffer("etf_weight", simplex_etf(hidden_channels, num_classes))
            self.classifier = None
        else:
            self.classifier = nn.Linear(hidden_channels, num_classes)
        if not trainable:
            for p in self.parameters():
                p.requires_grad_(False)

        log_prior = torch.zeros(num_classes)
        if prior != "none":
            cc = counts if isinstance(counts, ClassCounts) else ClassCounts.load(counts, num_classes)
            cc.check(num_classes)
            # prior_eps: the release's DeepLabV3+ / OCRNet heads, log(n / sum n + eps)
            log_prior = cc.log_prior("pixel" if prior == "pixel" else "region", eps=prior_eps)
        self.register_buffer("log_prior", log_prior)
        # the order in which present regions take slots: rarest class first (the ignored region, a part of the
        # released mean, before them); none of this is saved in a checkpoint
        fill = torch.argsort(log_prior, stable=True)
        if self.ignored_region:
            fill = torch.cat([torch.tensor([num_classes]), fill])
        self.register_buffer("fill_order", fill, persistent=False)
        self.register_buffer("overflow", torch.zeros((), dtype=torch.long), persistent=False)
        self.uses_slots = False  # set by the first training call that fills slots
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # table logits, classes, presence

    def check_fits(self, in_channels: int, num_classes: int, pixel_logits: bool = True) -> None:
        """The one check that this branch fits a model whose pixel classifier reads ``in_channels`` channels
        and predicts ``num_classes`` classes (a Segmentor's, an smp or HF model's); a one-line RRSegError if not.
        ``pixel_logits=False``: a mask classifier (Mask2Former, its mask features pooled), which has no pixel logits
        for the consistency term."""
        if self.consistency_weight and not pixel_logits:
            raise RRSegError(MASK_MODEL_CONSISTENCY)
        takes = self.reduce[0].in_channels
        if (takes, self.num_classes) != (in_channels, num_classes):
            raise RRSegError(
                f"the RegionRebalance takes {takes} feature channels and {self.num_classes} classes, but the "
                f"model's pixel classifier reads {in_channels} channels and predicts {num_classes} classes"
            )

    def table_logits(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rebalanced logits [K, C], classes [K] and presence [K] of the fixed region table (K = C, or B x C
        per image; C + 1 rows per table with ``ignored_region``, the last one the ignored pixels', its class
        ``ignore_index``). Absent rows are computed too and left out of the loss: static shapes, no host sync."""
        logits, classes, present = self._table(features, labels)
        return logits + self.log_prior.to(logits.dtype), classes, present

    def _table(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``table_logits`` without the prior."""
        # The 1x1 conv as a batched matmul: same numbers, and on CPU its backward is ~3x faster.
        b, _, h, w = features.shape
        conv, bn = self.reduce
        if not torch.is_autocast_enabled(features.device.type):  # e.g. bf16 features, float32 branch
            features = features.to(conv.weight.dtype)
        reduced = bn(torch.matmul(conv.weight.flatten(1), features.flatten(2)).view(b, -1, h, w))
        rows, ignore_index = self.num_classes, self.ignore_index
        if self.ignored_region:  # the ignored pixels are region C of the table (no pixel is left out)
            labels = labels.to(device=reduced.device, dtype=torch.long)
            _check_labels(labels, self.num_classes, self.ignore_index)
            labels = torch.where(labels == self.ignore_index, self.num_classes, labels)
            rows, ignore_index = self.num_classes + 1, -1
        regions = rows * b if self.per_image else rows
        if self.slots is not None and self.slots < regions:
            order = self.fill_order
            if self.per_image:  # each class's regions in image order, classes in fill order
                order = (torch.arange(b, device=order.device).view(1, b) * rows + order.view(-1, 1)).reshape(-1)
            table = region_slots(reduced, labels, rows, self.slots, ignore_index, self.per_image,
                                 self.align_corners, priority=order)
            means, counts, keys = table.means, table.counts, table.keys
            self.overflow += table.overflow.to(self.overflow.device)
            self.uses_slots = True
        else:
            means, counts = region_table(reduced, labels, rows, ignore_index, self.per_image, self.align_corners)
            keys = torch.arange(counts.numel(), device=counts.device)
        hidden = self.gain(means.to(reduced.dtype))
        if self.etf:  # CeCo, as released: gain -> L2-normalise -> dropout -> ETF linear -> x scale
            hidden = self.dropout(F.normalize(hidden, dim=1))
            logits = self.logit_scale * (hidden @ self.etf_weight.to(hidden.dtype).T)
        else:
            logits = self.classifier(self.dropout(hidden))
        classes = keys % rows
        if self.ignored_region:
            classes = torch.where(classes == self.num_classes, self.ignore_index, classes)
        return logits, classes, counts > 0

    def region_logits(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Rebalanced logits [K, C] and classes [K] of the regions present in this batch (reads K back)."""
        logits, classes, present = self.table_logits(features, labels)
        return logits[present], classes[present]

    @property
    def last_logits(self) -> Tensor | None:
        """Logits of the present regions of the last training call (detached; computed on access)."""
        return None if self._last is None else self._last[0][self._last[2]]

    @property
    def last_labels(self) -> Tensor | None:
        return None if self._last is None else self._last[1][self._last[2]]

    def forward(self, features: Tensor | SegOutput, labels: Tensor, logits: Tensor | None = None) -> Tensor:
        """``loss_weight`` x the region loss (+ ``consistency_weight`` x the consistency term, which needs the
        pixel logits: those of a SegOutput, or ``logits`` [B, C, h, w])."""
        if isinstance(features, SegOutput):  # as a term of a Criterion
            if features.features is None:
                raise ValueError(f"{self.name}: the model output carries no pre-classifier features")
            if isinstance(features, MaskOutput) and self.consistency_weight:
                raise RRSegError(MASK_MODEL_CONSISTENCY)
            logits = features.logits if logits is None else logits
            features = features.features
        if not self.training:
            return features.new_zeros(())
        if self.consistency_weight and logits is None:
            raise ValueError(f"{self.name}: consistency_weight needs the pixel logits (a SegOutput, or logits=)")
        pixel_logits = logits
        raw, classes, present = self._table(features, labels)
        logits = raw + self.log_prior.to(raw.dtype)
        self._last = (logits.detach(), classes, present)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32 for the softmax
        target = torch.full_like(logits, (1.0 - self.smooth) / (self.num_classes - 1))
        if self.ignored_region:  # the ignored region: loss 0 (mmseg's ignore_index), counted in the mean below
            scored = present & (classes != self.ignore_index)
            target.scatter_(1, torch.where(scored, classes, 0).unsqueeze(1), self.smooth)
        else:
            scored = present
            target.scatter_(1, classes.unsqueeze(1), self.smooth)
        per_region = -(target * F.log_softmax(logits, dim=1)).sum(1)
        # Mean over present regions; with none (all pixels ignored) the loss is 0 and the graph stays connected.
        loss = torch.where(scored, per_region, 0.0).sum() / present.sum().clamp(min=1)
        if not self.consistency_weight:
            return self.loss_weight * loss
        consistency = self._consistency(raw, classes, present, pixel_logits, labels)
        return self.loss_weight * loss + self.consistency_weight * consistency

    def _consistency(self, raw: Tensor, classes: Tensor, present: Tensor, pixel_logits: Tensor,
                     labels: Tensor) -> Tensor:
        """The release's ``loss_consistency`` over the present regions (see the module docstring)."""
        keys = present.nonzero().squeeze(1)  # the present rows (table rows or slots): reads K back
        region_logits = raw[keys]  # [K, C], without the prior
        labels = labels.to(device=raw.device, dtype=torch.long)
        labelled = labels != self.ignore_index
        row = torch.where(labelled, labels, self.num_classes if self.ignored_region else 0)
        # each class's (and the ignored region's, as class C) column among the K present regions
        region_class = torch.where(classes[keys] == self.ignore_index, self.num_classes, classes[keys])
        column = torch.zeros(self.num_classes + 1, dtype=torch.long, device=raw.device)
        column[region_class] = torch.arange(keys.numel(), device=raw.device)
        sim = torch.einsum("bchw,kc->bkhw", pixel_logits.to(region_logits.dtype), region_logits)
        sim = resize_logits(sim, labels)  # = resizing the pixel logits first (bilinear is linear)
        sim = sim.to(torch.promote_types(sim.dtype, torch.float32))
        p = F.softmax(sim, dim=1).gather(1, column[row].unsqueeze(1)).squeeze(1)
        return -(torch.log(p + 1e-12) * labelled).sum() / (labelled.sum() + 1e-12)

    def extra_repr(self) -> str:
        released_cnn = (
            f", prior_eps={self.prior_eps}, ignored_region={self.ignored_region}, "
            f"consistency_weight={self.consistency_weight}"
        ) if self.prior_eps is not None or self.ignored_region or self.consistency_weight else ""
        return (
            f"num_classes={self.num_classes}, smooth={self.smooth}, loss_weight={self.loss_weight}, "
            f"per_image={self.per_image}, etf={self.etf}{released_cnn}"
        )
