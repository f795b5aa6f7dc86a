"""UPerNet head (Xiao et al., ECCV 2018) on segmentation_models_pytorch's UPerNetDecoder.

smp's decoder is mmsegmentation's UPerHead layer for layer (PPM with scales 1, 2, 3, 6, top-down FPN,
3x3 fpn convs, concatenation at stride 4, 3x3 ``fpn_bottleneck``), plus a LayerNorm on each input that mmseg
keeps in the backbone instead; those norms are removed here (the backbone adapters own them, so the
auxiliary head sees the same normalised stage-3 map as in mmseg). The fused 3x3 output (smp's
``fusion_block``, mmseg's ``fpn_bottleneck``) is the pre-classifier feature map; ``conv_seg`` reads it through
Dropout2d(0.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import Tensor, nn

from rrseg.models.heads.common import BaseDecodeHead

__all__ = ["UPerHead"]


class UPerHead(BaseDecodeHead):
    """UPerNet decode head over four maps at strides 4, 8, 16, 32; output at stride 4 with ``channels``."""

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        in_index: Sequence[int] = (0, 1, 2, 3),
        dropout: float = 0.1,
    ) -> None:
        if len(in_channels) != 4:
            raise ValueError(f"UPerHead expects four input maps, got in_channels={list(in_channels)}")
        super().__init__(in_channels, channels, num_classes, in_index, "multiple_select", dropout)
        # smp indexes encoder outputs from stride 1; the first two (strides 1 and 2) are unused by UPerNet.
        self.decoder = UPerNetDecoder(
            encoder_channels=(0, 0, *in_channels), encoder_depth=5, decoder_channels=channels
        )
        self.decoder.feature_norms = nn.ModuleList(nn.Identity() for _ in in_channels)
        self.init_weights()

    def forward_features(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.decoder([None, None, *self._transform_inputs(inputs)])
