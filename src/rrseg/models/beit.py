"""BEiT UPerNet (Bao et al., ICLR 2022), as mmsegmentation's / BEiT's ADE20K 640x640 configs.

timm BEiT (relative position bias per block, layer scale) tapped after blocks (3, 5, 7, 11) for base and
(7, 11, 15, 23) for large; a feature-pyramid neck turns the four stride-16 maps into strides 4, 8, 16, 32
(two transposed convs, one, identity, max-pool); then UPerNet with ``channels`` = embedding width (768 /
1024) and an FCN auxiliary head on the stride-16 map. Relative position tables fix the input size to
``img_size`` (640): train on that crop and evaluate with sliding windows of it. ``layer_id`` / ``num_layers``
give mmseg's layer-wise lr-decay ids (embeddings 0, block i -> i + 1, neck and heads depth + 1).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rrseg.models.backbones import TimmBackbone, beit_backbone
from rrseg.models.necks import Feature2Pyramid
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import RebalanceSpec, Segmentor
from rrseg.models.upernet import build_upernet

__all__ = ["build_beit_upernet"]


def build_beit_upernet(
    name: str,
    backbone,
    num_classes: int,
    *,
    channels: int,
    aux_head: bool,
    dropout: float,
    rebalance: RebalanceSpec,
    aux_channels: int = 256,
) -> Segmentor:
    embed = backbone.channels[0]
    return build_upernet(
        name,
        backbone,
        num_classes,
        channels=channels,
        aux_channels=aux_channels,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
        neck=Feature2Pyramid(embed),
        in_channels=[embed] * 4,
        input_size=backbone.img_size,
        size_divisor=backbone.model.patch_embed.patch_size[0] * 2,
    )


def _create_beit_upernet(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[..., TimmBackbone],
    aux_channels: int,
    img_size: int,
    drop_path_rate: float,
    channels: int,
    aux_head: bool,
    dropout: float,
    rebalance: RebalanceSpec,
) -> Segmentor:
    """Every variant's builder: ``backbone(img_size=, drop_path_rate=)`` under the pyramid neck and UPerNet."""
    return build_beit_upernet(
        name,
        backbone(img_size=img_size, drop_path_rate=drop_path_rate),
        num_classes,
        channels=channels,
        aux_head=aux_head,
        dropout=dropout,
        rebalance=rebalance,
        aux_channels=aux_channels,
    )


# BEiT's ADE20K 640x640 settings (BEiT-B), in model_options' order
_OPTIONS = dict(img_size=640, drop_path_rate=0.1, channels=768, aux_head=True, dropout=0.1)

register_variants(
    _create_beit_upernet,
    {
        "upernet_beit_b": ModelVariant(
            "BEiT-B UPerNet (timm ``beit_base_patch16_224`` layout at ``img_size``), blocks (3, 5, 7, 11).",
            arch=dict(
                backbone=partial(beit_backbone, "beit_base_patch16_224", indices=(3, 5, 7, 11), init_values=0.1),
                aux_channels=256,
            ),
            options=_OPTIONS,
        ),
        "upernet_beit_l": ModelVariant(
            "BEiT-L UPerNet (timm ``beit_large_patch16_224`` layout at ``img_size``), blocks (7, 11, 15, 23).",
            arch=dict(
                backbone=partial(
                    beit_backbone, "beit_large_patch16_224", indices=(7, 11, 15, 23), init_values=1e-6
                ),
                aux_channels=256,
            ),
            options=dict(_OPTIONS, drop_path_rate=0.2, channels=1024),
        ),
        "upernet_beit_tiny": ModelVariant(
            "Test-sized BEiT UPerNet: 4 blocks of width 32, patch 16, every block tapped.",
            arch=dict(
                backbone=partial(
                    beit_backbone,
                    None,
                    indices=(0, 1, 2, 3),
                    patch_size=16,
                    embed_dim=32,
                    depth=4,
                    num_heads=2,
                    use_abs_pos_emb=False,
                    use_rel_pos_bias=True,
                    init_values=0.1,
                ),
                aux_channels=16,
            ),
            options=dict(_OPTIONS, img_size=64, channels=32),
        ),
    },
)
