"""DeepLabV3+ (Chen et al., ECCV 2018) on dilated timm ResNets, as mmsegmentation's R50/R101-D8 configs.

Backbone: ResNetV1c (deep stem; timm ``resnet50c`` / ``resnet101c``) dilated to output stride 8 (or 16).
Decode head: mmseg's ``DepthwiseSeparableASPPHead`` (512 channels, ASPP rates 12/24/36 at stride 8, 48-channel
stride-4 projection), pixel classifier on its stride-4 output: the paper's model, whose mmseg checkpoints load
key for key. Auxiliary head: FCN on layer3 (1024 channels -> 256), loss weight 0.4.

The demo's ``deeplabv3plus_small`` is not a paper model: it keeps smp's DeepLabV3+ decoder (``head="smp"``,
:class:`DeepLabV3PlusHead`), which its shipped backbone and the README's table were made with.

mmseg's head, ``DepthwiseSeparableASPPHead``: on the last backbone map an ASPP of an image-pooling branch (global
average -> 1x1 ConvModule, resized back bilinearly), a 1x1 ConvModule and three depthwise-separable 3x3
ConvModules at dilations 12 / 24 / 36, concatenated and fused by a 3x3 ``bottleneck``; that output is resized
(bilinear, align_corners False) to the stride-4 map, concatenated with its 48-channel 1x1 projection
(``c1_bottleneck``) and fused by two depthwise-separable 3x3 ConvModules (``sep_bottleneck``), whose output is
the pre-classifier feature map (what RR pools). Every ConvModule is conv (no bias) + BN + ReLU, the depthwise
and the pointwise halves each with their own BN and ReLU (mmcv's ``DepthwiseSeparableConvModule``). Module
names are mmseg's, so its checkpoints load key for key.

smp's decoder (``DeepLabV3PlusHead``) is another model: separable ASPP (a 1x1 projection followed by a separable
3x3), upsampling to stride 4, fusion with the 48-channel projection of the stride-4 map by one separable 3x3
conv, no BatchNorm between the depthwise and pointwise convs, align_corners True; mmseg's decode-head weights
do not load into it (the backbone's do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from timm.models.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn

from rrseg.models.backbones import TimmBackbone, resnet_backbone
from rrseg.models.heads import BaseDecodeHead, ConvModule, FCNHead, resize
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import Segmentor

__all__ = ["DeepLabV3PlusHead", "DepthwiseSeparableASPPHead", "DepthwiseSeparableConvModule", "build_deeplabv3plus"]


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


def build_deeplabv3plus(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[..., TimmBackbone],
    aux_channels: int,
    output_stride: int,
    channels: int,
    aux_head: bool,
    atrous_rates: Sequence[int] | None,
    dropout: float,
    head: Literal["mmseg", "smp"] = "mmseg",
    drop_path_rate: float = 0.0,  # an option of the R50/R101 variants only
) -> Segmentor:
    """Every variant's builder: ``backbone(output_stride=, drop_path_rate=)`` under the DeepLabV3+ heads."""
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")
    if head not in ("mmseg", "smp"):
        raise ValueError(f"DeepLabV3+ head must be 'mmseg' or 'smp', got {head!r}")
    resnet = backbone(output_stride=output_stride, drop_path_rate=drop_path_rate)
    if head == "mmseg":
        default_rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        rates = tuple(atrous_rates) if atrous_rates is not None else default_rates
        decode: nn.Module = DepthwiseSeparableASPPHead(
            resnet.channels[3],
            channels,
            num_classes,
            c1_in_channels=resnet.channels[0],
            dilations=(1, *rates),
            dropout=dropout,
        )
    else:
        decode = DeepLabV3PlusHead(
            resnet.channels,
            channels,
            num_classes,
            output_stride=output_stride,
            atrous_rates=atrous_rates,
            dropout=dropout,
        )
    aux = FCNHead(resnet.channels[2], aux_channels, num_classes, in_index=2) if aux_head else None
    # mmseg's head takes any input size (whole-image inference pads nothing, as mmseg's); smp's needs multiples of 32
    return Segmentor(resnet, decode, num_classes, auxiliary_head=aux, pad_eval=head == "smp", name=name)


def _small_resnet(*widths: int, block: type = BasicBlock) -> Callable[..., TimmBackbone]:
    """A one-block-per-stage ResNet with ``widths`` planes, with a deep stem half the first width (BasicBlock)
    or as wide (Bottleneck, whose outputs are 4x its planes)."""
    return partial(
        resnet_backbone,
        None,
        block=block,
        layers=(1, 1, 1, 1),
        channels=widths,
        stem_width=widths[0] // 2 if block is BasicBlock else widths[0],
        stem_type="deep",
    )


# mmseg's R50/R101-D8 settings, in model_options' order; the small ResNets take no drop path
_OPTIONS = dict(output_stride=8, channels=512, aux_head=True, atrous_rates=None, drop_path_rate=0.0, dropout=0.1)
_SMALL_OPTIONS = {k: v for k, v in _OPTIONS.items() if k != "drop_path_rate"}

register_variants(
    build_deeplabv3plus,
    {
        "deeplabv3plus_r50": ModelVariant(
            "DeepLabV3+ R50-D8 (ResNetV1c-50, output stride 8; ``output_stride=16`` for D16).",
            arch=dict(backbone=partial(resnet_backbone, "resnet50c"), aux_channels=256),
            options=_OPTIONS,
            pretrained="timm:resnet50c.gluon_in1k",
        ),
        "deeplabv3plus_r101": ModelVariant(
            "DeepLabV3+ R101-D8 (ResNetV1c-101, output stride 8; ``output_stride=16`` for D16).",
            arch=dict(backbone=partial(resnet_backbone, "resnet101c"), aux_channels=256),
            options=_OPTIONS,
            pretrained="timm:resnet101c.gluon_in1k",
        ),
        "deeplabv3plus_tiny": ModelVariant(
            "Test-sized DeepLabV3+, the R50/R101 code at a small width: mmseg's head on a one-block-per-stage "
            "Bottleneck ResNetV1c with 8-64 planes (outputs 32-256 wide).",
            arch=dict(backbone=_small_resnet(8, 16, 32, 64, block=Bottleneck), aux_channels=16),
            options=dict(_SMALL_OPTIONS, channels=32),
        ),
        "deeplabv3plus_small": ModelVariant(
            "Small, fast DeepLabV3+ for CPU training on ~96-128 px images (the CPU demo): a one-block-per-stage "
            "BasicBlock ResNet 32-256 wide, smp's DeepLabV3+ decoder (not the paper's head) 64 channels wide, "
            "ASPP rates (3, 6, 9) that fit a 16x16 stride-8 map (~1.4M parameters).",
            arch=dict(backbone=_small_resnet(32, 64, 128, 256), aux_channels=32, head="smp"),
            options=dict(_SMALL_OPTIONS, channels=64, atrous_rates=(3, 6, 9)),
        ),
    },
)
