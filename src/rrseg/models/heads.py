"""What the families' heads share, named as mmsegmentation names it so that its checkpoints map by rule: the
input selection and pixel classifier (``BaseDecodeHead``), ``ConvModule``, mmcv's initialisation, and the FCN
head (every family's auxiliary head). A head that one family uses lives in that family's module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BaseDecodeHead", "ConvModule", "FCNHead", "init_head_weights", "resize"]


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with align_corners=False (mmsegmentation's default everywhere in these heads)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + ReLU; state-dict keys ``conv.*`` / ``bn.*`` as mmcv's ConvModule."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


def init_head_weights(module: nn.Module) -> None:
    """mmcv's head initialisation: Kaiming-normal (fan_out) convolutions, unit norms, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BaseDecodeHead(nn.Module):
    """Input selection and the pixel classifier (``dropout`` + 1x1 ``conv_seg``), as mmseg's BaseDecodeHead.

    ``input_transform``: None (``in_index`` is one index: take that map), ``"resize_concat"`` (resize the
    ``in_index`` maps to the first one's size and concatenate) or ``"multiple_select"`` (pass the list on).
    Subclasses implement ``forward_features(inputs) -> Tensor``: the tensor the classifier reads (what RR
    pools); ``cls_seg`` turns it into logits.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        channels: int,
        num_classes: int,
        in_index: int | Sequence[int] = -1,
        input_transform: str | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if input_transform not in (None, "resize_concat", "multiple_select"):
            raise ValueError(f"unknown input_transform {input_transform!r}")
        self.input_transform = input_transform
        if input_transform is None:
            if not isinstance(in_index, int) or not isinstance(in_channels, int):
                raise ValueError("without input_transform, in_index and in_channels are single integers")
            self.in_index: int | tuple[int, ...] = in_index
            self.in_channels: int | tuple[int, ...] = in_channels
        else:
            if isinstance(in_index, int) or isinstance(in_channels, int) or len(in_index) != len(in_channels):
                raise ValueError(f"{input_transform} needs one in_channels entry per in_index entry")
            self.in_index = tuple(in_index)
            self.in_channels = (
                int(sum(in_channels)) if input_transform == "resize_concat" else tuple(in_channels)
            )
        self.channels = channels
        self.num_classes = num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

    def _transform_inputs(self, inputs: Sequence[Tensor]) -> Tensor | list[Tensor]:
        if isinstance(self.in_index, int):
            return inputs[self.in_index]
        picked = [inputs[i] for i in self.in_index]
        if self.input_transform == "multiple_select":
            return picked
        size = picked[0].shape[-2:]
        return torch.cat([resize(x, size) for x in picked], dim=1)

    def init_weights(self) -> None:
        init_head_weights(self)
        nn.init.normal_(self.conv_seg.weight, std=0.01)  # mmseg's classifier init
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, features: Tensor) -> Tensor:
        """Logits from the pre-classifier features (dropout is part of the classifier, as in mmseg)."""
        return self.conv_seg(self.dropout(features))

    def forward_features(self, inputs: Sequence[Tensor]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.cls_seg(self.forward_features(inputs))


class FCNHead(BaseDecodeHead):
    """The auxiliary head of every family here (mmseg's FCNHead, without ``concat_input``): ``num_convs``
    ConvModules then the classifier. Keys: ``convs.{i}.conv/bn``, ``conv_seg``.

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


# Heads of one family each, now in that family's module (as a timm model file holds its own layers).
_MOVED = {
    "UPerHead": "upernet",
    "OCRHead": "ocrnet",
    "ObjectAttentionBlock": "ocrnet",
    "SpatialGatherModule": "ocrnet",
    "DepthwiseSeparableASPPHead": "deeplabv3plus",
    "DepthwiseSeparableConvModule": "deeplabv3plus",
    "DeepLabV3PlusHead": "deeplabv3plus",
    "Feature2Pyramid": "beit",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:  # rrseg.models.heads.UPerHead, as before
        import importlib

        return getattr(importlib.import_module(f"rrseg.models.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
