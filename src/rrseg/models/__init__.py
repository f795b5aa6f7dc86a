"""Segmentation models behind one interface (:class:`Segmentor`), built by name.

>>> from rrseg.models import build_model
>>> model = build_model("upernet_swin_t", num_classes=150,
...                     rebalance={"type": "rr", "counts": "ade20k_image_label_stats.txt"})

Families (one module each): DeepLabV3+ (``deeplabv3plus``), OCRNet (``ocrnet``), UPerNet with Swin /
ConvNeXt (``upernet``), BEiT UPerNet (``beit``), Mask2Former (``mask2former``, mask classification; needs the
``hf`` extra); ``list_models()`` gives every name.
"""

from rrseg.models import beit, deeplabv3plus, mask2former, ocrnet, upernet  # noqa: F401  (register the factories)
from rrseg.models.registry import (
    ModelVariant,
    build_model,
    get_model_factory,
    list_models,
    model_options,
    register_model,
    register_variants,
)
from rrseg.models.segmentor import Segmentor, build_rebalance
from rrseg.models.weights import load_pretrained

__all__ = [
    "ModelVariant",
    "Segmentor",
    "build_model",
    "build_rebalance",
    "get_model_factory",
    "list_models",
    "load_pretrained",
    "model_options",
    "register_model",
    "register_variants",
]
