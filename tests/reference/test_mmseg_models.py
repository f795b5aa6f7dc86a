"""rrseg's paper families against mmsegmentation's own modules (make test-mmseg): tiny-width twins built from
mmseg's own configs, their checkpoint loaded by rrseg's loader, every output equal in float64 within 1e-5
relative; and every full-size paper model's mmseg checkpoint converting with no key missing or left over."""

from __future__ import annotations

import pytest

from tests.reference import families, mmseg_env

pytestmark = pytest.mark.mmseg


def _skip_unless(family: families.Family) -> None:
    if family.needs == "mmpretrain" and not mmseg_env.mmpretrain_available():
        pytest.skip(f"mmpretrain: {mmseg_env.mmpretrain_unavailable_reason()}")


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_tiny_family_equals_mmseg(name, tmp_path):
    from tests.reference import mmseg_outputs, rrseg_outputs

    family = families.FAMILIES[name]
    _skip_unless(family)
    ref, keys = mmseg_outputs.outputs(family)
    got = rrseg_outputs.outputs(family, families.fill_state_dict(keys), tmp_path)
    rrseg_outputs.assert_matches(got, ref)


FULL = [(rrseg, config, family) for family in families.FAMILIES.values() for rrseg, config in family.rrseg_full.items()]


@pytest.mark.parametrize(("rrseg_name", "config", "family"), FULL, ids=[f[0] for f in FULL])
def test_full_size_checkpoint_converts_and_agrees(rrseg_name, config, family, tmp_path):
    """The paper model of mmseg's own config (150 classes): every key of its checkpoint is used, every tensor of
    rrseg's model filled, and the eval logits agree in float64 (BEiT at a 64-pixel input, the size both are
    built for, instead of 640: the same modules, a smaller position table)."""
    import torch

    from tests.reference import mmseg_outputs, rrseg_outputs

    _skip_unless(family)
    small_beit = "beit" in config
    overrides = dict(backbone=dict(img_size=(64, 64))) if small_beit else None
    model, keys = mmseg_outputs.build_filled(mmseg_outputs.model_config(config, overrides))
    options = dict(img_size=64) if small_beit else {}
    rr = rrseg_outputs.load_mmseg(rrseg_name, families.fill_state_dict(keys), tmp_path, num_classes=150, **options)
    rr = rr.double().eval()
    model.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if not small_beit:  # whole-image inference at a size that is no multiple of 32 (nor of Swin's window)
        x = torch.nn.functional.interpolate(x, size=(72, 88), mode="bilinear")
    with torch.no_grad():
        ref = model.whole_inference(x, [dict(img_shape=x.shape[-2:], ori_shape=x.shape[-2:])])
        got = rr(x)
    rrseg_outputs.assert_matches({"eval_logits": got}, {"eval_logits": ref})


def test_confusion_metrics_equal_mmseg_iou_metric():
    """rrseg's per-class IoU, accuracy, Dice, precision and aAcc against mmseg's IoUMetric arithmetic
    (``intersect_and_union`` per image, ``total_area_to_metrics`` over the sum), with ignored pixels, a class
    that never occurs (NaN in both) and one that is only predicted."""
    import numpy as np
    import torch
    from mmseg.evaluation.metrics import IoUMetric

    from rrseg.metrics.confusion import ConfusionMatrix

    num_classes = 6
    g = torch.Generator().manual_seed(3)
    cm = ConfusionMatrix(num_classes, ignore_index=255)
    areas = [torch.zeros(num_classes, dtype=torch.float64) for _ in range(4)]
    for _ in range(5):
        label = torch.randint(0, 4, (40, 56), generator=g)  # classes 4, 5 never labelled
        label[torch.rand(label.shape, generator=g) < 0.2] = 255
        pred = torch.where(torch.rand(label.shape, generator=g) < 0.6, label.clamp(max=3),
                           torch.randint(0, 5, label.shape, generator=g))  # class 5 never predicted
        cm.update(pred, label)
        for total, a in zip(areas, IoUMetric.intersect_and_union(pred, label, num_classes, 255)):
            total += a.double()
    ref = IoUMetric.total_area_to_metrics(*areas, metrics=["mIoU", "mDice", "mFscore"])
    got = cm.compute()
    np.testing.assert_allclose(got.aAcc, ref["aAcc"], rtol=1e-12)
    for ours, theirs in [("iou", "IoU"), ("acc", "Acc"), ("dice", "Dice"), ("precision", "Precision")]:
        np.testing.assert_allclose(getattr(got, ours), np.asarray(ref[theirs], dtype=np.float64), rtol=1e-12,
                                   equal_nan=True, err_msg=ours)
    np.testing.assert_allclose(got.mIoU, np.nanmean(ref["IoU"]), rtol=1e-12)
