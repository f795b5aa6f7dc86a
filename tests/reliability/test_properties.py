"""Property-based tests (hypothesis) on random shapes and random bytes: region pooling against the released
upsample + one-hot computation, the confusion matrix against a numpy reference (and merging in any order),
and the file readers: whatever the bytes, the only exception is an RRSegError naming the file.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from rrseg.data.base import read_image
from rrseg.data.folder import load_folder_spec
from rrseg.data.labels import read_label
from rrseg.engine.config import load_config
from rrseg.errors import RRSegError
from rrseg.metrics import ConfusionMatrix
from rrseg.rebalance import ClassCounts, region_pool
from tests.rebalance.test_region_pool import naive_region_pool

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ region pooling


@st.composite
def pool_inputs(draw):
    b, d = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    big_h, big_w = draw(st.integers(1, 14)), draw(st.integers(1, 14))  # larger, equal or smaller than h, w
    num_classes = draw(st.integers(1, 6))
    ignore_index = draw(st.sampled_from([255, -1, num_classes]))
    ignore_frac = draw(st.sampled_from([0.0, 0.2, 0.7, 1.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    features = torch.randn(b, d, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (b, big_h, big_w), generator=g)
    labels[torch.rand(b, big_h, big_w, generator=g) < ignore_frac] = ignore_index
    return features, labels, num_classes, ignore_index


@SETTINGS
@given(inputs=pool_inputs(), per_image=st.booleans(), align_corners=st.booleans())
def test_region_pool_equals_upsample_then_one_hot_mean(inputs, per_image, align_corners):
    features, labels, num_classes, ignore_index = inputs
    got = region_pool(features, labels, num_classes, ignore_index, per_image=per_image, align_corners=align_corners)
    want_feats, want_classes, want_images = naive_region_pool(features, labels, num_classes, ignore_index,
                                                              per_image, align_corners)
    assert got.labels.tolist() == want_classes.tolist()
    assert got.image_index.tolist() == (want_images.tolist() if per_image else [-1] * len(want_classes))
    torch.testing.assert_close(got.features, want_feats.to(got.features.dtype), rtol=1e-10, atol=1e-10)
    keep = labels != ignore_index
    if per_image:
        pairs = zip(want_images.tolist(), want_classes.tolist())
        want_counts = [int(((labels[i] == c) & keep[i]).sum()) for i, c in pairs]
    else:
        want_counts = [int(((labels == c) & keep).sum()) for c in want_classes.tolist()]
    assert got.pixel_counts.tolist() == want_counts


# ------------------------------------------------------------------------------------------ metrics


@st.composite
def segmentations(draw, num_classes: int, ignore_index: int):
    shape = draw(st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    label = rng.integers(0, num_classes, shape)
    label[rng.random(shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = ignore_index
    pred = rng.integers(0, num_classes, shape)
    return torch.from_numpy(pred), torch.from_numpy(label)


def reference_matrix(pairs, num_classes: int, ignore_index: int) -> np.ndarray:
    mat = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, label in pairs:
        p, lab = pred.numpy().ravel(), label.numpy().ravel()
        keep = lab != ignore_index
        np.add.at(mat, (lab[keep], p[keep]), 1)
    return mat


@st.composite
def metric_case(draw):
    num_classes = draw(st.integers(1, 7))
    ignore_index = draw(st.sampled_from([255, num_classes, -1]))
    batches = draw(st.lists(segmentations(num_classes, ignore_index), min_size=3, max_size=3))
    return num_classes, ignore_index, batches


@SETTINGS
@given(case=metric_case())
@pytest.mark.parametrize("validate", [True, False])
def test_confusion_matrix_against_numpy(case, validate):
    num_classes, ignore_index, batches = case
    cm = ConfusionMatrix(num_classes, ignore_index, validate_args=validate)  # both the checked and the sync-free path
    for pred, label in batches:
        cm.update(pred, label)
    mat = reference_matrix(batches, num_classes, ignore_index)
    m = cm.compute()
    assert np.array_equal(m.mat, mat)
    tp = np.diag(mat).astype(float)
    fp, fn = mat.sum(0) - tp, mat.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        acc = np.where(mat.sum(1) > 0, tp / mat.sum(1), np.nan)
    np.testing.assert_allclose(m.iou, iou, equal_nan=True)
    np.testing.assert_allclose(m.acc, acc, equal_nan=True)
    total = mat.sum()
    if total:
        assert m.aAcc == pytest.approx(tp.sum() / total)
        assert m.mIoU == pytest.approx(np.nanmean(iou))
    else:
        assert np.isnan(m.aAcc) and np.isnan(m.mIoU)


@SETTINGS
@given(case=metric_case())
def test_confusion_matrix_merge_is_associative_and_commutative(case):
    num_classes, ignore_index, batches = case

    def cm(*parts):
        out = ConfusionMatrix(num_classes, ignore_index)
        for pred, label in parts:
            out.update(pred, label)
        return out

    a, b, c = batches
    left = cm(a).merge(cm(b)).merge(cm(c)).mat
    right = cm(a).merge(cm(b).merge(cm(c))).mat
    swapped = cm(c).merge(cm(a)).merge(cm(b)).mat
    together = cm(a, b, c).mat
    assert torch.equal(left, right) and torch.equal(left, swapped) and torch.equal(left, together)


# ------------------------------------------------------------------------------------------ file readers


def _png_bytes(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    if mode == "P":
        im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.astype(np.uint8).tobytes())
        im.putpalette(list(range(256)) * 3)
    elif mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16))
    else:
        im = Image.fromarray(arr.astype(np.uint8), mode=mode)
    im.save(buf, format="PNG")
    return buf.getvalue()


VALID_LABEL = _png_bytes(np.arange(12 * 10).reshape(12, 10) % 7, "L")


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (40, 90, 200)).save(buf, format="JPEG")
    return buf.getvalue()


VALID_JPEG = _jpeg_bytes()


@st.composite
def damaged_bytes(draw, valid: bytes):
    """Random bytes, or a valid file with bytes changed, cut short or both."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def _only_rrseg_errors(reader, data: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"file{suffix}"
        path.write_bytes(data)
        try:
            return reader(path)
        except RRSegError as e:
            message = str(e)
            assert "\n" not in message and str(path) in message, message
            return None


@SETTINGS
@given(data=damaged_bytes(VALID_LABEL))
def test_read_label_never_fails_with_anything_but_rrseg_error(data):
    label = _only_rrseg_errors(read_label, data, ".png")
    assert label is None or (isinstance(label, np.ndarray) and label.ndim == 2)


@SETTINGS
@given(data=damaged_bytes(VALID_JPEG))
def test_read_image_never_fails_with_anything_but_rrseg_error(data):
    image = _only_rrseg_errors(read_image, data, ".jpg")
    assert image is None or (image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8)


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_text_readers_never_fail_with_anything_but_rrseg_error(data):
    """Counts files, configs and dataset descriptions from random bytes / random text."""
    _only_rrseg_errors(lambda p: ClassCounts.load(p), data, ".txt")
    _only_rrseg_errors(lambda p: ClassCounts.load(p), data, ".json")
    _only_rrseg_errors(load_config, data, ".yaml")
    _only_rrseg_errors(load_folder_spec, data, ".yaml")


@SETTINGS
@given(mode=st.sampled_from(["L", "P", "I;16"]), shape=st.tuples(st.integers(1, 24), st.integers(1, 24)),
       seed=st.integers(0, 2**31 - 1))
def test_index_pngs_round_trip(mode, shape, seed):
    top = 65535 if mode == "I;16" else 255
    arr = np.random.default_rng(seed).integers(0, top + 1, shape)
    assume(arr.size > 1 or mode != "I;16")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "label.png"
        path.write_bytes(_png_bytes(arr, mode))
        label = read_label(path)
    assert label.shape == shape and np.array_equal(label.astype(np.int64), arr)
    if mode != "I;16":
        assert label.dtype == np.uint8
