"""DeepLabV3+ (Chen et al., ECCV 2018) on dilated timm ResNets, as mmsegmentation's R50/R101-D8 configs.

Backbone: ResNetV1c (deep stem; timm ``resnet50c`` / ``resnet101c``) dilated to output stride 8 (or 16).
Decode head: smp's DeepLabV3+ decoder (512 channels as mmseg), pixel classifier on its stride-4 output.
Auxiliary head: FCN on layer3 (1024 channels -> 256), loss weight 0.4.
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models.resnet import BasicBlock

from rrseg.models.backbones import TimmBackbone, resnet_backbone
from rrseg.models.heads import DeepLabV3PlusHead, FCNHead
from rrseg.models.registry import register_model
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


def _resnet_deeplab(
    name: str,
    timm_name: str,
    num_classes: int,
    output_stride: int,
    drop_path_rate: float,
    channels: int,
    aux_head: bool,
    atrous_rates,
    dropout: float,
    rebalance,
) -> Segmentor:
    _check_output_stride(output_stride)
    backbone = resnet_backbone(timm_name, output_stride=output_stride, drop_path_rate=drop_path_rate)
    return build_deeplabv3plus(
        name,
        backbone,
        num_classes,
        output_stride=output_stride,
        channels=channels,
        aux_channels=256,
        aux_head=aux_head,
        atrous_rates=atrous_rates,
        dropout=dropout,
        rebalance=rebalance,
    )


@register_model
def deeplabv3plus_r50(
    num_classes: int,
    *,
    output_stride: int = 8,
    channels: int = 512,
    aux_head: bool = True,
    atrous_rates: Sequence[int] | None = None,
    drop_path_rate: float = 0.0,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """DeepLabV3+ R50-D8 (ResNetV1c-50, output stride 8; ``output_stride=16`` for D16)."""
    return _resnet_deeplab(
        "deeplabv3plus_r50",
        "resnet50c",
        num_classes,
        output_stride,
        drop_path_rate,
        channels,
        aux_head,
        atrous_rates,
        dropout,
        rebalance,
    )


@register_model
def deeplabv3plus_r101(
    num_classes: int,
    *,
    output_stride: int = 8,
    channels: int = 512,
    aux_head: bool = True,
    atrous_rates: Sequence[int] | None = None,
    drop_path_rate: float = 0.0,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """DeepLabV3+ R101-D8 (ResNetV1c-101, output stride 8; ``output_stride=16`` for D16)."""
    return _resnet_deeplab(
        "deeplabv3plus_r101",
        "resnet101c",
        num_classes,
        output_stride,
        drop_path_rate,
        channels,
        aux_head,
        atrous_rates,
        dropout,
        rebalance,
    )


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")


def _small_resnet(widths: Sequence[int], layers: Sequence[int], output_stride: int) -> TimmBackbone:
    _check_output_stride(output_stride)
    return resnet_backbone(
        None,
        output_stride=output_stride,
        block=BasicBlock,
        layers=tuple(layers),
        channels=tuple(widths),
        stem_width=widths[0] // 2,
        stem_type="deep",
    )


@register_model
def deeplabv3plus_tiny(
    num_classes: int,
    *,
    output_stride: int = 8,
    channels: int = 32,
    aux_head: bool = True,
    atrous_rates: Sequence[int] | None = None,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """Test-sized DeepLabV3+: a one-block-per-stage BasicBlock ResNet 16-128 wide (~0.4M parameters)."""
    backbone = _small_resnet((16, 32, 64, 128), (1, 1, 1, 1), output_stride)
    return build_deeplabv3plus(
        "deeplabv3plus_tiny",
        backbone,
        num_classes,
        output_stride=output_stride,
        channels=channels,
        aux_channels=16,
        aux_head=aux_head,
        atrous_rates=atrous_rates,
        dropout=dropout,
        rebalance=rebalance,
    )


@register_model
def deeplabv3plus_small(
    num_classes: int,
    *,
    output_stride: int = 8,
    channels: int = 64,
    aux_head: bool = True,
    atrous_rates: Sequence[int] | None = (3, 6, 9),
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """Small, fast DeepLabV3+ for CPU training on ~96-128 px images (the CPU demo): a one-block-per-stage
    BasicBlock ResNet 32-256 wide, 64-channel decoder, ASPP rates (3, 6, 9) that fit a 16x16 stride-8 map
    (~1.4M parameters)."""
    backbone = _small_resnet((32, 64, 128, 256), (1, 1, 1, 1), output_stride)
    return build_deeplabv3plus(
        "deeplabv3plus_small",
        backbone,
        num_classes,
        output_stride=output_stride,
        channels=channels,
        aux_channels=32,
        aux_head=aux_head,
        atrous_rates=atrous_rates,
        dropout=dropout,
        rebalance=rebalance,
    )
