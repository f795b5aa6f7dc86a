"""One shared model tester (smp style): every family runs the same checks on its tiny variant."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from rrseg.errors import RRSegError
from rrseg.models import build_model
from rrseg.models.weights import load_pretrained
from rrseg.rebalance import REGION_LOSSES, RegionRebalance
from rrseg.types import SegOutput

NUM_CLASSES = 6
COUNTS = [500, 300, 120, 40, 9, 2]  # image counts, long-tailed
SIZE = 64


@dataclass(frozen=True)
class Case:
    name: str
    aux_stride: int  # stride of the auxiliary logits
    fixed_size: bool = False  # BEiT: relative position tables fix the input size
    layer_ids: bool = False  # defines layer-decay ids


CASES = [
    Case("deeplabv3plus_tiny", aux_stride=8),
    Case("deeplabv3plus_small", aux_stride=8),
    Case("ocrnet_tiny", aux_stride=4),
    Case("upernet_swin_tiny", aux_stride=16),
    Case("upernet_convnext_tiny", aux_stride=16, layer_ids=True),
    Case("upernet_beit_tiny", aux_stride=16, fixed_size=True, layer_ids=True),
]


def _labels(batch: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (batch, size // 8, size // 8), generator=g)
    labels = labels.repeat_interleave(8, 1).repeat_interleave(8, 2)  # blocky regions
    labels[:, :4, :] = 255  # some ignored pixels
    return labels


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def built(request):
    """(case, model with RR, the same model's weights without RR) built once per family."""
    case = request.param
    torch.manual_seed(0)
    model = build_model(case.name, NUM_CLASSES)
    model.set_rebalance(RegionRebalance(model.feature_channels, NUM_CLASSES, COUNTS))
    return case, model


def test_train_output_is_segoutput_with_classifier_input(built):
    case, model = built
    model.train()
    images = torch.randn(2, 3, SIZE, SIZE)
    out = model(images)
    assert isinstance(out, SegOutput)
    stride = model.output_stride
    assert out.logits.shape == (2, NUM_CLASSES, SIZE // stride, SIZE // stride)
    assert out.features.shape == (2, model.feature_channels, SIZE // stride, SIZE // stride)
    a = SIZE // case.aux_stride
    assert out.aux_logits is not None and out.aux_logits.shape == (2, NUM_CLASSES, a, a)
    assert model.aux_loss_weight == pytest.approx(0.4)
    # `features` is exactly what the pixel classifier reads: with its dropout off, conv_seg(features) = logits
    head = model.decode_head
    head.dropout.eval()
    try:
        out = model(images)
        torch.testing.assert_close(head.conv_seg(out.features), out.logits, rtol=0, atol=0)
    finally:
        head.dropout.train()


@pytest.mark.parametrize("kind", ["rr", "ceco"])
def test_rebalance_losses_are_finite_and_reach_decoder_and_backbone(built, kind):
    _, model = built
    model.train()
    rr = model.rebalance
    try:
        model.set_rebalance(REGION_LOSSES[kind]().build(model.feature_channels, NUM_CLASSES, COUNTS))
        assert model.rebalance.etf is (kind == "ceco")
        model.zero_grad(set_to_none=True)
        out = model(torch.randn(2, 3, SIZE, SIZE))
        loss = model.rebalance(out, _labels())
        assert torch.isfinite(loss) and loss.item() > 0
        loss.backward()
        head_grads = [p.grad for n, p in model.decode_head.named_parameters() if "conv_seg" not in n]
        assert any(g is not None and g.abs().sum() > 0 for g in head_grads), (
            "RR loss does not reach the decoder"
        )
        bb_grads = [p.grad for p in model.backbone.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in bb_grads), (
            "RR loss does not reach the backbone"
        )
        # the released branch is frozen at its random initialisation
        assert all(p.grad is None for p in model.rebalance.parameters())
        # the classifier is not on the RR path
        assert model.decode_head.conv_seg.weight.grad is None
    finally:
        model.rebalance = rr
        model.zero_grad(set_to_none=True)


def test_full_training_loss_backward(built):
    _, model = built
    model.train()
    model.zero_grad(set_to_none=True)
    labels = _labels()
    out = model(torch.randn(2, 3, SIZE, SIZE))

    def ce(logits):
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels, ignore_index=255)

    loss = ce(out.logits) + model.aux_loss_weight * ce(out.aux_logits) + model.rebalance(out, labels)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    model.zero_grad(set_to_none=True)


def test_eval_output_identical_with_and_without_rebalance(built):
    case, model = built
    state = model.inference_state_dict()
    assert not any(k.startswith("rebalance.") for k in state)
    assert any(k.startswith("rebalance.") for k in model.state_dict())
    plain = build_model(case.name, NUM_CLASSES)
    assert plain.rebalance is None
    plain.load_state_dict(state, strict=True)  # an exported checkpoint needs nothing from RR
    model.eval()
    plain.eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        with_rr, without = model(images), plain(images)
    assert with_rr.shape == (2, NUM_CLASSES, SIZE, SIZE)
    assert torch.equal(with_rr, without)
    # and RR returns 0 in eval without computing anything
    assert model.rebalance(SegOutput(with_rr, torch.zeros(2, model.feature_channels, 4, 4)), _labels()) == 0


def test_eval_logits_are_upsampled_decoder_logits(built):
    _, model = built
    images = torch.randn(1, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        logits = model(images)
        model.train()
        for m in model.modules():  # train-mode outputs without dropout / BN updates: eval numerics
            if (
                isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.BatchNorm2d))
                or "DropPath" in type(m).__name__
            ):
                m.eval()
        train_logits = model(images).logits
    model.eval()
    expected = F.interpolate(train_logits, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected)


def test_input_sizes(built):
    case, model = built
    model.eval()
    with torch.no_grad():
        if case.fixed_size:
            out = model(torch.randn(1, 3, 48, 40))  # smaller than the built size: padded, then cropped
            assert out.shape == (1, NUM_CLASSES, 48, 40)
            with pytest.raises(RRSegError, match="larger than"):
                model(torch.randn(1, 3, SIZE + 32, SIZE))
        else:
            out = model(torch.randn(1, 3, 80, 48))  # not multiples of 32: padded, then cropped
            assert out.shape == (1, NUM_CLASSES, 80, 48)
            out = model(torch.randn(1, 3, 96, 128))  # another multiple of 32 than the built one
            assert out.shape == (1, NUM_CLASSES, 96, 128)
    model.train()
    with pytest.raises(RRSegError, match=r"training input 80x48"):
        model(torch.randn(2, 3, 80, 48))


def test_weights_round_trip(built, tmp_path):
    case, model = built
    model.eval()
    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        reference = model(images)

    # whole model as safetensors (what an exported inference checkpoint is)
    save_file(model.inference_state_dict(), str(tmp_path / "model.safetensors"))
    torch.manual_seed(123)
    fresh = build_model(case.name, NUM_CLASSES).eval()
    result = load_pretrained(fresh, tmp_path / "model.safetensors", verbose=False)
    assert result.source == "rrseg" and not result.missing and not result.unexpected
    with torch.no_grad():
        assert torch.equal(fresh(images), reference)

    # backbone only, timm format (.pth, weights_only), wrapped as many checkpoints are
    torch.save({"state_dict": model.backbone.model.state_dict()}, tmp_path / "backbone.pth")
    torch.manual_seed(321)
    fresh = build_model(case.name, NUM_CLASSES, pretrained=None)
    result = load_pretrained(fresh, tmp_path / "backbone.pth", verbose=False)
    assert result.source == "timm" and result.target == "backbone.model"
    assert not result.unexpected
    for k, v in model.backbone.model.state_dict().items():
        assert torch.equal(fresh.backbone.model.state_dict()[k], v), k
    assert all(
        k.startswith(("decode_head", "auxiliary_head", "backbone.norms", "neck")) for k in result.missing
    )

    # build_model(pretrained=...) loads too
    again = build_model(case.name, NUM_CLASSES, pretrained=str(tmp_path / "model.safetensors")).eval()
    with torch.no_grad():
        assert torch.equal(again(images), reference)


def test_shape_mismatch_is_refused_with_key_and_shapes(built, tmp_path):
    case, model = built
    state = model.backbone.model.state_dict()
    key = next(k for k, v in state.items() if v.dim() >= 2)
    bad = dict(state)
    bad[key] = torch.zeros(*[s + 1 for s in state[key].shape])
    torch.save(bad, tmp_path / "bad.pth")
    fresh = build_model(case.name, NUM_CLASSES)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(RRSegError) as err:
        load_pretrained(fresh, tmp_path / "bad.pth", verbose=False)
    msg = str(err.value)
    assert key in msg and str(tuple(bad[key].shape)) in msg and str(tuple(state[key].shape)) in msg
    # nothing was loaded
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_layer_ids_and_no_weight_decay(built):
    case, model = built
    names = [n for n, _ in model.named_parameters()]
    nwd = model.no_weight_decay()
    assert nwd <= set(names)
    if "swin" in case.name or "beit" in case.name:
        assert any("relative_position_bias_table" in n for n in nwd)
    if not case.layer_ids:
        assert model.num_layers is None
        with pytest.raises(RRSegError, match="no layer ids"):
            model.layer_id(names[0])
        return
    ids = {n: model.layer_id(n) for n in names}
    assert min(ids.values()) == 0 and max(ids.values()) == model.num_layers - 1
    assert all(ids[n] == model.num_layers - 1 for n in names if not n.startswith("backbone.model."))
    if "beit" in case.name:
        assert ids["backbone.model.cls_token"] == 0
        assert ids["backbone.model.patch_embed.proj.weight"] == 0
        for n, i in ids.items():
            m = re.match(r"backbone\.model\.blocks\.(\d+)\.", n)
            if m:
                assert i == int(m.group(1)) + 1
        assert model.num_layers == len(model.backbone.model.blocks) + 2
    else:  # ConvNeXt, mmseg stage-wise: stem and downsampling 0, stage i -> i + 1
        assert ids["backbone.model.stem.0.weight"] == 0
        assert ids["backbone.model.stages.1.downsample.1.weight"] == 0
        assert ids["backbone.model.stages.2.blocks.0.conv_dw.weight"] == 3
        assert model.num_layers == 8
