"""region_pool against the released computation: upsample, then a pixels x classes one-hot mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rrseg.rebalance import region_pool


def naive_region_pool(features, labels, num_classes, ignore_index=255, per_image=False, align_corners=True):
    """The released path: upsample to the label size, one-hot over classes, matmul, divide by counts."""
    b, d = features.shape[:2]
    up = F.interpolate(features.double(), size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    pix = up.permute(0, 2, 3, 1).reshape(b, -1, d)  # [B, HW, D]
    lab = labels.reshape(b, -1)
    feats, classes, images = [], [], []
    if per_image:
        for i in range(b):
            for c in range(num_classes):
                onehot = (lab[i] == c).double()
                if onehot.sum() > 0:
                    feats.append(onehot @ pix[i] / onehot.sum())
                    classes.append(c)
                    images.append(i)
    else:
        flat_pix, flat_lab = pix.reshape(-1, d), lab.reshape(-1)
        onehot = F.one_hot(torch.where(flat_lab == ignore_index, num_classes, flat_lab), num_classes + 1)
        onehot = onehot[:, :num_classes].double()
        n = onehot.sum(0)
        for c in range(num_classes):
            if n[c] > 0:
                feats.append(onehot[:, c] @ flat_pix / n[c])
                classes.append(c)
                images.append(-1)
    if not feats:
        return torch.zeros(0, d, dtype=torch.float64), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.stack(feats), torch.tensor(classes), torch.tensor(images)


SHAPES = [
    # (h, w, H, W): labels larger, equal, smaller than features; non-square; degenerate sizes
    (8, 8, 32, 32),
    (5, 7, 19, 13),
    (16, 12, 16, 12),
    (16, 12, 6, 5),
    (9, 4, 3, 11),
    (1, 1, 5, 4),
    (4, 6, 1, 1),
    (3, 5, 1, 9),
]


def random_labels(b, h, w, num_classes, gen, ignore_frac=0.1):
    labels = torch.randint(0, num_classes, (b, h, w), generator=gen)
    labels[torch.rand(b, h, w, generator=gen) < ignore_frac] = 255
    return labels


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_released_computation(shape, per_image, align_corners):
    h, w, big_h, big_w = shape
    gen = torch.Generator().manual_seed(hash(shape) % 2**31)
    features = torch.randn(3, 6, h, w, generator=gen)
    labels = random_labels(3, big_h, big_w, 5, gen)
    got = region_pool(features, labels, 5, per_image=per_image, align_corners=align_corners)
    ref_f, ref_c, ref_i = naive_region_pool(features, labels, 5, per_image=per_image, align_corners=align_corners)
    assert torch.equal(got.labels, ref_c)
    assert got.features.dtype == torch.float32
    torch.testing.assert_close(got.features.double(), ref_f, rtol=1e-5, atol=1e-6)
    if per_image:
        assert torch.equal(got.image_index, ref_i)
    else:
        assert (got.image_index == -1).all()
    valid = labels != 255
    assert int(got.pixel_counts.sum()) == int(valid.sum())


def test_batch_of_one_single_class_and_ignored_image():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(1, 4, 6, 6, generator=gen)
    labels = torch.full((1, 24, 24), 3)
    labels[0, :5] = 255
    got = region_pool(features, labels, 7)
    ref_f, _, _ = naive_region_pool(features, labels, 7)
    assert got.labels.tolist() == [3]
    torch.testing.assert_close(got.features.double(), ref_f, rtol=1e-5, atol=1e-6)

    # one image entirely ignored: it contributes no region and no pixels
    features2 = torch.randn(2, 4, 6, 6, generator=gen)
    labels2 = random_labels(2, 24, 24, 4, gen)
    labels2[1] = 255
    got2 = region_pool(features2, labels2, 4, per_image=True)
    assert (got2.image_index == 0).all()
    ref_f2, _, _ = naive_region_pool(features2, labels2, 4, per_image=True)
    torch.testing.assert_close(got2.features.double(), ref_f2, rtol=1e-5, atol=1e-6)


def test_everything_ignored_gives_no_region():
    features = torch.randn(2, 4, 6, 6, requires_grad=True)
    got = region_pool(features, torch.full((2, 12, 12), 255), 4)
    assert got.features.shape == (0, 4) and got.labels.numel() == 0


def test_custom_ignore_index_and_bad_label():
    features = torch.randn(1, 3, 4, 4)
    labels = torch.randint(0, 3, (1, 8, 8))
    labels[0, 0] = -1
    got = region_pool(features, labels, 3, ignore_index=-1)
    ref_f, _, _ = naive_region_pool(features, torch.where(labels == -1, 255, labels), 3)
    torch.testing.assert_close(got.features.double(), ref_f, rtol=1e-5, atol=1e-6)
    labels[0, 1, 1] = 3
    with pytest.raises(ValueError, match="label value 3"):
        region_pool(features, labels, 3, ignore_index=-1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    """Half inputs are accumulated in float32: the error is the output rounding of ``dtype``.

    Stated tolerance: relative 1e-2 (bfloat16 has an 8-bit mantissa, 2**-8 = 0.4 %), absolute 2e-3
    (float16) / 1e-2 (bfloat16), against the float64 reference on the same (half-rounded) inputs.
    """
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 8, 7, 9, generator=gen).to(dtype)
    labels = random_labels(2, 28, 36, 6, gen)
    got = region_pool(features, labels, 6)
    assert got.features.dtype == dtype
    ref_f, ref_c, _ = naive_region_pool(features.double(), labels, 6)
    assert torch.equal(got.labels, ref_c)
    atol = 2e-3 if dtype == torch.float16 else 1e-2
    torch.testing.assert_close(got.features.double(), ref_f, rtol=1e-2, atol=atol)


@pytest.mark.parametrize("per_image", [False, True])
def test_gradcheck_float64(per_image):
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = random_labels(2, 9, 7, 4, gen)
    assert torch.autograd.gradcheck(
        lambda f: region_pool(f, labels, 4, per_image=per_image).features, (features,)
    )


def test_gradients_match_released_computation():
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(2, 5, 6, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = random_labels(2, 23, 17, 4, gen)
    weights = torch.randn(4, 5, dtype=torch.float64, generator=gen)
    got = region_pool(features, labels, 4)
    (g_fast,) = torch.autograd.grad((got.features * weights[got.labels]).sum(), features)
    ref_f, ref_c, _ = naive_region_pool(features, labels, 4)
    (g_ref,) = torch.autograd.grad((ref_f * weights[ref_c]).sum(), features)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-7, atol=1e-10)


@pytest.mark.slow
def test_never_materialises_label_resolution_tensors():
    """No single allocation is larger than one int64 label-sized tensor; the released path allocates the
    upsampled map (D x label size) and a pixels x classes one-hot, 16x and 20x larger here."""
    from torch.profiler import ProfilerActivity, profile

    features = torch.randn(2, 128, 32, 32)
    labels = torch.randint(0, 20, (2, 512, 512))
    label_bytes = labels.numel() * 8
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        region_pool(features, labels, 20)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert biggest <= label_bytes, biggest
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        naive_region_pool(features.float(), labels, 20)
    assert max(e.cpu_memory_usage for e in prof.events()) >= 16 * label_bytes


@pytest.mark.parametrize("per_image", [False, True])
def test_gradient_reaches_the_features_in_their_own_layout(per_image):
    """The pooled products run in the features' [B, D, h*w] layout, so the gradient flowing back into the layer
    before (RR's BatchNorm) is contiguous: a channels-last gradient makes that BatchNorm's CPU backward ~6x slower."""
    from rrseg.rebalance import region_slots, region_table

    gen = torch.Generator().manual_seed(4)
    features = torch.randn(2, 6, 8, 8, generator=gen, requires_grad=True)
    labels = random_labels(2, 32, 32, 5, gen)
    for pool in (lambda f: region_table(f, labels, 5, per_image=per_image)[0],
                 lambda f: region_slots(f, labels, 5, 3, per_image=per_image).means):
        seen: list[bool] = []
        inner = features * 1.0  # a non-leaf, as RR's BatchNorm output: its gradient is passed on as it arrives
        inner.register_hook(lambda g, seen=seen: seen.append(g.is_contiguous()))
        pool(inner).square().sum().backward()
        assert seen == [True]
