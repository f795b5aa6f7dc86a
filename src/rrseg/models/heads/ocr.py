"""Object-contextual representations (Yuan, Chen, Wang, ECCV 2020): the OCR head of OCRNet.

A cascade: a soft object-region map (the FCN auxiliary head's logits) gathers one context vector per class
from the pixel features; every pixel then attends over those class contexts, and the attended context is
fused with the pixel feature. Module names follow mmsegmentation's OCRHead so that its released
checkpoints load by key.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.models.heads.common import BaseDecodeHead, ConvModule, resize

__all__ = ["OCRHead", "ObjectAttentionBlock", "SpatialGatherModule"]


class SpatialGatherModule(nn.Module):
    """Per-class context: the features averaged with the spatial softmax of each class's logit map."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, feats: Tensor, probs: Tensor) -> Tensor:
        b, k = probs.shape[:2]
        probs = F.softmax(self.scale * probs.reshape(b, k, -1), dim=2)  # [B, K, HW]
        context = torch.matmul(probs, feats.reshape(b, feats.shape[1], -1).transpose(1, 2))  # [B, K, C]
        return context.transpose(1, 2).unsqueeze(3)  # [B, C, K, 1]


def _project(in_channels: int, channels: int, num_convs: int) -> nn.Module:
    convs = [ConvModule(in_channels, channels)] + [
        ConvModule(channels, channels) for _ in range(num_convs - 1)
    ]
    return nn.Sequential(*convs) if num_convs > 1 else convs[0]


class ObjectAttentionBlock(nn.Module):
    """Pixel-to-region attention (queries: pixels, keys/values: class contexts) + fusion bottleneck."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.key_project = _project(in_channels, channels, 2)
        self.query_project = _project(in_channels, channels, 2)
        self.value_project = _project(in_channels, channels, 1)
        self.out_project = _project(channels, in_channels, 1)
        self.bottleneck = ConvModule(in_channels * 2, in_channels)

    def forward(self, query_feats: Tensor, key_feats: Tensor) -> Tensor:
        b, _, h, w = query_feats.shape
        query = self.query_project(query_feats).flatten(2).transpose(1, 2)  # [B, HW, C']
        key = self.key_project(key_feats).flatten(2)  # [B, C', K]
        value = self.value_project(key_feats).flatten(2).transpose(1, 2)  # [B, K, C']
        sim = F.softmax(torch.matmul(query, key) * self.channels**-0.5, dim=-1)
        context = torch.matmul(sim, value).transpose(1, 2).reshape(b, self.channels, h, w)
        context = self.out_project(context)
        return self.bottleneck(torch.cat([context, query_feats], dim=1))


class OCRHead(BaseDecodeHead):
    """OCR head over the concatenated multi-resolution features; ``prev_logits`` are the soft regions.

    mmseg's OCRNet configs: channels 512, ocr_channels 256, no classifier dropout, inputs resize-concat.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        ocr_channels: int = 256,
        in_index: Sequence[int] = (0, 1, 2, 3),
        dropout: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__(in_channels, channels, num_classes, in_index, "resize_concat", dropout)
        self.bottleneck = ConvModule(self.in_channels, channels, 3, padding=1)
        self.spatial_gather_module = SpatialGatherModule(scale)
        self.object_context_block = ObjectAttentionBlock(channels, ocr_channels)
        self.init_weights()

    def forward_features(self, inputs: Sequence[Tensor], prev_logits: Tensor | None = None) -> Tensor:
        if prev_logits is None:
            raise ValueError("OCRHead needs the soft object regions (the auxiliary head's logits)")
        feats = self.bottleneck(self._transform_inputs(inputs))
        context = self.spatial_gather_module(feats, resize(prev_logits, feats.shape[-2:]))
        return self.object_context_block(feats, context)

    def forward(self, inputs: Sequence[Tensor], prev_logits: Tensor | None = None) -> Tensor:
        return self.cls_seg(self.forward_features(inputs, prev_logits))
