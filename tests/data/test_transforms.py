"""The mmseg-equivalent transforms: no invented label values, cat_max_ratio crops, exact photometric maths."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from rrseg.data import transforms as T
from rrseg.data.transforms import (
    PadToSize,
    PhotoMetricDistortion,
    RandomCropCatMax,
    RandomResizeKeepRatio,
    keep_ratio_size,
    train_transforms,
)


def pair(label: np.ndarray, image: np.ndarray | None = None) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (*label.shape, 3), dtype=np.uint8)
    return (tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
            tv_tensors.Mask(torch.from_numpy(label)))


def test_keep_ratio_size_matches_mmcv_rescale() -> None:
    # mmcv.imrescale: factor = min(long / max(h, w), short / min(h, w)); size = int(x * factor + 0.5)
    assert keep_ratio_size(512, 683, (2048, 512)) == (512, 683)
    assert keep_ratio_size(300, 400, (2048, 512)) == (512, 683)
    assert keep_ratio_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert keep_ratio_size(2000, 500, (2048, 512)) == (2048, 512)
    assert keep_ratio_size(96, 128, (64, 48)) == (48, 64)


def test_random_resize_range_and_aspect() -> None:
    image, mask = pair(np.zeros((60, 80), np.uint8))
    t = RandomResizeKeepRatio((80, 60), ratio_range=(0.5, 2.0))
    torch.manual_seed(0)
    sizes = {tuple(t(image, mask)[1].shape) for _ in range(40)}
    assert len(sizes) > 10
    for h, w in sizes:
        assert 29 <= h <= 120 and abs(w / h - 80 / 60) < 0.05


def test_no_interpolated_label_value_ever_appears() -> None:
    rng = np.random.default_rng(5)
    values = np.array([3, 50, 97, 200, 255], np.uint8)
    # fine-grained labels (2x2 blocks) so that any interpolation would create in-between values
    label = np.kron(rng.choice(values, (40, 50)), np.ones((2, 2), np.uint8)).astype(np.uint8)
    image, mask = pair(label)
    pipe = train_transforms(crop_size=(48, 48), scale=(100, 80), ratio_range=(0.5, 2.0), cat_max_ratio=0.75)
    torch.manual_seed(1)
    shapes = set()
    for _ in range(25):
        img_t, mask_t = pipe(image, mask)
        assert isinstance(mask_t, tv_tensors.Mask) and img_t.dtype == torch.float32
        assert set(np.unique(mask_t.numpy()).tolist()) <= set(values.tolist())
        shapes.add(tuple(mask_t.shape))
    assert shapes == {(48, 48)}
    big_img, big_mask = T.test_transforms(scale=(250, 200), resize_mask=True)(image, mask)
    assert big_mask.shape == big_img.shape[-2:] == (200, 250)
    assert set(np.unique(big_mask.numpy()).tolist()) <= set(values.tolist())


def test_geometry_of_image_and_mask_stays_aligned() -> None:
    # Image channel 0 encodes the label; without resizing (ratio 1) and photometric changes, every
    # crop/flip/pad must keep image and mask aligned pixel for pixel.
    rng = np.random.default_rng(6)
    label = rng.integers(0, 20, (50, 70)).astype(np.uint8)
    img = np.stack([label * 10, label, np.zeros_like(label)], -1).astype(np.uint8)
    image, mask = pair(label, img)
    pipe = train_transforms(crop_size=(64, 64), scale=(70, 50), ratio_range=(1.0, 1.0), mean=(0, 0, 0),
                            std=(1, 1, 1), photometric=False, cat_max_ratio=1.0)
    torch.manual_seed(2)
    for _ in range(10):
        img_t, mask_t = pipe(image, mask)
        assert img_t.shape == (3, 64, 64) and mask_t.shape == (64, 64)
        m = mask_t.numpy()
        valid = m != 255
        assert valid.sum() == 50 * 64  # width cropped to 64, height 50 padded to 64
        np.testing.assert_array_equal(img_t[0].numpy()[valid], m[valid] * 10.0)
        assert (img_t[:, ~valid] == 0).all() and (m[50:] == 255).all()


def reference_crop(mask: np.ndarray, crop: tuple[int, int], cat_max_ratio: float, ignore: int = 255):
    """mmseg 0.x RandomCrop.__call__, with the random offsets drawn from torch like ours."""

    def bbox():
        margin_h, margin_w = max(mask.shape[0] - crop[0], 0), max(mask.shape[1] - crop[1], 0)
        oh = int(torch.randint(0, margin_h + 1, ()))
        ow = int(torch.randint(0, margin_w + 1, ()))
        return oh, oh + crop[0], ow, ow + crop[1]

    box = bbox()
    for _ in range(10):
        seg = mask[box[0]:box[1], box[2]:box[3]]
        labels, cnt = np.unique(seg, return_counts=True)
        cnt = cnt[labels != ignore]
        if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < cat_max_ratio:
            break
        box = bbox()
    return box


def test_cat_max_ratio_crop_matches_mmseg_and_respects_the_ratio() -> None:
    # mostly class 0, a band of classes 1/2 on the right and ignore in a corner: most windows are
    # dominated by class 0, some are not.
    mask = np.zeros((120, 160), np.uint8)
    mask[:, 110:135] = 1
    mask[:, 135:] = 2
    mask[:20, :30] = 255
    image, m = pair(mask)
    crop = RandomCropCatMax((64, 64), cat_max_ratio=0.75)
    accepted = 0
    for seed in range(60):
        torch.manual_seed(seed)
        ref = reference_crop(mask, (64, 64), 0.75)
        torch.manual_seed(seed)
        _, out = crop(image, m)
        window = mask[ref[0]:ref[1], ref[2]:ref[3]]
        np.testing.assert_array_equal(out.numpy(), window)
        _, cnt = np.unique(window[window != 255], return_counts=True)
        if len(cnt) > 1 and cnt.max() / cnt.sum() < 0.75:
            accepted += 1
    # one uniform window satisfies the ratio ~25% of the time; with 10 retries nearly always
    assert accepted >= 55
    # without the ratio (1.0) the crop is a single uniform draw
    plain = RandomCropCatMax((64, 64), cat_max_ratio=1.0)
    torch.manual_seed(0)
    plain_ok = 0
    for _ in range(60):
        w = plain(image, m)[1].numpy()
        _, cnt = np.unique(w[w != 255], return_counts=True)
        plain_ok += len(cnt) > 1 and cnt.max() / cnt.sum() < 0.75
    assert plain_ok < 40


def test_crop_smaller_input_then_pad() -> None:
    image, mask = pair(np.ones((30, 100), np.uint8))
    img_t, mask_t = RandomCropCatMax((64, 64), cat_max_ratio=1.0)(image, mask)
    assert mask_t.shape == (30, 64)
    img_p, mask_p = PadToSize((64, 64), fill=0, mask_fill=255)(img_t, mask_t)
    assert mask_p.shape == (64, 64) and (mask_p[30:] == 255).all() and (img_p[:, 30:] == 0).all()
    assert (mask_p[:30] == 1).all()


def photometric(image: np.ndarray, **params) -> np.ndarray:
    p = {"brightness": None, "contrast": None, "contrast_first": True, "saturation": None, "hue": None, **params}
    img = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous())
    return PhotoMetricDistortion().transform(img, p).permute(1, 2, 0).numpy()


@pytest.fixture
def colours() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_brightness_and_contrast_are_mmseg_convert(colours: np.ndarray) -> None:
    # mmseg: np.clip(img * alpha + beta, 0, 255).astype(uint8)
    ref = np.clip(colours.astype(np.float32) + 20.7, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(photometric(colours, brightness=20.7), ref)
    ref = np.clip(colours.astype(np.float32) * 1.37, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(photometric(colours, contrast=1.37), ref)


@pytest.mark.parametrize("alpha", [0.5, 1.3, 1.5])
def test_saturation_scales_hsv_saturation(colours: np.ndarray, alpha: float) -> None:
    out = photometric(colours, saturation=alpha)
    for rgb, got in zip(colours.reshape(-1, 3) / 255.0, out.reshape(-1, 3)):
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        want = np.array(colorsys.hsv_to_rgb(h, min(1.0, s * alpha), v)) * 255
        assert np.all(np.abs(got - want) <= 1.0), (rgb * 255, got, want)


@pytest.mark.parametrize("delta", [-18, -5, 7, 17])
def test_hue_shifts_by_opencv_units(colours: np.ndarray, delta: int) -> None:
    out = photometric(colours, hue=delta)
    for rgb, got in zip(colours.reshape(-1, 3) / 255.0, out.reshape(-1, 3)):
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        want = np.array(colorsys.hsv_to_rgb((h + delta / 180.0) % 1.0, s, v)) * 255
        assert np.all(np.abs(got - want) <= 1.5), (rgb * 255, got, want)


def _torchvision_hue(x: torch.Tensor, delta: int) -> torch.Tensor:
    # the previous implementation, torchvision's float HSV round trip, as the reference
    from torchvision.transforms.v2 import functional as F

    return (F.adjust_hue(x / 255.0, delta / 180.0) * 255.0).clamp_(0, 255).floor_()


def _hard_colours(seed: int) -> torch.Tensor:
    """Random 0..255 colours (3, 48, 64), with grays, two-channel ties on each channel and the extremes."""
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, 48, 64))).float()
    x[:, :8] = x[:1, :8]               # gray: max == min
    x[1, 8:16] = x[0, 8:16]            # r == g (max ties pick R, then G)
    x[2, 16:24] = x[1, 16:24]          # g == b
    x[2, 24:32] = x[0, 24:32]          # r == b
    x[:, 32, :8] = torch.tensor([[0.0], [0.0], [255.0]])
    x[:, 33] = 255.0
    x[:, 34] = 0.0
    return x


@pytest.mark.parametrize("delta", range(-18, 18))  # every shift mmseg draws: randint(-18, 18)
def test_hue_is_torchvision_bit_for_bit(delta: int) -> None:
    x = _hard_colours(delta + 18)
    img = tv_tensors.Image(x.to(torch.uint8))
    got = PhotoMetricDistortion().transform(img, {"brightness": None, "contrast": None, "contrast_first": True,
                                                  "saturation": None, "hue": delta})
    assert torch.equal(got.as_subclass(torch.Tensor), _torchvision_hue(x, delta).to(torch.uint8))
    # the unrounded floats too, also on values that are no multiple of 1/255, batched
    from torchvision.transforms.v2 import functional as F

    y = torch.rand(2, 3, 17, 19, generator=torch.Generator().manual_seed(delta + 100))
    y[0, 1] = y[0, 0]
    assert torch.equal(T._hue_shift(y.clone(), delta / 180.0), F.adjust_hue(y, delta / 180.0))


@pytest.mark.slow
@pytest.mark.parametrize("delta", [-18, 7])
def test_hue_is_torchvision_bit_for_bit_on_every_colour(delta: int) -> None:
    c = torch.arange(256, dtype=torch.float32)
    every = torch.stack(torch.meshgrid(c, c, c, indexing="ij")).reshape(3, 4096, 4096)
    for part in every.split(1024, dim=1):
        got = (T._hue_shift(part / 255.0, delta / 180.0) * 255.0).clamp_(0, 255).floor_()
        assert torch.equal(got, _torchvision_hue(part, delta))


@pytest.mark.parametrize("alpha", [0.5, 0.77, 1.0, 1.3, 1.5])
def test_saturation_is_the_previous_formula_bit_for_bit(alpha: float) -> None:
    # reference: the HSV-free form the transform always used, written with reductions and torch.where
    x = _hard_colours(int(alpha * 100))
    v = x.amax(dim=0, keepdim=True)
    chroma = v - x.amin(dim=0, keepdim=True)
    cap = torch.where(chroma > 0, v / chroma.clamp_min(1e-6), torch.full_like(v, float("inf")))
    want = (v - torch.clamp(cap, max=alpha) * (v - x)).clamp_(0, 255).floor_().to(torch.uint8)
    # a decoded image is a channels-last view; the transform takes either layout
    for img in (x.to(torch.uint8), x.to(torch.uint8).permute(1, 2, 0).contiguous().permute(2, 0, 1)):
        got = PhotoMetricDistortion().transform(
            tv_tensors.Image(img), {"brightness": None, "contrast": None, "contrast_first": True,
                                    "saturation": alpha, "hue": None})
        assert torch.equal(got.as_subclass(torch.Tensor), want)


@pytest.mark.parametrize(("dtype", "ignore"), [(torch.uint8, 255), (torch.int64, 65535), (torch.int64, -1),
                                               (torch.uint8, 0)])
def test_cat_max_window_test_matches_a_naive_count(dtype: torch.dtype, ignore: int) -> None:
    rng = np.random.default_rng(5)
    crop = RandomCropCatMax((8, 8), cat_max_ratio=0.6, ignore_index=ignore)
    seen = set()
    for trial in range(300):
        k = int(rng.integers(1, 5))
        label = rng.integers(0, k, (12, 12))
        label[rng.random((12, 12)) < rng.random()] = ignore
        window = (int(rng.integers(0, 5)), int(rng.integers(0, 5)), 8, 8)
        top, left = window[:2]
        values = label[top : top + 8, left : left + 8].ravel()
        values = values[values != ignore]
        _, counts = np.unique(values, return_counts=True)
        want = len(counts) > 1 and counts.max() / counts.sum() < 0.6
        assert crop._accept(torch.from_numpy(label).to(dtype) if ignore >= 0 else torch.from_numpy(label), window) \
            == want, (trial, label, window)
        seen.add(want)
    assert seen == {True, False}


def test_photometric_leaves_masks_alone_and_varies() -> None:
    label = np.random.default_rng(8).integers(0, 5, (20, 20)).astype(np.uint8)
    image, mask = pair(label)
    t = PhotoMetricDistortion()
    torch.manual_seed(3)
    outs = [t(image, mask) for _ in range(8)]
    assert all(torch.equal(m, mask) for _, m in outs)
    assert len({o.numpy().tobytes() for o, _ in outs}) > 4
    assert all(o.dtype == torch.uint8 for o, _ in outs)


def test_test_transforms_keep_mask_size() -> None:
    image, mask = pair(np.zeros((60, 80), np.uint8))
    img_t, mask_t = T.test_transforms(scale=(2048, 512))(image, mask)
    assert img_t.shape == (3, 512, 683) and mask_t.shape == (60, 80)
    img_t, mask_t = T.test_transforms(scale=None)(image, mask)
    assert img_t.shape == (3, 60, 80)
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    torch.testing.assert_close(img_t, (image.float() - mean) / std)
