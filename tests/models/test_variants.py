"""Every registered model keeps its name, options (names, order, defaults) and architecture.

The snapshot was taken from the per-variant factory functions before they became variant tables; a change
here is a change of a model (or of its user-facing options), so it must be deliberate.
"""

from __future__ import annotations

import hashlib
import inspect

import pytest
from torch import nn

from rrseg.errors import RRSegError
from rrseg.models import ModelVariant, build_model, get_model_factory, list_models, model_options, register_variants

OPTIONS = {
    "deeplabv3plus_r101": {"output_stride": 8, "channels": 512, "aux_head": True, "atrous_rates": None,
        "drop_path_rate": 0.0, "dropout": 0.1},
    "deeplabv3plus_r50": {"output_stride": 8, "channels": 512, "aux_head": True, "atrous_rates": None,
        "drop_path_rate": 0.0, "dropout": 0.1},
    "deeplabv3plus_small": {"output_stride": 8, "channels": 64, "aux_head": True, "atrous_rates": (3, 6, 9),
        "dropout": 0.1},
    "deeplabv3plus_tiny": {"output_stride": 8, "channels": 32, "aux_head": True, "atrous_rates": None, "dropout": 0.1},
    "mask2former_r50": {"num_queries": 100, "decoder_layers": 10, "freeze_bn": True},
    "mask2former_small": {"num_queries": 16, "decoder_layers": 4, "freeze_bn": True},
    "mask2former_swin_t": {"num_queries": 100, "decoder_layers": 10, "drop_path_rate": 0.3},
    "mask2former_tiny": {"num_queries": 8, "decoder_layers": 3, "freeze_bn": True},
    "ocrnet_hr18": {"channels": 512, "ocr_channels": 256},
    "ocrnet_hr48": {"channels": 512, "ocr_channels": 256},
    "ocrnet_tiny": {"channels": 32, "ocr_channels": 16},
    "upernet_beit_b": {"img_size": 640, "drop_path_rate": 0.1, "channels": 768, "aux_head": True, "dropout": 0.1},
    "upernet_beit_l": {"img_size": 640, "drop_path_rate": 0.2, "channels": 1024, "aux_head": True, "dropout": 0.1},
    "upernet_beit_tiny": {"img_size": 64, "drop_path_rate": 0.1, "channels": 32, "aux_head": True, "dropout": 0.1},
    "upernet_convnext_t": {"drop_path_rate": 0.4, "channels": 512, "aux_head": True, "dropout": 0.1},
    "upernet_convnext_tiny": {"drop_path_rate": 0.1, "channels": 32, "aux_head": True, "dropout": 0.1},
    "upernet_swin_b": {"img_size": 512, "drop_path_rate": 0.3, "channels": 512, "aux_head": True, "dropout": 0.1},
    "upernet_swin_t": {"img_size": 512, "drop_path_rate": 0.3, "channels": 512, "aux_head": True, "dropout": 0.1},
    "upernet_swin_tiny": {"img_size": 64, "drop_path_rate": 0.1, "channels": 32, "aux_head": True, "dropout": 0.1},
}

# (parameter count, state_dict entries, sha256 of the state_dict's "key:shape" lines) for 6 classes, no RR
ARCH = {
    "deeplabv3plus_small": (1395276, 153, "0bae3fece7fe905a"),
    "deeplabv3plus_tiny": (250740, 208, "c3883972c75a45b6"),
    "mask2former_small": (1587351, 202, "1c99ba939aaf5152"),
    "mask2former_tiny": (191751, 189, "85203f459db9cfc1"),
    "ocrnet_tiny": (317084, 376, "ac2a2383b46212fb"),
    "upernet_beit_tiny": (211916, 160, "260915f1ca2ba36c"),
    "upernet_convnext_tiny": (401276, 142, "0712bab0b54baa95"),
    "upernet_swin_tiny": (745246, 207, "3d58df542f7b7b58"),
}


def _fingerprint(model: nn.Module) -> tuple[int, int, str]:
    sd = model.state_dict()
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    return sum(p.numel() for p in model.parameters()), len(sd), hashlib.sha256(text.encode()).hexdigest()[:16]


def test_every_model_keeps_its_options_in_order():
    # smp's architectures take smp's keyword arguments, whatever smp's version: tests/models/test_smp_models.py
    assert [name for name in list_models() if not name.startswith("smp_")] == sorted(OPTIONS)
    for name, options in OPTIONS.items():
        got = model_options(name)
        assert list(got.items()) == list(options.items()), name  # order too: it is the error message's


@pytest.mark.parametrize("name", sorted(ARCH))
def test_small_models_keep_their_architecture(name):
    model = build_model(name, 6)
    assert model.name == name
    assert _fingerprint(model) == ARCH[name]


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_model_is_a_documented_factory(name):
    factory = get_model_factory(name)
    assert factory.__name__ == name and factory.__doc__ and factory.__doc__.strip()
    params = inspect.signature(factory).parameters
    assert next(iter(params)) == "num_classes" and "rebalance" not in params  # the branch is attached after


def test_option_errors_are_one_line():
    with pytest.raises(RRSegError, match=r"^ocrnet_tiny: unknown option 'chanels'; options: channels, ocr_channels$"):
        build_model("ocrnet_tiny", 4, chanels=8)
    with pytest.raises(RRSegError, match=r"^deeplabv3plus_small: unknown option 'drop_path_rate'"):
        build_model("deeplabv3plus_small", 4, drop_path_rate=0.1)
    with pytest.raises(RRSegError, match=r"^deeplabv3plus_r50: DeepLabV3\+ output_stride must be 8 or 16, got 4$"):
        build_model("deeplabv3plus_r50", 4, output_stride=4)
    # a factory called directly refuses an unknown option as any Python function does
    with pytest.raises(TypeError, match="img_sise"):
        get_model_factory("upernet_swin_tiny")(4, img_sise=64)


def test_a_variant_table_typo_fails_at_registration():
    def builder(name: str, num_classes: int, *, backbone: object, channels: int) -> None:
        raise AssertionError("never built")

    bad = {
        "chanels not taken by builder": ModelVariant("x", arch=dict(backbone=None), options=dict(chanels=8)),
        "channels missing for builder": ModelVariant("x", arch=dict(backbone=None), options={}),
        r"channels set twice \(arch and options\)": ModelVariant(
            "x", arch=dict(backbone=None, channels=8), options=dict(channels=8)
        ),
    }
    for message, variant in bad.items():
        with pytest.raises(ValueError, match=f"^model variant '_bad_tiny': {message}$"):
            register_variants(builder, {"_bad_tiny": variant})
    with pytest.raises(ValueError, match="registered twice"):
        register_variants(builder, {"ocrnet_tiny": ModelVariant("x", dict(backbone=None), dict(channels=8))})
    assert "_bad_tiny" not in list_models()


def test_a_family_is_one_module_and_the_heads_keep_their_old_names():
    """Heads of one family live in its module; ``rrseg.models.heads.<name>`` still finds them."""
    from rrseg.models import beit, deeplabv3plus, heads, ocrnet, upernet

    moved = {"UPerHead": upernet, "OCRHead": ocrnet, "DepthwiseSeparableASPPHead": deeplabv3plus,
             "DeepLabV3PlusHead": deeplabv3plus, "Feature2Pyramid": beit}
    for name, family in moved.items():
        assert getattr(heads, name) is getattr(family, name), name
    with pytest.raises(AttributeError, match="NoSuchHead"):
        heads.NoSuchHead  # noqa: B018
