"""BEiT UPerNet (Bao et al., ICLR 2022), as mmsegmentation's / BEiT's ADE20K 640x640 configs.

timm BEiT (relative position bias per block, layer scale) tapped after blocks (3, 5, 7, 11) for base and
(7, 11, 15, 23) for large; a feature-pyramid neck turns the four stride-16 maps into strides 4, 8, 16, 32
(two transposed convs, one, identity, max-pool); then UPerNet with ``channels`` = embedding width (768 /
1024) and an FCN auxiliary head on the stride-16 map. Relative position tables fix the input size to
``img_size`` (640): train on that crop and evaluate with sliding windows of it. ``layer_id`` / ``num_layers``
give mmseg's layer-wise lr-decay ids (embeddings 0, block i -> i + 1, neck and heads depth + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import Tensor, nn

from rrseg.models.backbones import TimmBackbone, beit_backbone
from rrseg.models.heads import init_head_weights
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import Segmentor
from rrseg.models.upernet import build_upernet

__all__ = ["Feature2Pyramid", "build_beit_upernet"]


class Feature2Pyramid(nn.Module):
    """Feature-to-pyramid neck for plain ViTs: one stride-16 map per tapped block -> strides 4..32.

    As mmsegmentation's Feature2Pyramid (rescales 4, 2, 1, 0.5): two 2x2 transposed convs with BatchNorm and
    GELU between them, one transposed conv, identity, 2x2 max-pool. Module names match mmseg's for key mapping.
    """

    def __init__(self, embed_dim: int, rescales: Sequence[float] = (4, 2, 1, 0.5)) -> None:
        super().__init__()
        if tuple(rescales) != (4, 2, 1, 0.5):
            raise ValueError(f"Feature2Pyramid supports rescales (4, 2, 1, 0.5), got {tuple(rescales)}")
        self.rescales = tuple(rescales)
        self.upsample_4x = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
            nn.BatchNorm2d(embed_dim),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
        )
        self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
        self.identity = nn.Identity()
        self.downsample_2x = nn.MaxPool2d(kernel_size=2, stride=2)
        self.out_channels = [embed_dim] * 4
        init_head_weights(self)

    def forward(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        if len(inputs) != 4:
            raise ValueError(f"Feature2Pyramid expects 4 maps, got {len(inputs)}")
        ops = (self.upsample_4x, self.upsample_2x, self.identity, self.downsample_2x)
        return [op(x) for op, x in zip(ops, inputs)]


def build_beit_upernet(
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
) -> Segmentor:
    """Every variant's builder: ``backbone(img_size=, drop_path_rate=)`` under the pyramid neck and UPerNet."""
    vit = backbone(img_size=img_size, drop_path_rate=drop_path_rate)
    embed = vit.channels[0]
    return build_upernet(
        name,
        vit,
        num_classes,
        channels=channels,
        aux_channels=aux_channels,
        aux_head=aux_head,
        dropout=dropout,
        neck=Feature2Pyramid(embed),
        in_channels=[embed] * 4,
        input_size=vit.img_size,
        size_divisor=vit.model.patch_embed.patch_size[0] * 2,
    )


# BEiT's ADE20K 640x640 settings (BEiT-B), in model_options' order
_OPTIONS = dict(img_size=640, drop_path_rate=0.1, channels=768, aux_head=True, dropout=0.1)

register_variants(
    build_beit_upernet,
    {
        "upernet_beit_b": ModelVariant(
            "BEiT-B UPerNet (timm ``beit_base_patch16_224`` layout at ``img_size``), blocks (3, 5, 7, 11).",
            arch=dict(
                backbone=partial(beit_backbone, "beit_base_patch16_224", indices=(3, 5, 7, 11), init_values=0.1),
                aux_channels=256,
            ),
            options=_OPTIONS,
            pretrained="timm:beit_base_patch16_224.in22k_ft_in22k",
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
            pretrained="timm:beit_large_patch16_224.in22k_ft_in22k",
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
