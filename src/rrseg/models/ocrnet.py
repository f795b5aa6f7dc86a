"""OCRNet (Yuan, Chen, Wang, ECCV 2020) on HRNetV2, as mmsegmentation's ocrnet_hr18/hr48 configs.

The backbone is timm's HRNet with mmseg's bilinear branch fusion (``backbones.hrnet_backbone``): timm's own
upsamples by nearest neighbour, which is the classification network, not mmseg's.

A cascade of two heads over the four HRNet branches resized to stride 4 and concatenated: an FCN head
(1x1 conv, sum-of-branches channels, loss weight 0.4) whose logits are the soft object regions, and the OCR
head (3x3 bottleneck to 512, object-region attention with 256 key/query channels, 1x1 fusion) whose
512-channel output feeds the pixel classifier.

The OCR head (object-contextual representations): the soft object-region map gathers one context vector per
class from the pixel features; every pixel then attends over those class contexts, and the attended context is
fused with the pixel feature. Module names follow mmsegmentation's OCRHead so that its released checkpoints
load by key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.models.backbones import TimmBackbone, hrnet_backbone
from rrseg.models.heads import BaseDecodeHead, ConvModule, FCNHead, resize
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import Segmentor

__all__ = ["OCRHead", "ObjectAttentionBlock", "SpatialGatherModule", "build_ocrnet"]


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
        # contiguous, as mmseg's: a channels-last view here made out_project's output channels-last and the
        # concatenation below a transposing copy (36 of 900 ms of a CPU inference at 256^2, one thread)
        context = torch.matmul(sim, value).transpose(1, 2).contiguous().reshape(b, self.channels, h, w)
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


def build_ocrnet(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[[], TimmBackbone],
    channels: int,
    ocr_channels: int,
) -> Segmentor:
    """Every variant's builder: ``backbone()`` under the FCN soft-region head and the OCR head."""
    hrnet = backbone()
    in_channels = hrnet.channels
    soft_regions = FCNHead(
        in_channels,
        sum(in_channels),
        num_classes,
        in_index=(0, 1, 2, 3),
        num_convs=1,
        kernel_size=1,
        dropout=0.0,
    )
    head = OCRHead(in_channels, channels, num_classes, ocr_channels=ocr_channels)
    return Segmentor(
        hrnet,
        head,
        num_classes,
        auxiliary_head=soft_regions,
        aux_loss_weight=0.4,
        cascade=True,
        pad_eval=False,  # any input size, as mmseg's whole-image inference
        name=name,
    )


_TINY_HRNET = dict(
    stem_width=64,  # mmseg's HRNet stem is 64 wide whatever the branches (mmseg/models/backbones/hrnet.py)
    stage1=dict(
        num_modules=1,
        num_branches=1,
        block_type="BOTTLENECK",
        num_blocks=(1,),
        num_channels=(8,),
        fuse_method="SUM",
    ),
    stage2=dict(
        num_modules=1,
        num_branches=2,
        block_type="BASIC",
        num_blocks=(1, 1),
        num_channels=(8, 16),
        fuse_method="SUM",
    ),
    stage3=dict(
        num_modules=1,
        num_branches=3,
        block_type="BASIC",
        num_blocks=(1, 1, 1),
        num_channels=(8, 16, 32),
        fuse_method="SUM",
    ),
    stage4=dict(
        num_modules=1,
        num_branches=4,
        block_type="BASIC",
        num_blocks=(1, 1, 1, 1),
        num_channels=(8, 16, 32, 64),
        fuse_method="SUM",
    ),
)


# mmseg's ocrnet_hr18/hr48 settings
_OPTIONS = dict(channels=512, ocr_channels=256)

register_variants(
    build_ocrnet,
    {
        "ocrnet_hr18": ModelVariant(
            "OCRNet with HRNetV2-W18 (timm ``hrnet_w18``).",
            arch=dict(backbone=partial(hrnet_backbone, "hrnet_w18")),
            options=_OPTIONS,
            pretrained="timm:hrnet_w18.ms_in1k",
        ),
        "ocrnet_hr48": ModelVariant(
            "OCRNet with HRNetV2-W48 (timm ``hrnet_w48``).",
            arch=dict(backbone=partial(hrnet_backbone, "hrnet_w48")),
            options=_OPTIONS,
            pretrained="timm:hrnet_w48.ms_in1k",
        ),
        "ocrnet_tiny": ModelVariant(
            "Test-sized OCRNet: one module per stage, branches 8/16/32/64 wide (stem 64 wide, as mmseg's).",
            arch=dict(backbone=partial(hrnet_backbone, None, cfg=_TINY_HRNET)),
            options=dict(channels=32, ocr_channels=16),
        ),
    },
)
