"""Inference modes against each other on a model whose answer is known: a per-pixel (1x1 conv) model."""

from __future__ import annotations

import torch

from rrseg.engine.config import EvalConfig
from rrseg.engine.evaluator import _slide, evaluate, predict_probs


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


def test_evaluate_resizes_to_the_label_and_ignores_255():
    model = PixelModel().eval()
    x = torch.randn(1, 3, 16, 16)
    label = predict_probs(model, x, EvalConfig(), 4, out_size=(16, 16)).argmax(1)
    label[0, :2] = 255
    cm = evaluate(model, [{"image": x, "label": label}], 4, EvalConfig(), torch.device("cpu"))
    metrics = cm.compute()
    assert metrics.aAcc == 1.0 and int(metrics.mat.sum()) == 16 * 14
