"""UPerNet (Xiao et al., ECCV 2018) on timm Swin and ConvNeXt, as mmsegmentation's / the RR release's configs.

Decode head: smp's UPerNet decoder, 512 channels, PPM scales (1, 2, 3, 6); the ``fpn_bottleneck`` output
(stride 4) feeds the pixel classifier through Dropout2d(0.1). Auxiliary head: FCN on stage 3 (256
channels), loss weight 0.4. Swin accepts any input whose sides are multiples of 32; its windows are sized
for ``img_size`` (the training crop, 512 by default).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rrseg.models.backbones import TimmBackbone, convnext_backbone, swin_backbone
from rrseg.models.heads import FCNHead, UPerHead
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import SIZE_DIVISOR, RebalanceSpec, Segmentor

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
    size_divisor: int = SIZE_DIVISOR,
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
        pad_eval=False,  # any input size, as mmseg's whole-image inference
    )


def _create_upernet(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[..., TimmBackbone],
    aux_channels: int,
    drop_path_rate: float,
    channels: int,
    aux_head: bool,
    dropout: float,
    rebalance: RebalanceSpec,
    img_size: int | None = None,  # Swin's windows are sized for it; ConvNeXt takes none
) -> Segmentor:
    """Every Swin / ConvNeXt variant's builder: ``backbone(drop_path_rate=[, img_size=])`` under UPerNet."""
    size = {} if img_size is None else {"img_size": img_size}
    return build_upernet(
        name,
        backbone(drop_path_rate=drop_path_rate, **size),
        num_classes,
        channels=channels,
        aux_channels=aux_channels,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
    )


# mmseg's / the RR release's settings, in model_options' order
_SWIN = dict(img_size=512, drop_path_rate=0.3, channels=512, aux_head=True, dropout=0.1)
_CONVNEXT = dict(drop_path_rate=0.4, channels=512, aux_head=True, dropout=0.1)

register_variants(
    _create_upernet,
    {
        "upernet_swin_t": ModelVariant(
            "UPerNet + Swin-T (window 7; timm ``swin_tiny_patch4_window7_224``), the RR paper's main model.",
            arch=dict(backbone=partial(swin_backbone, "swin_tiny_patch4_window7_224"), aux_channels=256),
            options=_SWIN,
        ),
        "upernet_swin_b": ModelVariant(
            "UPerNet + Swin-B (window 12, ImageNet-22K 384 weights; timm ``swin_base_patch4_window12_384``).",
            arch=dict(backbone=partial(swin_backbone, "swin_base_patch4_window12_384"), aux_channels=256),
            options=_SWIN,
        ),
        "upernet_swin_tiny": ModelVariant(
            "Test-sized Swin UPerNet: embed 16, two blocks per stage (so shifted windows run), window 7.",
            arch=dict(
                backbone=partial(
                    swin_backbone, None, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7
                ),
                aux_channels=16,
            ),
            options=dict(_SWIN, img_size=64, drop_path_rate=0.1, channels=32),
        ),
        "upernet_convnext_t": ModelVariant(
            "UPerNet + ConvNeXt-T (timm ``convnext_tiny``), as mmseg's convnext-t UPerNet config.",
            arch=dict(backbone=partial(convnext_backbone, "convnext_tiny"), aux_channels=256),
            options=_CONVNEXT,
        ),
        "upernet_convnext_tiny": ModelVariant(
            "Test-sized ConvNeXt UPerNet: one block per stage, 16-128 wide.",
            arch=dict(
                backbone=partial(convnext_backbone, None, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                aux_channels=16,
            ),
            options=dict(_CONVNEXT, drop_path_rate=0.1, channels=32),
        ),
    },
)
