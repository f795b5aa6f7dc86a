"""Inference modes against each other on a model whose answer is known: a per-pixel (1x1 conv) model."""

from __future__ import annotations

import torch

from rrseg.engine.config import EvalConfig
from rrseg.engine.evaluator import Evaluator, _slide, predict_probs


class PixelModel(torch.nn.Module):
    """A 1x1 convolution: translation- and flip-equivariant, so every inference mode must agree."""

    def __init__(self, crop=None):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.crop = crop

    def forward(self, x):
        if self.crop is not None:
            assert tuple(x.shape[-2:]) == self.crop, x.shape
        return self.conv(x)


def test_slide_tta_and_whole_agree_for_a_pixel_model():
    x = torch.randn(2, 3, 40, 70)
    model = PixelModel().eval()
    whole = predict_probs(model, x, EvalConfig(), 4)
    slide = predict_probs(model, x, EvalConfig(mode="slide", crop_size=[32, 32], stride=[20, 20]), 4)
    flip = predict_probs(model, x, EvalConfig(flip=True), 4)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flip, whole, rtol=1e-5, atol=1e-6)
    assert torch.allclose(whole.sum(1), torch.ones(2, 40, 70))


def test_slide_pads_images_smaller_than_the_crop():
    x = torch.randn(1, 3, 20, 50)
    out = _slide(PixelModel(crop=(32, 32)).eval(), x, (32, 32), (16, 16), 4)
    assert out.shape == (1, 4, 20, 50)
    torch.testing.assert_close(out, PixelModel()(x), rtol=1e-5, atol=1e-6)


def _bilinear(a, size):
    """``a`` [..., h, w] resized to ``size`` as mmseg resizes logits (bilinear, half-pixel centres,
    align_corners=False, edges clamped), written out in NumPy."""
    import numpy as np

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    (y0, y1, wy), (x0, x1, wx) = axis(a.shape[-2], size[0]), axis(a.shape[-1], size[1])
    rows = a[..., y0, :] * (1 - wy)[:, None] + a[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def test_evaluate_resizes_to_the_label_and_ignores_255():
    """The model sees 12x20 images, the labels are 17x13 (taller, narrower: up- and downsampled): the logits are
    resized to the label before the argmax, pixel for pixel as the bilinear resize written out here; 255 is left
    out."""
    import numpy as np

    model = PixelModel().eval()
    x = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(1))
    weight = model.conv.weight.detach().double().numpy()[:, :, 0, 0]
    bias = model.conv.bias.detach().double().numpy()
    logits = np.einsum("oc,bchw->bohw", weight, x.double().numpy()) + bias[:, None, None]
    resized = _bilinear(logits, (17, 13))
    top2 = np.sort(resized, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-4  # no near tie that float32 could break either way
    expected = resized.argmax(1)
    assert len(np.unique(expected)) >= 3  # a prediction that a wrong resize would change
    label = torch.from_numpy(expected.copy())
    label[0, :2] = 255
    label[1, :, -3:] = 255
    cm = Evaluator(EvalConfig(), 4, device="cpu").confusion(model, [{"image": x, "label": label}])
    kept = label.numpy() != 255
    # the label is the expected prediction: every kept pixel on the diagonal, none of the 255 pixels counted
    np.testing.assert_array_equal(cm.compute().mat, np.diag(np.bincount(expected[kept], minlength=4)))
    assert int(kept.sum()) == 2 * 17 * 13 - 2 * 13 - 17 * 3


# -- the Evaluator: built once (groups ranked at construction), run as often as asked ----------------------------

def _spy_on_grouping(monkeypatch) -> list:
    """Record every ranking of classes into frequency groups (``ranked_groups`` calls it once per ranking,
    wherever it is called from)."""
    import rrseg.metrics.groups as groups_module

    calls = []
    ranking = groups_module.frequency_groups

    def spy(*args, **kwargs):
        calls.append(args)
        return ranking(*args, **kwargs)

    monkeypatch.setattr(groups_module, "frequency_groups", spy)
    return calls


def test_evaluator_ranks_the_groups_once_and_reports_as_build_report(monkeypatch):
    import json

    import numpy as np

    from rrseg.metrics.report import build_report
    from rrseg.rebalance.counts import ClassCounts

    counts = ClassCounts(np.array([9, 1, 5, 3]), np.array([100, 7, 3000, 40]))
    names = ["a", "b", "c", "d"]
    calls = _spy_on_grouping(monkeypatch)
    evaluator = Evaluator(EvalConfig(group_by="both"), 4, 255, counts, names)
    assert len(calls) == 2  # the region ranking and the pixel ranking, at construction
    model = PixelModel().eval()
    batches = [{"image": torch.randn(2, 3, 12, 20), "label": torch.randint(0, 4, (2, 12, 20))}]
    first, second = evaluator.report(model, batches), evaluator.report(model, batches)
    assert len(calls) == 2  # not again at any evaluation
    assert json.dumps(first) == json.dumps(second)
    assert list(first["group_classes"]) == ["frequent", "common", "rare", "pixel_frequent", "pixel_common",
                                            "pixel_rare"]
    # the same report, to the byte, as the groups ranked from the counts by build_report itself
    cm = evaluator.confusion(model, batches)
    by_hand = build_report(cm.compute(), names, counts.image_counts, pixel_counts=counts.pixel_counts,
                           group_by="both")
    assert json.dumps(first) == json.dumps(by_hand) == json.dumps(evaluator.report_of(cm))


def test_a_group_config_that_cannot_be_made_fails_at_construction():
    import numpy as np
    import pytest

    from rrseg.errors import RRSegError
    from rrseg.rebalance.counts import ClassCounts

    image_only = ClassCounts(np.array([9, 1, 5, 3]))
    with pytest.raises(RRSegError, match=r"^config key 'eval\.group_by': group_by 'pixel' ranks classes by pixel "
                                         r"count.*\(counts: my_counts\.json\)$"):
        Evaluator(EvalConfig(group_by="pixel"), 4, counts=image_only, counts_source="my_counts.json")
    with pytest.raises(RRSegError, match=r"^config key 'eval\.group_sizes': group sizes \(3, 2\) do not fit 4"):
        Evaluator(EvalConfig(group_sizes=[3, 2]), 4, counts=image_only)
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        Evaluator(EvalConfig(), 4, counts=image_only, class_names=["a", "b", "c"])
    assert Evaluator(EvalConfig(group_by="pixel"), 4).groups is None  # no counts: no groups, nothing to check


def test_the_trainer_ranks_its_groups_once_when_its_parts_are_built(tiny_config, monkeypatch):
    import json

    from rrseg.engine.config import load_config
    from rrseg.engine.trainer import Trainer

    calls = _spy_on_grouping(monkeypatch)
    trainer = Trainer(load_config(tiny_config("once")), device="cpu")
    trainer.setup()
    assert len(calls) == 1 and trainer.parts.evaluator.groups is not None
    first, second = trainer.evaluate(), trainer.evaluate()
    assert len(calls) == 1 and json.dumps(first) == json.dumps(second)


def test_rrseg_eval_reports_what_the_trainer_reports_for_the_same_checkpoint(tiny_config, call_rrseg, tmp_path):
    """One Evaluator for both: the same report (groups, classes, precision) from ``Trainer.evaluate`` and from
    ``rrseg eval`` on the checkpoint of that moment; bf16 autocast on the CPU changes the untrained model's
    predictions, so the precision is checked too. A bad group config stops ``rrseg eval`` before inference."""
    import json

    from rrseg.engine.config import load_config
    from rrseg.engine.trainer import Trainer
    from rrseg.io import jsonable

    cfg = tiny_config("same", train={"amp": "bf16", "progress": False, "tensorboard": False})
    trainer = Trainer(load_config(cfg), device="cpu")
    report = trainer.evaluate()
    checkpoint = trainer.save_checkpoint()
    proc = call_rrseg("eval", cfg, checkpoint, "--device", "cpu", "--out", tmp_path / "ev")
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert ev.pop("checkpoint") == str(checkpoint / "model.safetensors") and ev.pop("eval")["mode"] == "whole"
    assert json.dumps(ev) == json.dumps(jsonable({k: v for k, v in report.items() if k != "iteration"}))
    fp32 = call_rrseg("eval", cfg, checkpoint, "--device", "cpu", "--set", "train.amp=none", "--out", tmp_path / "fp")
    assert fp32.returncode == 0, fp32.stderr
    assert json.loads((tmp_path / "fp" / "report.json").read_text())["per_class"] != report["per_class"]

    bad = call_rrseg("eval", cfg, checkpoint, "--device", "cpu", "--set", "eval.group_sizes=[5,5]",
                     "--out", tmp_path / "bad")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "config key 'eval.group_sizes'" in bad.stderr
    assert not (tmp_path / "bad").exists()
