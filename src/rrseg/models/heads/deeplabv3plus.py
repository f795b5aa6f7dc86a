"""DeepLabV3+ head (Chen et al., ECCV 2018) on segmentation_models_pytorch's DeepLabV3PlusDecoder.

smp's decoder: separable ASPP on the last backbone map (rates 12/24/36 at output stride 8 as mmseg's D8
configs, 6/12/18 at 16), a 3x3 separable conv, upsampling to stride 4, fusion with the 48-channel projection
of the stride-4 map and a 3x3 separable conv. Its output is the pre-classifier feature map (what RR pools);
``conv_seg`` reads it through Dropout2d(0.1). Differences from mmseg's DepthwiseSeparableASPPHead: smp has
no BatchNorm between the depthwise and pointwise convs and one fusion conv instead of two, so mmseg
DeepLabV3+ decode-head weights do not load here (the backbone's do).
"""

from __future__ import annotations

from collections.abc import Sequence

from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from torch import Tensor

from rrseg.models.heads.common import BaseDecodeHead

__all__ = ["DeepLabV3PlusHead"]


class DeepLabV3PlusHead(BaseDecodeHead):
    """Inputs: backbone maps at strides (4, 8, 8|16, 8|16) as [low-level, ..., last]; output at stride 4."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        output_stride: int = 8,
        atrous_rates: Sequence[int] | None = None,
        in_index: Sequence[int] = (0, 1, 2, 3),
        dropout: float = 0.1,
    ) -> None:
        if output_stride not in (8, 16):
            raise ValueError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")
        if len(in_channels) != 4:
            raise ValueError(
                f"DeepLabV3PlusHead expects four input maps, got in_channels={list(in_channels)}"
            )
        super().__init__(in_channels, channels, num_classes, in_index, "multiple_select", dropout)
        rates = (
            tuple(atrous_rates)
            if atrous_rates is not None
            else ((12, 24, 36) if output_stride == 8 else (6, 12, 18))
        )
        self.output_stride = output_stride
        # smp reads encoder outputs indexed from stride 1: index 2 is the stride-4 map, -1 the last one.
        self.decoder = DeepLabV3PlusDecoder(
            encoder_channels=(0, 0, *in_channels),
            encoder_depth=5,
            out_channels=channels,
            atrous_rates=rates,
            output_stride=output_stride,
            aspp_separable=True,
            aspp_dropout=0.0,  # mmseg has no dropout inside ASPP; the classifier's Dropout2d(0.1) stays
        )
        self.init_weights()

    def forward_features(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.decoder([None, None, *self._transform_inputs(inputs)])
