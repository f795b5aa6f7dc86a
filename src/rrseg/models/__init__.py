"""Segmentation models behind one interface (:class:`Segmentor`), built by name.

>>> from rrseg.models import build_model
>>> from rrseg.rebalance import RegionRebalance
>>> model = build_model("upernet_swin_t", num_classes=150)
>>> model.set_rebalance(RegionRebalance(model.feature_channels, 150, counts="ade20k"))  # RR, for training

Families, one module each (builder, the heads only it uses, variant table): DeepLabV3+ (``deeplabv3plus``),
OCRNet (``ocrnet``), UPerNet with Swin / ConvNeXt (``upernet``), BEiT UPerNet (``beit``), Mask2Former
(``mask2former``, mask classification on HF transformers' decoders) and segmentation_models_pytorch's
architectures (``smp``: ``smp_unet``, ``smp_fpn``, ...); ``list_models()`` gives every name. A model outside rrseg
registers its builder with ``@register_model`` (docs/CONTRIBUTING.md).
"""

# The families register their variants when imported. Listed here, as timm's models/__init__.py lists its
# model files: a new family is its module and its name on this line.
from rrseg.models import beit, deeplabv3plus, mask2former, ocrnet, smp, upernet  # noqa: F401
from rrseg.models.registry import (
    ModelVariant,
    build_model,
    get_model_factory,
    list_models,
    model_options,
    paper_weights,
    register_model,
    register_variants,
)
from rrseg.models.segmentor import Segmentor
from rrseg.models.weights import load_pretrained, load_weights

__all__ = [
    "ModelVariant",
    "Segmentor",
    "build_model",
    "get_model_factory",
    "list_models",
    "load_pretrained",
    "load_weights",
    "model_options",
    "paper_weights",
    "register_model",
    "register_variants",
]


def __getattr__(name: str) -> object:
    if name == "build_rebalance":  # removed with build_model's rebalance=
        from rrseg.errors import RRSegError

        raise RRSegError("rrseg.models.build_rebalance was removed: build the branch with RegionRebalance(in_channels, "
                         "num_classes, counts, **options) (or RROptions(...).build(...)) and attach it with "
                         "model.set_rebalance(branch)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
