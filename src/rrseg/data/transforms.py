"""mmsegmentation's ADE20K training / test pipelines on torchvision.transforms.v2.

Each transform takes ``(image, mask)`` as ``tv_tensors.Image`` (uint8 [3, H, W]) and ``tv_tensors.Mask``
([H, W]); masks are only ever resized with nearest-neighbour interpolation, cropped, flipped or padded with
the ignore value, so no label value is ever invented. Randomness comes from torch's global generator
(seeded per DataLoader worker by PyTorch).

Training (``train_transforms``), as mmsegmentation 0.x ``configs/_base_/datasets/ade20k.py``: random
rescale of a base scale by a ratio in ``ratio_range`` keeping the aspect ratio -> random crop, retried up
to 10 times until no class covers ``cat_max_ratio`` or more of the crop (ignore excluded) -> horizontal
flip -> photometric distortion -> normalisation -> padding to the crop size (image 0 after normalisation,
mask ``ignore_index``). Test (``test_transforms``): keep-ratio resize to the base scale -> normalisation;
the mask keeps its original size by default, since metrics are computed at the original resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PadToSize",
    "PhotoMetricDistortion",
    "RandomCropCatMax",
    "RandomResizeKeepRatio",
    "ResizeKeepRatio",
    "keep_ratio_size",
    "test_transforms",
    "train_transforms",
]

# ImageNet statistics in 0-255 units, as mmsegmentation's img_norm_cfg.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"{what} must be an int or a pair, got {value!r}")
    return int(value[0]), int(value[1])


def keep_ratio_size(height: int, width: int, scale: Sequence[float]) -> tuple[int, int]:
    """mmcv.imrescale's output size: fit the long side in max(scale) and the short side in min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return int(inpt.shape[-2]), int(inpt.shape[-1])
    raise TypeError("expected a tv_tensors.Image or tv_tensors.Mask among the inputs")


def _resize(inpt: Any, size: tuple[int, int], antialias: bool) -> Any:
    if isinstance(inpt, tv_tensors.Mask):
        return F.resize(inpt, list(size), interpolation=v2.InterpolationMode.NEAREST)
    return F.resize(inpt, list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=antialias)


class RandomResizeKeepRatio(v2.Transform):
    """mmseg ``Resize(img_scale, ratio_range, keep_ratio=True)``: scale = int(base * r), r ~ U(ratio_range).

    Images use bilinear interpolation (``antialias=False`` like OpenCV, the default), masks nearest.
    """

    def __init__(
        self, scale: Sequence[int], ratio_range: Sequence[float] = (0.5, 2.0), antialias: bool = False
    ) -> None:
        super().__init__()
        self.scale = _pair(scale, "scale")
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        if not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            raise ValueError(f"ratio_range must be 0 < low <= high, got {ratio_range}")
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        lo, hi = self.ratio_range
        ratio = lo + float(torch.rand(())) * (hi - lo)
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        h, w = _image_size(flat_inputs)
        return {"size": keep_ratio_size(h, w, target)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, params["size"], self.antialias)


class ResizeKeepRatio(v2.Transform):
    """mmseg test-time ``Resize(scale, keep_ratio=True)``; masks follow only with ``resize_mask=True``."""

    def __init__(self, scale: Sequence[int], resize_mask: bool = False, antialias: bool = False):
        super().__init__()
        self.scale = _pair(scale, "scale")
        self.resize_mask = resize_mask
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        return {"size": keep_ratio_size(h, w, self.scale)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask) and not self.resize_mask:
            return inpt
        return _resize(inpt, params["size"], self.antialias)


class RandomCropCatMax(v2.Transform):
    """mmseg ``RandomCrop(crop_size, cat_max_ratio, ignore_index)``, ``crop_size`` as (height, width).

    A crop window is drawn uniformly; while the largest class (ignore excluded) covers ``cat_max_ratio`` or
    more of the labelled pixels of the window, or the window holds fewer than two classes, a new window is
    drawn, at most 10 times; the 11th window is taken as it is (mmseg behaves the same). Inputs smaller than
    the crop are cropped to their own size along that side (padding comes later).
    """

    def __init__(self, crop_size: int | Sequence[int], cat_max_ratio: float = 0.75, ignore_index: int = 255):
        super().__init__()
        self.crop_size = _pair(crop_size, "crop_size")
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = int(ignore_index)

    def _window(self, h: int, w: int) -> tuple[int, int, int, int]:
        ch, cw = self.crop_size
        top = int(torch.randint(0, max(h - ch, 0) + 1, ()))
        left = int(torch.randint(0, max(w - cw, 0) + 1, ()))
        return top, left, min(ch, h), min(cw, w)

    def _accept(self, mask: torch.Tensor, window: tuple[int, int, int, int]) -> bool:
        top, left, ch, cw = window
        # counted in the mask's own dtype, ignore included and then dropped: no filtered copy (~15x faster)
        crop = mask[..., top : top + ch, left : left + cw].reshape(-1)
        if self.ignore_index < 0:  # bincount takes no negative values
            crop = crop[crop != self.ignore_index]
        counts = torch.bincount(crop)
        if 0 <= self.ignore_index < counts.numel():
            counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return counts.numel() > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        window = self._window(h, w)
        mask = next((i for i in flat_inputs if isinstance(i, tv_tensors.Mask)), None)
        if mask is not None and self.cat_max_ratio < 1.0:
            plain = mask.as_subclass(torch.Tensor)
            for _ in range(10):
                if self._accept(plain, window):
                    break
                window = self._window(h, w)
        return {"window": window}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        top, left, ch, cw = params["window"]
        return F.crop(inpt, top, left, ch, cw)


def _eq(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    # a float 0/1 mask: torch's comparison kernels are vectorised for a float output, ~6x faster than bool
    return torch.eq(a, b, out=torch.empty_like(a))


def _frac(a: torch.Tensor) -> torch.Tensor:
    # a - floor(a) in place: equals fmod(a, 1) for a in [0, 2) and remainder(a, 1) for a in (-1, 2), exactly
    # (Sterbenz: a - 1 is exact for a in [1, 2); below 0 both compute fl(a + 1)), at a fraction of their cost
    return a.sub_(torch.floor(a))


def _hue_shift(x: torch.Tensor, shift: float) -> torch.Tensor:
    """torchvision's ``adjust_hue(x, shift)`` for float RGB ``x`` in [0, 1] (..., 3, H, W), bit for bit, ~3.5x faster.

    The same floating-point operations on the same values in the same order (RGB -> HSV as Pillow, H +=
    shift modulo 1, HSV -> RGB), arranged for the CPU: comparisons into float masks, torchvision's
    ``where(gray, 1, d)`` as ``d + gray`` (d is 0 there), fmod / remainder by 1 as ``_frac`` in the ranges
    they see, and its gather of (v, p, q, t) by sector as sums of mask products (one mask is 1, the other
    terms are +0, and every candidate is >= 0, so the sum is the picked value exactly). The test checks
    equality with torchvision on every shift mmseg draws.
    """
    r, g, b = x.unbind(-3)
    v = torch.maximum(torch.maximum(r, g), b)
    chroma = v - torch.minimum(torch.minimum(r, g), b)
    gray = _eq(chroma, 0.0)
    s = chroma / (v + gray)
    div = chroma.add_(gray)
    rc, gc, bc = (v - r).div_(div), (v - g).div_(div), (v - b).div_(div)
    on_r = _eq(v, r)
    on_g = _eq(v, g).mul_(1.0 - on_r)
    on_b = (1.0 - on_r).sub_(on_g)
    hg = rc.add(2.0).sub_(bc).mul_(on_g)
    hr = bc.sub_(gc).mul_(on_r)
    hb = gc.add_(4.0).sub_(rc).mul_(on_b)
    h = _frac(hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0))
    h6 = _frac(h.add_(shift)).mul_(6)
    sector = torch.floor(h6)
    f = h6.sub_(sector)
    sxf = s * f
    one_minus_s = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
    p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
    m = [_eq(sector, float(k)) for k in range(7)]
    m[0].add_(m.pop())  # sector 6 (h6 rounded up to 6) is sector 0, as torchvision's remainder by 6
    out = torch.empty_like(x)
    # per sector 0..5: R = v q p p t v, G = t v v q p p, B = p p t v v q
    for plane, picks in zip(out.unbind(-3), ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))):
        torch.mul(picks[0], m[0], out=plane)
        for value, mask in zip(picks[1:], m[1:]):
            plane.addcmul_(value, mask)
    return out


class PhotoMetricDistortion(v2.Transform):
    """mmseg ``PhotoMetricDistortion`` on uint8 RGB images; each step applied with probability 0.5.

    brightness: add U(-delta, delta); contrast: multiply by U(contrast_range) (no mean blending, as mmseg),
    either second or last; saturation: scale HSV saturation by U(saturation_range) (done in RGB, exact up
    to rounding); hue: shift by randint(-hue_delta, hue_delta) OpenCV hue units (2 degrees each). Values are
    clipped to 0..255 and truncated to integers after every step, as mmseg's uint8 round trips.
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        super().__init__()
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)

    @staticmethod
    def _coin() -> bool:
        return bool(torch.randint(0, 2, ()))

    @staticmethod
    def _uniform(lo: float, hi: float) -> float:
        return lo + float(torch.rand(())) * (hi - lo)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        # Draw in mmseg's order so that the probabilities match exactly.
        d = self.brightness_delta
        brightness = self._uniform(-d, d) if self._coin() else None
        contrast_first = self._coin()
        contrast_a = self._uniform(*self.contrast_range) if contrast_first and self._coin() else None
        saturation = self._uniform(*self.saturation_range) if self._coin() else None
        hue = None
        if self._coin() and self.hue_delta:
            hue = int(torch.randint(-self.hue_delta, self.hue_delta, ()))
        contrast_b = self._uniform(*self.contrast_range) if not contrast_first and self._coin() else None
        return {"brightness": brightness, "contrast": contrast_a if contrast_first else contrast_b,
                "contrast_first": contrast_first, "saturation": saturation, "hue": hue}

    @staticmethod
    def _clip(x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(0.0, 255.0).floor_()

    @staticmethod
    def _saturate(x: torch.Tensor, alpha: float) -> torch.Tensor:
        # Scaling S of HSV by alpha at fixed H and V moves each channel towards V: c' = V - k (V - c); the
        # per-pixel cap k <= V / (V - min) is S' <= 1, i.e. mmseg's clip of S at 255. Gray pixels (V = min)
        # stay V whatever k is, so their division by the clamped 1e-6 needs no special case.
        r, g, b = x.unbind(-3)
        v = torch.maximum(torch.maximum(r, g), b)
        chroma = v - torch.minimum(torch.minimum(r, g), b)
        k = torch.div(v, chroma.clamp_min_(1e-6), out=chroma).clamp_max_(alpha)
        d = torch.sub(v.unsqueeze(-3), x).mul_(k.unsqueeze(-3))
        return torch.sub(v.unsqueeze(-3), d, out=d)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        # a planar float32 copy (a decoded image is a channels-last view): contiguous channel planes, and the
        # steps below work in place
        x = inpt.as_subclass(torch.Tensor).to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        if params["brightness"] is not None:
            x = self._clip(x.add_(params["brightness"]))
        if params["contrast_first"] and params["contrast"] is not None:
            x = self._clip(x.mul_(params["contrast"]))
        rgb = x.shape[-3] == 3
        if params["saturation"] is not None and rgb:  # a gray image has no saturation to scale
            x = self._clip(self._saturate(x, params["saturation"]))
        if params["hue"] is not None:
            shift = params["hue"] / 180.0
            x = self._clip((_hue_shift(x / 255.0, shift) if rgb else F.adjust_hue(x / 255.0, shift)).mul_(255.0))
        if not params["contrast_first"] and params["contrast"] is not None:
            x = self._clip(x.mul_(params["contrast"]))
        return tv_tensors.wrap(x.to(inpt.dtype), like=inpt)


class PadToSize(v2.Transform):
    """Pad bottom and right up to ``size`` (height, width): images with ``fill``, masks with ``mask_fill``."""

    def __init__(self, size: int | Sequence[int], fill: float = 0.0, mask_fill: int = 255):
        super().__init__()
        self.size = _pair(size, "size")
        self.fill = fill
        self.mask_fill = mask_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        return {"pad": [0, 0, max(self.size[1] - w, 0), max(self.size[0] - h, 0)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["pad"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.fill
        return F.pad(inpt, params["pad"], fill=fill)


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    # ToDtype with a plain dtype converts images only; scale=False keeps 0-255 units, as mmseg's mean/std.
    return [v2.ToDtype(torch.float32, scale=False), v2.Normalize(mean=list(mean), std=list(std))]


def train_transforms(
    crop_size: int | Sequence[int] = (512, 512),
    scale: Sequence[int] = (2048, 512),
    ratio_range: Sequence[float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
    flip_prob: float = 0.5,
    photometric: bool = True,
    antialias: bool = False,
) -> v2.Compose:
    """The mmseg ADE20K training pipeline (``crop_size`` as (height, width), ``scale`` as (long, short))."""
    steps: list[v2.Transform] = [
        RandomResizeKeepRatio(scale, ratio_range, antialias=antialias),
        RandomCropCatMax(crop_size, cat_max_ratio, ignore_index),
        v2.RandomHorizontalFlip(flip_prob),
    ]
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps += _normalize(mean, std)
    steps.append(PadToSize(crop_size, fill=0.0, mask_fill=ignore_index))
    return v2.Compose(steps)


def test_transforms(
    scale: Sequence[int] | None = (2048, 512),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_mask: bool = False,
    antialias: bool = False,
) -> v2.Compose:
    """Keep-ratio resize to ``scale`` (None: no resize), normalisation; the mask keeps its size by default."""
    steps: list[v2.Transform] = []
    if scale is not None:
        steps.append(ResizeKeepRatio(scale, resize_mask=resize_mask, antialias=antialias))
    steps += _normalize(mean, std)
    return v2.Compose(steps)
