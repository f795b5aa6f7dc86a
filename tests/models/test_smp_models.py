"""smp's architectures by name (rrseg.models.smp): each computes what smp's own model computes with the same weights,
its training features are the exact input of smp's pixel classifier (what RR pools), its options are smp's keyword
arguments, and ``pretrained="timm"`` gives a ``tu-`` encoder timm's weights."""

from __future__ import annotations

import inspect

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F

from rrseg.errors import RRSegError
from rrseg.models import build_model, list_models, model_options
from rrseg.models.smp import ARCHITECTURES
from rrseg.rebalance import RROptions
from rrseg.types import SegOutput

ENCODER = "tu-test_resnet"  # timm's test-sized ResNet (0.5M parameters), which has hub weights
SMALL = {"smp_unet": {"decoder_channels": [16, 16, 16, 16, 16]}, "smp_fpn": {"decoder_pyramid_channels": 32,
         "decoder_segmentation_channels": 32}, "smp_deeplabv3plus": {"decoder_channels": 32},
         "smp_upernet": {"decoder_channels": 32}, "smp_segformer": {"decoder_segmentation_channels": 32}}


def _pair(name: str, num_classes: int = 4) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the rrseg model, smp's own model of the same architecture holding the same weights)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes, encoder_name=ENCODER, **SMALL[name])
    reference = smp.create_model(ARCHITECTURES[name], ENCODER, encoder_weights=None, classes=num_classes,
                                 **SMALL[name])
    state = model.state_dict()
    mapped = {f"encoder.{k[len('backbone.'):]}": v for k, v in state.items() if k.startswith("backbone.")}
    mapped |= {k[len("decode_head."):]: v for k, v in state.items() if k.startswith("decode_head.")}
    reference.load_state_dict(mapped)  # strict: every key of smp's model, none left over
    assert len(mapped) == len(state)
    return model, reference


def test_the_names():
    assert {"smp_unet", "smp_fpn", "smp_deeplabv3plus", "smp_upernet", "smp_segformer"} <= set(list_models("smp_"))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_outputs_are_smps_and_features_are_its_classifiers_input(name):
    model, reference = _pair(name)
    x = torch.randn(2, 3, 64, 96)
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
        # a size that is no multiple of the encoder's output stride: zero-padded at the bottom and right to one,
        # as smp needs, and cropped back
        odd = torch.randn(1, 3, 50, 70)
        stride = reference.encoder.output_stride
        padded = reference(F.pad(odd, (0, -70 % stride, 0, -50 % stride)))[..., :50, :70]
        torch.testing.assert_close(model(odd), padded, rtol=0, atol=0)

    model.train(), reference.train()
    seen = []
    hook = reference.segmentation_head[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    expected = reference(x)  # (the same BatchNorm step and dropout draws)
    hook.remove()
    assert isinstance(out, SegOutput) and out.aux_logits is None
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=0)  # smp's head: logits at the input size
    torch.testing.assert_close(out.features, seen[0], rtol=0, atol=0)
    assert out.features.shape[1] == model.feature_channels == reference.segmentation_head[0].in_channels


def test_rr_attaches_and_trains_the_decoder_features():
    model, _ = _pair("smp_fpn", num_classes=3)
    model.set_rebalance(RROptions().build(model.feature_channels, 3, [5, 3, 1]))
    labels = torch.randint(0, 3, (2, 64, 64))
    out = model.train()(torch.randn(2, 3, 64, 64))
    loss = model.rebalance(out, labels)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.decode_head.decoder.p5.weight.grad.abs().sum() > 0  # RR's gradient reaches the decoder
    assert not any(k.startswith("rebalance.") for k in model.inference_state_dict())


def test_options_are_smps_keyword_arguments():
    options = model_options("smp_unet")
    smp_keywords = inspect.signature(smp.Unet.__init__).parameters
    assert set(options) <= set(smp_keywords)
    assert options["encoder_name"] == "tu-resnet34" and options["encoder_depth"] == 5
    assert tuple(options["decoder_channels"]) == (256, 128, 64, 32, 16)
    assert not {"encoder_weights", "classes", "in_channels", "activation", "aux_params"} & set(options)
    assert "upsampling" in model_options("smp_segformer") and "decoder_atrous_rates" in model_options(
        "smp_deeplabv3plus")
    with pytest.raises(RRSegError, match=r"^smp_unet: unknown option 'encoder_weights'; options: encoder_name, "):
        build_model("smp_unet", 3, encoder_weights="imagenet")


def test_an_unknown_encoder_is_one_line():
    with pytest.raises(RRSegError, match=r"^smp_fpn: encoder_name 'tu-test_resnett': timm has no model "
                                         r"'test_resnett'; did you mean tu-test_resnet"):
        build_model("smp_fpn", 3, encoder_name="tu-test_resnett")
    with pytest.raises(RRSegError, match=r"^smp_fpn: encoder_name 'resnet344' is not an smp encoder; did you mean "
                                         r"resnet34"):
        build_model("smp_fpn", 3, encoder_name="resnet344")


def test_timm_weights_go_into_a_tu_encoder(hf_hub_cache, tmp_path):
    g = torch.Generator().manual_seed(3)
    weights = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in timm.create_model("test_resnet").state_dict().items()}
    file = hf_hub_cache("timm/test_resnet.r160_in1k", weights)  # timm's default tag of test_resnet
    for spec in ("timm", str(file)):  # through timm's hub cache, and the same file given as a path
        model = build_model("smp_unet", 3, pretrained=spec, encoder_name=ENCODER, **SMALL["smp_unet"])
        own = model.backbone.model.state_dict()
        assert own and all(torch.equal(v, weights[k]) for k, v in own.items() if v.is_floating_point()), spec
    with pytest.raises(RRSegError, match="not a timm model built by name"):  # smp's own encoders: no timm weights
        build_model("smp_unet", 3, pretrained="timm", encoder_name="resnet18", **SMALL["smp_unet"])
