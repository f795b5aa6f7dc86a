"""DeepLabV3+ decode head (Chen et al., ECCV 2018) as mmsegmentation's ``DepthwiseSeparableASPPHead``.

The paper's DeepLabV3+ (and the RR release's) is mmseg's: on the last backbone map (stride 8 for the D8
configs) an ASPP of an image-pooling branch (global average -> 1x1 ConvModule, resized back bilinearly), a 1x1
ConvModule and three depthwise-separable 3x3 ConvModules at dilations 12 / 24 / 36, concatenated and fused by a
3x3 ``bottleneck``; that output is resized (bilinear, align_corners False) to the stride-4 map, concatenated
with its 48-channel 1x1 projection (``c1_bottleneck``) and fused by two depthwise-separable 3x3 ConvModules
(``sep_bottleneck``), whose output is the pre-classifier feature map (what RR pools). Every ConvModule is
conv (no bias) + BN + ReLU, the depthwise and the pointwise halves each with their own BN and ReLU
(mmcv's ``DepthwiseSeparableConvModule``). Module names are mmseg's, so its checkpoints load key for key.

smp's decoder (``DeepLabV3PlusHead``, the demo's) is another model: a 1x1 ASPP projection followed by a
separable 3x3, one fusion conv, no BN/ReLU inside the separable convs, align_corners True.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rrseg.models.heads.common import BaseDecodeHead, ConvModule, resize

__all__ = ["DepthwiseSeparableASPPHead", "DepthwiseSeparableConvModule"]


class DepthwiseSeparableConvModule(nn.Module):
    """Depthwise ConvModule (groups = in_channels) then a 1x1 pointwise ConvModule, each conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class DepthwiseSeparableASPPHead(BaseDecodeHead):
    """Inputs: the backbone's maps; reads ``inputs[in_index]`` (last, stride 8|16) and ``inputs[0]`` (stride 4).

    ``dilations``: the ASPP rates, the first one 1 (the 1x1 branch), as mmseg's ``(1, 12, 24, 36)`` at output
    stride 8 and ``(1, 6, 12, 18)`` at 16.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        c1_in_channels: int,
        c1_channels: int = 48,
        dilations: Sequence[int] = (1, 12, 24, 36),
        in_index: int = 3,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, channels, num_classes, in_index, None, dropout)
        if c1_in_channels <= 0:
            raise ValueError(f"DepthwiseSeparableASPPHead needs c1_in_channels > 0, got {c1_in_channels}")
        self.dilations = tuple(int(d) for d in dilations)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(in_channels, channels, 1))
        self.aspp_modules = nn.ModuleList(
            ConvModule(in_channels, channels, 1)
            if d == 1
            else DepthwiseSeparableConvModule(in_channels, channels, 3, dilation=d)
            for d in self.dilations
        )
        self.bottleneck = ConvModule((len(self.dilations) + 1) * channels, channels, 3, padding=1)
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3),
            DepthwiseSeparableConvModule(channels, channels, 3),
        )
        self.init_weights()

    def forward_features(self, inputs: Sequence[Tensor]) -> Tensor:
        x = self._transform_inputs(inputs)
        aspp = [resize(self.image_pool(x), x.shape[2:]), *(m(x) for m in self.aspp_modules)]
        output = self.bottleneck(torch.cat(aspp, dim=1))
        c1 = self.c1_bottleneck(inputs[0])
        output = torch.cat([resize(output, c1.shape[2:]), c1], dim=1)
        return self.sep_bottleneck(output)
