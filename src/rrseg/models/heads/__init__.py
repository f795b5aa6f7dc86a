"""Decode and auxiliary heads. Each returns the pre-classifier features from ``forward_features``."""

from rrseg.models.heads.common import BaseDecodeHead, ConvModule
from rrseg.models.heads.deeplabv3plus import DeepLabV3PlusHead
from rrseg.models.heads.fcn import FCNHead
from rrseg.models.heads.ocr import OCRHead
from rrseg.models.heads.sep_aspp import DepthwiseSeparableASPPHead, DepthwiseSeparableConvModule
from rrseg.models.heads.uper import UPerHead

__all__ = ["BaseDecodeHead", "ConvModule", "DeepLabV3PlusHead",
    "DepthwiseSeparableASPPHead",
    "DepthwiseSeparableConvModule",
    "FCNHead", "OCRHead", "UPerHead"]
