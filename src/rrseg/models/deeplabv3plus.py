"""DeepLabV3+ (Chen et al., ECCV 2018) on dilated timm ResNets, as mmsegmentation's R50/R101-D8 configs.

Backbone: ResNetV1c (deep stem; timm ``resnet50c`` / ``resnet101c``) dilated to output stride 8 (or 16).
Decode head: mmseg's ``DepthwiseSeparableASPPHead`` (512 channels, ASPP rates 12/24/36 at stride 8, 48-channel
stride-4 projection), pixel classifier on its stride-4 output: the paper's model, whose mmseg checkpoints load
key for key. Auxiliary head: FCN on layer3 (1024 channels -> 256), loss weight 0.4.

The demo's ``deeplabv3plus_small`` is not a paper model: it keeps smp's DeepLabV3+ decoder (``head="smp"``,
:class:`rrseg.models.heads.DeepLabV3PlusHead`), which its shipped backbone and the README's table were made with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from rrseg.models.backbones import TimmBackbone, resnet_backbone
from rrseg.models.heads import DeepLabV3PlusHead, DepthwiseSeparableASPPHead, FCNHead
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import RebalanceSpec, Segmentor

__all__ = ["build_deeplabv3plus"]


def build_deeplabv3plus(
    name: str,
    backbone: TimmBackbone,
    num_classes: int,
    *,
    output_stride: int,
    channels: int,
    aux_channels: int,
    aux_head: bool,
    atrous_rates: Sequence[int] | None,
    dropout: float,
    rebalance: RebalanceSpec,
    head: Literal["mmseg", "smp"] = "mmseg",
) -> Segmentor:
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")
    if head == "mmseg":
        default_rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        rates = tuple(atrous_rates) if atrous_rates is not None else default_rates
        decode: nn.Module = DepthwiseSeparableASPPHead(
            backbone.channels[3],
            channels,
            num_classes,
            c1_in_channels=backbone.channels[0],
            dilations=(1, *rates),
            dropout=dropout,
        )
    elif head == "smp":
        decode = DeepLabV3PlusHead(
            backbone.channels,
            channels,
            num_classes,
            output_stride=output_stride,
            atrous_rates=atrous_rates,
            dropout=dropout,
        )
    else:
        raise ValueError(f"DeepLabV3+ head must be 'mmseg' or 'smp', got {head!r}")
    aux = FCNHead(backbone.channels[2], aux_channels, num_classes, in_index=2) if aux_head else None
    # mmseg's head takes any input size (whole-image inference pads nothing, as mmseg's); smp's needs multiples of 32
    return Segmentor(
        backbone, decode, num_classes, auxiliary_head=aux, rebalance=rebalance, pad_eval=head == "smp", name=name
    )


def _create_deeplabv3plus(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[..., TimmBackbone],
    aux_channels: int,
    output_stride: int,
    channels: int,
    aux_head: bool,
    atrous_rates: Sequence[int] | None,
    dropout: float,
    rebalance: RebalanceSpec,
    head: Literal["mmseg", "smp"] = "mmseg",
    drop_path_rate: float = 0.0,  # an option of the R50/R101 variants only
) -> Segmentor:
    """Every variant's builder: ``backbone(output_stride=, drop_path_rate=)`` under the DeepLabV3+ heads."""
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")
    return build_deeplabv3plus(
        name,
        backbone(output_stride=output_stride, drop_path_rate=drop_path_rate),
        num_classes,
        output_stride=output_stride,
        channels=channels,
        aux_channels=aux_channels,
        aux_head=aux_head,
        atrous_rates=atrous_rates,
        dropout=dropout,
        rebalance=rebalance,
        head=head,
    )


def _small_resnet(*widths: int, block: type = BasicBlock) -> Callable[..., TimmBackbone]:
    """A one-block-per-stage ResNet with ``widths`` planes, with a deep stem half the first width (BasicBlock)
    or as wide (Bottleneck, whose outputs are 4x its planes)."""
    return partial(
        resnet_backbone,
        None,
        block=block,
        layers=(1, 1, 1, 1),
        channels=widths,
        stem_width=widths[0] // 2 if block is BasicBlock else widths[0],
        stem_type="deep",
    )


# mmseg's R50/R101-D8 settings, in model_options' order; the small ResNets take no drop path
_OPTIONS = dict(output_stride=8, channels=512, aux_head=True, atrous_rates=None, drop_path_rate=0.0, dropout=0.1)
_SMALL_OPTIONS = {k: v for k, v in _OPTIONS.items() if k != "drop_path_rate"}

register_variants(
    _create_deeplabv3plus,
    {
        "deeplabv3plus_r50": ModelVariant(
            "DeepLabV3+ R50-D8 (ResNetV1c-50, output stride 8; ``output_stride=16`` for D16).",
            arch=dict(backbone=partial(resnet_backbone, "resnet50c"), aux_channels=256),
            options=_OPTIONS,
        ),
        "deeplabv3plus_r101": ModelVariant(
            "DeepLabV3+ R101-D8 (ResNetV1c-101, output stride 8; ``output_stride=16`` for D16).",
            arch=dict(backbone=partial(resnet_backbone, "resnet101c"), aux_channels=256),
            options=_OPTIONS,
        ),
        "deeplabv3plus_tiny": ModelVariant(
            "Test-sized DeepLabV3+, the R50/R101 code at a small width: mmseg's head on a one-block-per-stage "
            "Bottleneck ResNetV1c with 8-64 planes (outputs 32-256 wide).",
            arch=dict(backbone=_small_resnet(8, 16, 32, 64, block=Bottleneck), aux_channels=16),
            options=dict(_SMALL_OPTIONS, channels=32),
        ),
        "deeplabv3plus_small": ModelVariant(
            "Small, fast DeepLabV3+ for CPU training on ~96-128 px images (the CPU demo): a one-block-per-stage "
            "BasicBlock ResNet 32-256 wide, smp's DeepLabV3+ decoder (not the paper's head) 64 channels wide, "
            "ASPP rates (3, 6, 9) that fit a 16x16 stride-8 map (~1.4M parameters).",
            arch=dict(backbone=_small_resnet(32, 64, 128, 256), aux_channels=32, head="smp"),
            options=dict(_SMALL_OPTIONS, channels=64, atrous_rates=(3, 6, 9)),
        ),
    },
)
