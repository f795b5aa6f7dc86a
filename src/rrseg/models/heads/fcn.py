"""FCN head: the auxiliary head of every family here (mmseg's FCNHead, without ``concat_input``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from rrseg.models.heads.common import BaseDecodeHead, ConvModule

__all__ = ["FCNHead"]


class FCNHead(BaseDecodeHead):
    """``num_convs`` ConvModules then the classifier. Keys: ``convs.{i}.conv/bn``, ``conv_seg``.

    A sequence ``in_index`` resizes and concatenates those maps first (OCRNet's auxiliary head).
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        channels: int,
        num_classes: int,
        in_index: int | Sequence[int] = 2,
        num_convs: int = 1,
        kernel_size: int = 3,
        dropout: float = 0.1,
    ) -> None:
        transform = None if isinstance(in_index, int) else "resize_concat"
        super().__init__(in_channels, channels, num_classes, in_index, transform, dropout)
        if num_convs < 1:
            raise ValueError(f"FCNHead needs num_convs >= 1, got {num_convs}")
        convs = [ConvModule(self.in_channels, channels, kernel_size, padding=kernel_size // 2)]
        convs += [
            ConvModule(channels, channels, kernel_size, padding=kernel_size // 2)
            for _ in range(num_convs - 1)
        ]
        self.convs = nn.Sequential(*convs)
        self.init_weights()

    def forward_features(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.convs(self._transform_inputs(inputs))
