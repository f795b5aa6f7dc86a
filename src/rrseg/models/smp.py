"""segmentation_models_pytorch's architectures as rrseg models, by name: ``smp_unet``, ``smp_fpn``,
``smp_deeplabv3plus``, ``smp_upernet``, ``smp_segformer``, ... (``list_models("smp_")``).

Each is smp's own model, built by smp (``smp.create_model``): its encoder is the :class:`Segmentor`'s backbone,
its decoder and segmentation head the decode head. ``SegOutput.features`` is the decoder's output, the tensor
smp's segmentation head reads (what RR pools, as :mod:`rrseg.integrations.smp` captures it); the logits are
what that head makes of it (its convolution and its upsampling to the input size, no activation), so a model
computes exactly what the smp model computes, in training and in evaluation.

The options are the smp class's keyword arguments, under smp's names and with smp's defaults
(``encoder_name``, ``encoder_depth``, ``decoder_channels``, ``upsampling``, ...), except:

- ``encoder_name`` defaults to ``tu-resnet34``, timm's ResNet-34 through smp's ``tu-`` encoders, so that
  ``model.pretrained: timm`` gives it ImageNet weights as it gives the other families theirs;
- no ``encoder_weights``: weights come from ``model.pretrained``, rrseg's one way to load them. ``timm`` /
  ``timm:TAG``: a ``tu-`` encoder's timm weights, fetched by timm; a local file: a timm state dict of a ``tu-``
  encoder, or an rrseg checkpoint of the same model. smp's own encoders (``resnet34``, ``efficientnet-b0``,
  ``mit_b0``, ...) start from random weights or from such a checkpoint: smp's downloads are not used;
- no ``classes`` (the config's number of classes), ``in_channels`` (RGB), ``activation`` (logits) or
  ``aux_params`` (no classification head).

Training inputs must be multiples of the encoder's output stride (32 at depth 5); evaluation pads to it.
DPT (ViT encoders, a head of its own) is not here: use :class:`rrseg.integrations.smp.RRWrapper` for it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp
from torch import Tensor, nn

from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import Segmentor

__all__ = ["DEFAULT_ENCODER", "SmpHead", "build_smp"]

DEFAULT_ENCODER = "tu-resnet34"

# rrseg name -> smp architecture (smp.create_model's name); every one ends in smp's SegmentationHead
ARCHITECTURES = {
    "smp_unet": "unet",
    "smp_unetplusplus": "unetplusplus",
    "smp_manet": "manet",
    "smp_linknet": "linknet",
    "smp_fpn": "fpn",
    "smp_pspnet": "pspnet",
    "smp_deeplabv3": "deeplabv3",
    "smp_deeplabv3plus": "deeplabv3plus",
    "smp_pan": "pan",
    "smp_upernet": "upernet",
    "smp_segformer": "segformer",
}
# smp's keyword arguments that are not options here (the module docstring says why)
_NOT_OPTIONS = ("encoder_weights", "in_channels", "classes", "activation", "aux_params")


class SmpHead(nn.Module):
    """An smp model's decoder and segmentation head behind the decode-head interface: ``forward_features`` is
    the decoder (its output: what the head's convolution reads), ``cls_seg`` smp's head as it is."""

    def __init__(self, decoder: nn.Module, segmentation_head: nn.Sequential) -> None:
        super().__init__()
        classifier = segmentation_head[0]
        if not isinstance(classifier, nn.Conv2d):
            raise ValueError(f"smp segmentation head starts with {type(classifier).__name__}, not a Conv2d")
        self.decoder = decoder
        self.segmentation_head = segmentation_head
        self.channels = classifier.in_channels

    def forward_features(self, feats: Sequence[Tensor]) -> Tensor:
        return self.decoder(list(feats))

    def cls_seg(self, features: Tensor) -> Tensor:
        return self.segmentation_head(features)


def _check_encoder(encoder_name: str) -> None:
    """A one-line error for an encoder neither smp nor timm knows (smp's own lists every encoder it has)."""
    import timm

    if encoder_name.startswith("tu-"):
        if timm.is_model(encoder_name[3:]):
            return
        close = difflib.get_close_matches(encoder_name[3:], timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('tu-' + c for c in close)}?" if close else " (timm.list_models())"
        raise ValueError(f"encoder_name {encoder_name!r}: timm has no model {encoder_name[3:]!r}{hint}")
    known = smp.encoders.get_encoder_names()
    if encoder_name not in known:
        close = difflib.get_close_matches(encoder_name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"encoder_name {encoder_name!r} is not an smp encoder{hint} "
                         "(smp.encoders.get_encoder_names(), or tu-<a timm model>)")


def build_smp(name: str, num_classes: int, *, arch: str, **options: Any) -> Segmentor:
    """smp's ``arch`` with ``options`` (its keyword arguments), no encoder weights, ``num_classes`` logits."""
    _check_encoder(str(options.get("encoder_name", DEFAULT_ENCODER)))
    model = smp.create_model(arch, encoder_weights=None, classes=num_classes, activation=None, **options)
    return Segmentor(
        model.encoder,
        SmpHead(model.decoder, model.segmentation_head),
        num_classes,
        size_divisor=model.encoder.output_stride,
        output_stride=1,  # smp's head upsamples the logits to the input size
        pad_eval=True,
        name=name,
    )


def _variant(arch: str) -> ModelVariant:
    cls = smp.MODEL_ARCHITECTURES_MAPPING[arch]
    params = inspect.signature(cls.__init__).parameters
    options = {
        k: p.default for k, p in params.items()
        if k != "self" and k not in _NOT_OPTIONS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    options["encoder_name"] = DEFAULT_ENCODER
    return ModelVariant(
        f"smp's {cls.__name__} (segmentation_models_pytorch) as an rrseg model; options: its keyword arguments "
        f"(encoder_name default {DEFAULT_ENCODER}; weights through model.pretrained, see rrseg.models.smp).",
        arch=dict(arch=arch),
        options=options,
    )


register_variants(build_smp, {name: _variant(arch) for name, arch in ARCHITECTURES.items()})
