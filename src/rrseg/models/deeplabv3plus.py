"""DeepLabV3+ (Chen et al., ECCV 2018) on dilated timm ResNets, as mmsegmentation's R50/R101-D8 configs.

Backbone: ResNetV1c (deep stem; timm ``resnet50c`` / ``resnet101c``) dilated to output stride 8 (or 16).
Decode head: smp's DeepLabV3+ decoder (512 channels as mmseg), pixel classifier on its stride-4 output.
Auxiliary head: FCN on layer3 (1024 channels -> 256), loss weight 0.4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from timm.models.resnet import BasicBlock

from rrseg.models.backbones import TimmBackbone, resnet_backbone
from rrseg.models.heads import DeepLabV3PlusHead, FCNHead
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
) -> Segmentor:
    head = DeepLabV3PlusHead(
        backbone.channels,
        channels,
        num_classes,
        output_stride=output_stride,
        atrous_rates=atrous_rates,
        dropout=dropout,
    )
    aux = FCNHead(backbone.channels[2], aux_channels, num_classes, in_index=2) if aux_head else None
    return Segmentor(backbone, head, num_classes, auxiliary_head=aux, rebalance=rebalance, name=name)


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
    )


def _small_resnet(*widths: int) -> Callable[..., TimmBackbone]:
    """A one-block-per-stage BasicBlock ResNet ``widths`` wide, with a deep stem half the first width."""
    return partial(
        resnet_backbone,
        None,
        block=BasicBlock,
        layers=(1, 1, 1, 1),
        channels=widths,
        stem_width=widths[0] // 2,
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
            "Test-sized DeepLabV3+: a one-block-per-stage BasicBlock ResNet 16-128 wide (~0.4M parameters).",
            arch=dict(backbone=_small_resnet(16, 32, 64, 128), aux_channels=16),
            options=dict(_SMALL_OPTIONS, channels=32),
        ),
        "deeplabv3plus_small": ModelVariant(
            "Small, fast DeepLabV3+ for CPU training on ~96-128 px images (the CPU demo): a one-block-per-stage "
            "BasicBlock ResNet 32-256 wide, 64-channel decoder, ASPP rates (3, 6, 9) that fit a 16x16 stride-8 "
            "map (~1.4M parameters).",
            arch=dict(backbone=_small_resnet(32, 64, 128, 256), aux_channels=32),
            options=dict(_SMALL_OPTIONS, channels=64, atrous_rates=(3, 6, 9)),
        ),
    },
)
