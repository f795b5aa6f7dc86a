"""OCRNet (Yuan, Chen, Wang, ECCV 2020) on HRNetV2, as mmsegmentation's ocrnet_hr18/hr48 configs.

The backbone is timm's HRNet with mmseg's bilinear branch fusion (``backbones.hrnet_backbone``): timm's own
upsamples by nearest neighbour, which is the classification network, not mmseg's.

A cascade of two heads over the four HRNet branches resized to stride 4 and concatenated: an FCN head
(1x1 conv, sum-of-branches channels, loss weight 0.4) whose logits are the soft object regions, and the OCR
head (3x3 bottleneck to 512, object-region attention with 256 key/query channels, 1x1 fusion) whose
512-channel output feeds the pixel classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rrseg.models.backbones import TimmBackbone, hrnet_backbone
from rrseg.models.heads import FCNHead, OCRHead
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import RebalanceSpec, Segmentor

__all__ = ["build_ocrnet"]


def build_ocrnet(
    name: str,
    backbone: TimmBackbone,
    num_classes: int,
    *,
    channels: int,
    ocr_channels: int,
    rebalance: RebalanceSpec,
) -> Segmentor:
    in_channels = backbone.channels
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
        backbone,
        head,
        num_classes,
        auxiliary_head=soft_regions,
        aux_loss_weight=0.4,
        cascade=True,
        rebalance=rebalance,
        pad_eval=False,  # any input size, as mmseg's whole-image inference
        name=name,
    )


def _create_ocrnet(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[[], TimmBackbone],
    channels: int,
    ocr_channels: int,
    rebalance: RebalanceSpec,
) -> Segmentor:
    """Every variant's builder: ``backbone()`` under the OCR heads."""
    return build_ocrnet(
        name, backbone(), num_classes, channels=channels, ocr_channels=ocr_channels, rebalance=rebalance
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
    _create_ocrnet,
    {
        "ocrnet_hr18": ModelVariant(
            "OCRNet with HRNetV2-W18 (timm ``hrnet_w18``).",
            arch=dict(backbone=partial(hrnet_backbone, "hrnet_w18")),
            options=_OPTIONS,
        ),
        "ocrnet_hr48": ModelVariant(
            "OCRNet with HRNetV2-W48 (timm ``hrnet_w48``).",
            arch=dict(backbone=partial(hrnet_backbone, "hrnet_w48")),
            options=_OPTIONS,
        ),
        "ocrnet_tiny": ModelVariant(
            "Test-sized OCRNet: one module per stage, branches 8/16/32/64 wide (stem 64 wide, as mmseg's).",
            arch=dict(backbone=partial(hrnet_backbone, None, cfg=_TINY_HRNET)),
            options=dict(channels=32, ocr_channels=16),
        ),
    },
)
