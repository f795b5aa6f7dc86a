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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.rebalance.counts import ClassCounts, CountsLike
from rrseg.types import SegOutput

__all__ = ["RegionPool", "RegionRebalance", "region_pool", "simplex_etf"]


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
    """
    if features.dim() != 4 or labels.dim() != 3 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"region_pool expects features [B, D, h, w] and labels [B, H, W] with the same B, "
            f"got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    b, d, h, w = features.shape
    big_h, big_w = labels.shape[-2:]
    device = features.device
    labels = labels.to(device=device, dtype=torch.long)
    acc_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32

    flat = labels.reshape(-1)
    keep = flat != ignore_index
    pix = keep.nonzero().squeeze(1)  # indices of labelled pixels in [B*H*W]
    cls = flat[pix]
    lo, hi = torch.stack(torch.aminmax(cls)).tolist() if cls.numel() else (0, 0)  # one host sync, not two
    if lo < 0 or hi >= num_classes:
        bad = cls[(cls < 0) | (cls >= num_classes)][0].item()
        raise ValueError(f"label value {bad} is outside [0, {num_classes}) and is not ignore_index={ignore_index}")

    img = pix // (big_h * big_w)
    key = img * num_classes + cls if per_image else cls
    # Compact the present keys with a bincount + cumsum table: O(pixels), no sort.
    key_counts = torch.bincount(key, minlength=b * num_classes if per_image else num_classes)
    present = key_counts > 0
    region_keys = present.nonzero().squeeze(1)
    counts = key_counts[region_keys]
    region_of_pixel = (present.cumsum(0) - 1)[key]
    k = region_keys.numel()
    if k == 0:
        empty = features.new_zeros((0, d))
        idx = torch.zeros(0, dtype=torch.long, device=device)
        return RegionPool(empty, idx, idx.clone(), idx.clone())

    # Adjoint of separable bilinear upsampling: every labelled pixel sends its 4 bilinear weights back to
    # the feature cells it was interpolated from, into the row of its region.
    y = (pix // big_w) % big_h
    x = pix % big_w
    y0, y1, wy0, wy1 = (t[y] for t in _source_taps(big_h, h, align_corners, device))
    x0, x1, wx0, wx1 = (t[x] for t in _source_taps(big_w, w, align_corners, device))
    weights = torch.zeros(k, b * h * w, dtype=acc_dtype, device=device)
    row = region_of_pixel * (b * h * w) + img * (h * w)
    flat_w = weights.view(-1)
    for yy, wy in ((y0, wy0), (y1, wy1)):
        for xx, wx in ((x0, wx0), (x1, wx1)):
            flat_w.index_add_(0, row + yy * w + xx, (wy * wx).to(acc_dtype))

    feats = features.to(acc_dtype).permute(0, 2, 3, 1).reshape(b * h * w, d)
    sums = weights @ feats  # [K, D]
    means = (sums / counts.to(acc_dtype).unsqueeze(1)).to(features.dtype)
    if per_image:
        return RegionPool(means, region_keys % num_classes, region_keys // num_classes, counts)
    return RegionPool(means, region_keys, torch.full_like(region_keys, -1), counts)


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


class RegionRebalance(nn.Module):
    """The auxiliary region-rebalance loss, a drop-in term for any segmentation model.

    Call it with the tensor that feeds the model's pixel classifier ([B, D, h, w]) and the labels
    ([B, H, W], ``ignore_index`` for unlabelled pixels); it returns ``loss_weight`` times the region loss.
    Defaults are the released ones: reduce (1x1 conv to 128, no bias, BatchNorm), gain (Linear 128 -> 512,
    ReLU), Dropout 0.1, Linear 512 -> C, all frozen at random init (BatchNorm statistics still update);
    log prior from region (image) counts; soft targets with true-class probability 0.5; weight 1.0.

    Switches: ``trainable`` (the branch learns too), ``per_image`` (one region per class per image rather
    than per batch), ``prior`` ("region", "pixel" or "none"), ``etf`` (CeCo: fixed simplex ETF classifier,
    L2-normalised region features, logits scaled by ``logit_scale``, default smoothing 1.0).
    In eval mode it returns 0 without computing anything. The last region logits and labels are kept in
    ``last_logits`` / ``last_labels`` (detached) for inspection.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        counts: CountsLike | ClassCounts | None = None,
        *,
        prior: str = "region",
        reduce_channels: int = 128,
        hidden_channels: int = 512,
        dropout: float = 0.1,
        smooth: float | None = None,
        loss_weight: float = 1.0,
        trainable: bool = False,
        per_image: bool = False,
        etf: bool = False,
        logit_scale: float = 5.0,
        ignore_index: int = 255,
        align_corners: bool = True,
        name: str = "loss_rr",
    ) -> None:
        super().__init__()
        if prior not in ("region", "pixel", "none"):
            raise ValueError(f"prior must be 'region', 'pixel' or 'none', got {prior!r}")
        if prior != "none" and counts is None:
            raise ValueError(f"prior={prior!r} needs class counts (or use prior='none')")
        smooth = (1.0 if etf else 0.5) if smooth is None else float(smooth)
        if not 0.0 < smooth <= 1.0:
            raise ValueError(f"smooth is the true-class target probability and must be in (0, 1], got {smooth}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.smooth = smooth
        self.loss_weight = float(loss_weight)
        self.per_image = per_image
        self.etf = etf
        self.logit_scale = float(logit_scale)
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        self.name = name

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
            log_prior = cc.log_prior("pixel" if prior == "pixel" else "region")
        self.register_buffer("log_prior", log_prior)
        self.last_logits: Tensor | None = None
        self.last_labels: Tensor | None = None

    def region_logits(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Rebalanced logits [K, C] and classes [K] of the regions in this batch."""
        # The 1x1 conv as a batched matmul: same numbers, and on CPU its backward is ~3x faster.
        b, _, h, w = features.shape
        conv, bn = self.reduce
        if not torch.is_autocast_enabled(features.device.type):  # e.g. bf16 features, float32 branch
            features = features.to(conv.weight.dtype)
        reduced = bn(torch.matmul(conv.weight.flatten(1), features.flatten(2)).view(b, -1, h, w))
        regions = region_pool(
            reduced, labels, self.num_classes, self.ignore_index, self.per_image, self.align_corners
        )
        hidden = self.dropout(self.gain(regions.features))
        if self.etf:
            logits = self.logit_scale * F.normalize(hidden, dim=1) @ self.etf_weight.to(hidden.dtype).T
        else:
            logits = self.classifier(hidden)
        return logits + self.log_prior.to(logits.dtype), regions.labels

    def forward(self, features: Tensor | SegOutput, labels: Tensor) -> Tensor:
        if isinstance(features, SegOutput):  # as a term of a Criterion
            if features.features is None:
                raise ValueError(f"{self.name}: the model output carries no pre-classifier features")
            features = features.features
        if not self.training:
            return features.new_zeros(())
        logits, region_labels = self.region_logits(features, labels)
        self.last_logits, self.last_labels = logits.detach(), region_labels.detach()
        if region_labels.numel() == 0:  # all pixels ignored: no region, but keep the graph connected
            return features.sum() * 0.0
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32 for the softmax
        target = torch.full_like(logits, (1.0 - self.smooth) / (self.num_classes - 1))
        target.scatter_(1, region_labels.unsqueeze(1), self.smooth)
        loss = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, smooth={self.smooth}, loss_weight={self.loss_weight}, "
            f"per_image={self.per_image}, etf={self.etf}"
        )
