"""The mask2former family: the training output the set criterion and RR read, eval scores at the input size (the
release's semantic inference of the upsampled masks), the release's head sizes, frozen BatchNorm, the demo
backbone's weights, RR on the mask features, and a one-line error without transformers."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from rrseg.errors import RRSegError
from rrseg.models import build_model
from rrseg.models.mask2former import Mask2Former, semantic_inference
from rrseg.models.weights import load_pretrained, read_state_dict, resolve_weights
from rrseg.rebalance import RROptions
from rrseg.types import MaskOutput

NUM_CLASSES = 6
COUNTS = [500, 300, 120, 40, 9, 2]
SIZE = 64


def _labels(batch: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (batch, size // 8, size // 8), generator=g)
    labels = labels.repeat_interleave(8, 1).repeat_interleave(8, 2)
    labels[:, :4, :] = 255
    return labels


@pytest.fixture(scope="module")
def tiny() -> Mask2Former:
    torch.manual_seed(0)
    return build_model("mask2former_tiny", NUM_CLASSES)


def test_training_output_carries_every_layer_and_the_mask_features(tiny):
    model = tiny.train()
    captured = {}
    hook = model.decode_head.transformer.register_forward_pre_hook(
        lambda m, args: captured.update(mask_features=args[1]))
    try:
        out = model(torch.randn(2, 3, SIZE, SIZE))
    finally:
        hook.remove()
    assert isinstance(out, MaskOutput) and out.logits is None and out.aux_logits is None
    q = model.decode_head.config.num_queries
    assert out.class_logits.shape == (2, q, NUM_CLASSES + 1)
    assert out.mask_logits.shape == (2, q, SIZE // 4, SIZE // 4)
    assert model.output_stride == 4 and model.aux_loss_weight == 0.0 and model.training_output == "masks"
    # deep supervision: the prediction on the learnable queries and every layer but the last
    assert len(out.aux_outputs) == model.decode_head.config.decoder_layers - 1 == 2
    for c, m in out.aux_outputs:
        assert c.shape == out.class_logits.shape and m.shape == out.mask_logits.shape
    # the features are the very tensor the masks are made from (what RR pools)
    assert out.features is captured["mask_features"]
    assert out.features.shape == (2, model.feature_channels, SIZE // 4, SIZE // 4)
    assert model.feature_channels == 32


def test_eval_scores_are_the_semantic_inference_of_the_upsampled_masks_at_the_input_size(tiny):
    model = tiny
    images = torch.randn(1, 3, 80, 48)  # not multiples of 32: padded to 96 x 64, cropped back
    with torch.no_grad():
        model.eval()
        scores = model(images)
        model.train()  # the same numbers in train mode (no dropout, frozen BatchNorm): the raw predictions
        out = model(F.pad(images, (0, 16, 0, 16)))
    model.eval()
    assert scores.shape == (1, NUM_CLASSES, 80, 48)
    masks = F.interpolate(out.mask_logits, size=(96, 64), mode="bilinear", align_corners=False)[..., :80, :48]
    torch.testing.assert_close(scores, semantic_inference(out.class_logits, masks))
    assert (scores >= 0).all() and (scores.sum(1) <= model.decode_head.config.num_queries).all()
    model.train()
    with pytest.raises(RRSegError, match=r"training input 80x48"):
        model(images)


def test_the_releases_head_at_full_size():
    """configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml, built on the meta device."""
    with torch.device("meta"):
        r50 = build_model("mask2former_r50", 150)
        swin = build_model("mask2former_swin_t", 150)
    for model in (r50, swin):
        cfg = model.decode_head.config
        assert (cfg.hidden_dim, cfg.mask_feature_size, cfg.feature_size) == (256, 256, 256)
        assert (cfg.num_queries, cfg.decoder_layers, cfg.num_attention_heads) == (100, 10, 8)
        assert (cfg.dim_feedforward, cfg.encoder_layers, cfg.encoder_feedforward_dim) == (2048, 6, 1024)
        assert (cfg.dropout, cfg.pre_norm, cfg.enforce_input_projection, cfg.common_stride) == (0.0, False, False, 4)
        assert len(model.decode_head.transformer.decoder.layers) == 9
        assert model.decode_head.class_predictor.out_features == 151
        assert model.size_divisor == 32 and model.pad_eval
    # detectron2's R50: torchvision's layout (7x7 stem), undilated, every BatchNorm frozen
    bb = r50.backbone.model
    assert bb.pretrained_cfg["architecture"] == "resnet50" and bb.conv1.kernel_size == (7, 7)
    assert r50.backbone.channels == [256, 512, 1024, 2048]
    assert all(m.stride == (1, 1) and m.dilation == (1, 1) for m in bb.layer4[1:].modules()
               if isinstance(m, torch.nn.Conv2d))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in r50.modules())
    assert "FrozenBatchNorm2d" in {type(m).__name__ for m in bb.modules()}
    assert swin.backbone.channels == [96, 192, 384, 768]


def test_frozen_batchnorm_keeps_its_statistics_in_training(tiny):
    model = tiny.train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model(torch.randn(2, 3, SIZE, SIZE) * 3 + 1)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [n for n, _ in model.named_parameters() if ".bn" in n or n.endswith("conv1.1.weight")]


def test_the_demo_backbone_loads_into_the_small_model():
    torch.manual_seed(0)
    model = build_model("mask2former_small", 30, pretrained="rrseg:demo_small_backbone")
    result = load_pretrained(build_model("mask2former_small", 30), "rrseg:demo_small_backbone", verbose=False)
    assert not result.missing and result.target == "backbone.model"
    assert all(k.endswith("num_batches_tracked") for k in result.unexpected)  # frozen BN keeps no count
    file = read_state_dict(resolve_weights("rrseg:demo_small_backbone"))
    own = model.backbone.model.state_dict()
    for k, v in file.items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)


def test_rr_attaches_to_the_mask_features_and_reaches_the_backbone():
    torch.manual_seed(0)
    model = build_model("mask2former_tiny", NUM_CLASSES)
    model.set_rebalance(RROptions().build(model.feature_channels, NUM_CLASSES, COUNTS))
    model.train()
    assert model.rebalance.reduce[0].in_channels == model.feature_channels == 32
    out = model(torch.randn(2, 3, SIZE, SIZE))
    loss = model.rebalance(out, _labels())
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert model.decode_head.class_predictor.weight.grad is None  # not on RR's path
    state = model.inference_state_dict()
    assert not any(k.startswith("rebalance.") for k in state)
    plain = build_model("mask2former_tiny", NUM_CLASSES)
    plain.load_state_dict(state, strict=True)


def test_weights_round_trip(tiny, tmp_path):
    model = tiny.eval()
    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        reference = model(images)
    save_file(model.inference_state_dict(), str(tmp_path / "model.safetensors"))
    torch.manual_seed(123)
    fresh = build_model("mask2former_tiny", NUM_CLASSES).eval()
    result = load_pretrained(fresh, tmp_path / "model.safetensors", verbose=False)
    assert result.source == "rrseg" and not result.missing and not result.unexpected
    with torch.no_grad():
        assert torch.equal(fresh(images), reference)


def test_initialisation_is_hfs(tiny):
    """HF's _init_weights ran (post-order): the deformable attention's sampling-offset grid is set (a child Linear's
    default init would have zeroed it), the pixel decoder's level embedding is drawn (torch.Tensor leaves it
    uninitialised)."""
    attn = tiny.decode_head.pixel_decoder.encoder.layers[0].self_attn
    assert attn.sampling_offsets.bias.abs().sum() > 0 and (attn.sampling_offsets.weight == 0).all()
    level = tiny.decode_head.pixel_decoder.level_embed
    assert torch.isfinite(level).all() and 0.3 < level.std() < 3


def test_without_transformers_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers.models.mask2former", None)
    with pytest.raises(RRSegError, match=r"^the mask2former models need the transformers package \(.*\): "
                                         r"pip install 'rrseg\[hf\]'$"):
        build_model("mask2former_tiny", NUM_CLASSES)


def test_the_evaluators_whole_slide_and_tta_inference_take_the_scores(tiny):
    from rrseg.engine.config import EvalConfig
    from rrseg.engine.evaluator import predict_probs

    images = torch.randn(1, 3, 72, 88)
    tiny.eval()
    with torch.no_grad():
        scores = tiny(images)
    whole = predict_probs(tiny, images, EvalConfig(), NUM_CLASSES)
    assert torch.equal(whole.argmax(1), scores.argmax(1))  # the release's argmax of the scores
    slide = EvalConfig(mode="slide", crop_size=[64, 64], stride=[32, 32])
    for cfg in (slide, EvalConfig(scales=[0.75, 1.0], flip=True)):
        probs = predict_probs(tiny, images, cfg, NUM_CLASSES, out_size=(36, 44))
        assert probs.shape == (1, NUM_CLASSES, 36, 44)
        torch.testing.assert_close(probs.sum(1), torch.ones(1, 36, 44))


def test_semantic_inference_is_the_papers_sum_over_queries():
    """softmax over the classes (no-object dropped) x sigmoid mask, summed over the queries: a loop."""
    g = torch.Generator().manual_seed(0)
    b, q, c, h, w = 2, 5, 4, 3, 7
    class_logits, mask_logits = torch.randn(b, q, c + 1, generator=g), torch.randn(b, q, h, w, generator=g)
    expected = torch.zeros(b, c, h, w, dtype=torch.float64)
    for i in range(b):
        for k in range(q):
            e = [float(v) for v in class_logits[i, k].double().exp()]
            for cls in range(c):
                p = e[cls] / sum(e)  # softmax over all C + 1, then the no-object column left out
                for y in range(h):
                    for x in range(w):
                        expected[i, cls, y, x] += p / (1.0 + torch.exp(-mask_logits[i, k, y, x].double()))
    torch.testing.assert_close(semantic_inference(class_logits, mask_logits).double(), expected)
