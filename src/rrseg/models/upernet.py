"""UPerNet (Xiao et al., ECCV 2018) on timm Swin and ConvNeXt, as mmsegmentation's / the RR release's configs.

Decode head: smp's UPerNet decoder, 512 channels, PPM scales (1, 2, 3, 6); the ``fpn_bottleneck`` output
(stride 4) feeds the pixel classifier through Dropout2d(0.1). Auxiliary head: FCN on stage 3 (256
channels), loss weight 0.4. Swin accepts any input whose sides are multiples of 32; its windows are sized
for ``img_size`` (the training crop, 512 by default).
"""

from __future__ import annotations

from rrseg.models.backbones import TimmBackbone, convnext_backbone, swin_backbone
from rrseg.models.heads import FCNHead, UPerHead
from rrseg.models.registry import register_model
from rrseg.models.segmentor import RebalanceSpec, Segmentor

__all__ = ["build_upernet"]


def build_upernet(
    name: str,
    backbone: TimmBackbone,
    num_classes: int,
    *,
    channels: int,
    aux_channels: int,
    aux_head: bool,
    dropout: float,
    rebalance: RebalanceSpec,
    neck=None,
    in_channels: list[int] | None = None,
    input_size: tuple[int, int] | None = None,
    size_divisor: int = 32,
) -> Segmentor:
    in_channels = list(in_channels or backbone.channels)
    head = UPerHead(in_channels, channels, num_classes, dropout=dropout)
    aux = FCNHead(in_channels[2], aux_channels, num_classes, in_index=2) if aux_head else None
    return Segmentor(
        backbone,
        head,
        num_classes,
        neck=neck,
        auxiliary_head=aux,
        rebalance=rebalance,
        name=name,
        input_size=input_size,
        size_divisor=size_divisor,
    )


@register_model
def upernet_swin_t(
    num_classes: int,
    *,
    img_size: int = 512,
    drop_path_rate: float = 0.3,
    channels: int = 512,
    aux_head: bool = True,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """UPerNet + Swin-T (window 7; timm ``swin_tiny_patch4_window7_224``), the RR paper's main model."""
    backbone = swin_backbone("swin_tiny_patch4_window7_224", img_size=img_size, drop_path_rate=drop_path_rate)
    return build_upernet(
        "upernet_swin_t",
        backbone,
        num_classes,
        channels=channels,
        aux_channels=256,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
    )


@register_model
def upernet_swin_b(
    num_classes: int,
    *,
    img_size: int = 512,
    drop_path_rate: float = 0.3,
    channels: int = 512,
    aux_head: bool = True,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """UPerNet + Swin-B (window 12, ImageNet-22K 384 weights; timm ``swin_base_patch4_window12_384``)."""
    backbone = swin_backbone(
        "swin_base_patch4_window12_384", img_size=img_size, drop_path_rate=drop_path_rate
    )
    return build_upernet(
        "upernet_swin_b",
        backbone,
        num_classes,
        channels=channels,
        aux_channels=256,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
    )


@register_model
def upernet_swin_tiny(
    num_classes: int,
    *,
    img_size: int = 64,
    drop_path_rate: float = 0.1,
    channels: int = 32,
    aux_head: bool = True,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """Test-sized Swin UPerNet: embed 16, two blocks per stage (so shifted windows run), window 7."""
    backbone = swin_backbone(
        None,
        img_size=img_size,
        drop_path_rate=drop_path_rate,
        embed_dim=16,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 2, 4),
        window_size=7,
    )
    return build_upernet(
        "upernet_swin_tiny",
        backbone,
        num_classes,
        channels=channels,
        aux_channels=16,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
    )


@register_model
def upernet_convnext_t(
    num_classes: int,
    *,
    drop_path_rate: float = 0.4,
    channels: int = 512,
    aux_head: bool = True,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """UPerNet + ConvNeXt-T (timm ``convnext_tiny``), as mmseg's convnext-t UPerNet config."""
    backbone = convnext_backbone("convnext_tiny", drop_path_rate=drop_path_rate)
    return build_upernet(
        "upernet_convnext_t",
        backbone,
        num_classes,
        channels=channels,
        aux_channels=256,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
    )


@register_model
def upernet_convnext_tiny(
    num_classes: int,
    *,
    drop_path_rate: float = 0.1,
    channels: int = 32,
    aux_head: bool = True,
    dropout: float = 0.1,
    rebalance: RebalanceSpec = None,
) -> Segmentor:
    """Test-sized ConvNeXt UPerNet: one block per stage, 16-128 wide."""
    backbone = convnext_backbone(
        None, drop_path_rate=drop_path_rate, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)
    )
    return build_upernet(
        "upernet_convnext_tiny",
        backbone,
        num_classes,
        channels=channels,
        aux_channels=16,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
    )
