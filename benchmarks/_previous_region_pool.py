"""The pre-rewrite ``region_pool`` (rrseg 10b0d71), frozen here as the benchmark's "today" path.

It keeps only the regions present in the batch: a bincount + cumsum compaction and a [K, B*h*w] weight table
for the K present regions, so its shapes depend on the data and it reads values back to the host (the
labelled-pixel ``nonzero``, the label range check, the present-class ``nonzero``). The package now pools into
a fixed table (``rrseg.rebalance.region_table``); this copy exists only so the GPU benchmark can put the two
side by side. Not used by the package.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rrseg.rebalance import RegionPool


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


def previous_region_pool(
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
