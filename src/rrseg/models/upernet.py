"""UPerNet (Xiao et al., ECCV 2018) on timm Swin and ConvNeXt, as mmsegmentation's / the RR release's configs.

Decode head: smp's UPerNet decoder, 512 channels, PPM scales (1, 2, 3, 6); the ``fpn_bottleneck`` output
(stride 4) feeds the pixel classifier through Dropout2d(0.1). Auxiliary head: FCN on stage 3 (256
channels), loss weight 0.4. Swin accepts any input whose sides are multiples of 32; its windows are sized
for ``img_size`` (the training crop, 512 by default).

smp's decoder is mmsegmentation's UPerHead layer for layer (PPM, top-down FPN, 3x3 fpn convs, concatenation at
stride 4, 3x3 ``fpn_bottleneck``), plus a LayerNorm on each input that mmseg keeps in the backbone instead;
those norms are removed here (the backbone adapters own them, so the auxiliary head sees the same normalised
stage-3 map as in mmseg). The fused 3x3 output (smp's ``fusion_block``, mmseg's ``fpn_bottleneck``) is the
pre-classifier feature map.

``UPerHead.forward_features`` runs smp's layers in mmseg's order (``UPerHead.forward``: all laterals, then the
top-down sums, the fpn convs, the resizes to stride 4) instead of smp's ``forward``, which is slower on the CPU:
it also resizes the stride-4 map to its own size (an identity), adds each resized map before the lateral (so the
sum takes the resized map's NCHW layout, not the lateral's channels-last one under a timm ConvNeXt), and resizes
NCHW maps, which PyTorch's CPU kernel transposes to channels-last and back (``_resize``). Together 10 % of a
ConvNeXt-T inference at 256^2 on one CPU thread (0.90x, docs/BENCHMARKS.md, section 6). The values are smp's bit for bit
on NCHW maps (Swin's); on a ConvNeXt's channels-last maps the fpn convolutions now run channels-last, another
float32 order (tests/models/test_upernet.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import Tensor, nn

from rrseg.models.backbones import TimmBackbone, convnext_backbone, swin_backbone
from rrseg.models.heads import BaseDecodeHead, FCNHead, resize
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import SIZE_DIVISOR, Segmentor

__all__ = ["UPerHead", "build_upernet"]


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """:func:`~rrseg.models.heads.resize`, on the CPU from a channels-last copy: PyTorch's CPU bilinear kernel
    works channels-last and transposes an NCHW map there and back (a [2, 512, 16, 16] -> 64^2 resize: 42 ms from
    NCHW, 1.6 ms from channels-last at one thread); the values are the same."""
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return resize(x, size)


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
        feats = self._transform_inputs(inputs)
        d = self.decoder  # smp's lists run from stride 16 up to stride 4: reversed here, to mmseg's order
        laterals = [block.conv_norm_relu(f) for block, f in zip(d.fpn_lateral_blocks[::-1], feats[:-1])]
        laterals.append(d.psp(feats[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(d.fpn_conv_blocks[::-1], laterals[:-1])]
        outs.append(laterals[-1])
        first, size = outs[0], outs[0].shape[2:]
        if first.device.type == "cpu":
            # an NCHW first map makes the concatenation NCHW (torch.cat of mixed layouts), the layout in which
            # PyTorch's CPU 3x3 convolution of 2048 -> 512 channels is faster (forward 1.37 vs 1.65 s here)
            first = first.contiguous()
        return d.fusion_block(torch.cat([first, *(_resize(x, size) for x in outs[1:])], dim=1))


def build_upernet(
    name: str,
    backbone: TimmBackbone,
    num_classes: int,
    *,
    channels: int,
    aux_channels: int,
    aux_head: bool,
    dropout: float,
    neck: nn.Module | None = None,
    in_channels: list[int] | None = None,
    input_size: tuple[int, int] | None = None,
    size_divisor: int = SIZE_DIVISOR,
) -> Segmentor:
    """UPerNet and its auxiliary FCN head on a built ``backbone`` (and ``neck``: BEiT's, ``rrseg.models.beit``)."""
    in_channels = list(in_channels or backbone.channels)
    head = UPerHead(in_channels, channels, num_classes, dropout=dropout)
    aux = FCNHead(in_channels[2], aux_channels, num_classes, in_index=2) if aux_head else None
    return Segmentor(
        backbone,
        head,
        num_classes,
        neck=neck,
        auxiliary_head=aux,
        name=name,
        input_size=input_size,
        size_divisor=size_divisor,
        pad_eval=False,  # any input size, as mmseg's whole-image inference
    )


def _create_upernet(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[..., TimmBackbone],
    aux_channels: int,
    drop_path_rate: float,
    channels: int,
    aux_head: bool,
    dropout: float,
    img_size: int | None = None,  # Swin's windows are sized for it; ConvNeXt takes none
) -> Segmentor:
    """Every Swin / ConvNeXt variant's builder: ``backbone(drop_path_rate=[, img_size=])`` under UPerNet."""
    size = {} if img_size is None else {"img_size": img_size}
    return build_upernet(
        name,
        backbone(drop_path_rate=drop_path_rate, **size),
        num_classes,
        channels=channels,
        aux_channels=aux_channels,
        aux_head=aux_head,
        dropout=dropout,
    )


# mmseg's / the RR release's settings, in model_options' order
_SWIN = dict(img_size=512, drop_path_rate=0.3, channels=512, aux_head=True, dropout=0.1)
_CONVNEXT = dict(drop_path_rate=0.4, channels=512, aux_head=True, dropout=0.1)

register_variants(
    _create_upernet,
    {
        "upernet_swin_t": ModelVariant(
            "UPerNet + Swin-T (window 7; timm ``swin_tiny_patch4_window7_224``), the RR paper's main model.",
            arch=dict(backbone=partial(swin_backbone, "swin_tiny_patch4_window7_224"), aux_channels=256),
            options=_SWIN,
            pretrained="timm:swin_tiny_patch4_window7_224.ms_in1k",
        ),
        "upernet_swin_b": ModelVariant(
            "UPerNet + Swin-B (window 12, ImageNet-22K 384 weights; timm ``swin_base_patch4_window12_384``).",
            arch=dict(backbone=partial(swin_backbone, "swin_base_patch4_window12_384"), aux_channels=256),
            options=_SWIN,
            pretrained="timm:swin_base_patch4_window12_384.ms_in22k",
        ),
        "upernet_swin_tiny": ModelVariant(
            "Test-sized Swin UPerNet: embed 16, two blocks per stage (so shifted windows run), window 7.",
            arch=dict(
                backbone=partial(
                    swin_backbone, None, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7
                ),
                aux_channels=16,
            ),
            options=dict(_SWIN, img_size=64, drop_path_rate=0.1, channels=32),
        ),
        "upernet_convnext_t": ModelVariant(
            "UPerNet + ConvNeXt-T (timm ``convnext_tiny``), as mmseg's convnext-t UPerNet config.",
            arch=dict(backbone=partial(convnext_backbone, "convnext_tiny"), aux_channels=256),
            options=_CONVNEXT,
            pretrained="timm:convnext_tiny.fb_in1k",
        ),
        "upernet_convnext_tiny": ModelVariant(
            "Test-sized ConvNeXt UPerNet: one block per stage, 16-128 wide.",
            arch=dict(
                backbone=partial(convnext_backbone, None, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                aux_channels=16,
            ),
            options=dict(_CONVNEXT, drop_path_rate=0.1, channels=32),
        ),
    },
)
