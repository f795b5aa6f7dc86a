"""Feature-to-pyramid neck for plain ViTs (BEiT): one stride-16 map per tapped block -> strides 4..32.

As mmsegmentation's Feature2Pyramid (rescales 4, 2, 1, 0.5): two 2x2 transposed convs with BatchNorm and GELU
between them, one transposed conv, identity, 2x2 max-pool. Module names match mmseg's for key mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from rrseg.models.heads.common import init_head_weights

__all__ = ["Feature2Pyramid"]


class Feature2Pyramid(nn.Module):
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
