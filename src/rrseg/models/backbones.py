"""timm models as multi-scale feature extractors, plus what optimisers need from them.

``TimmBackbone`` wraps one timm model (kept whole under ``.model``, so timm-format state dicts load into it
unchanged) and returns a list of NCHW maps. How the maps are taken depends on the family:

- ``"intermediates"``: timm's ``forward_intermediates`` (ResNet, ConvNeXt, BEiT), the model pruned of the
  layers it does not need;
- ``"features"``: a ``features_only`` network (HRNet, whose branch outputs are not intermediates);
- ``"swin"``: a loop over timm's Swin stages, which work in NHWC: the per-stage LayerNorm (mmseg's
  ``norm{i}``) runs there, before the one permute to NCHW.

Where timm's module computes something else than mmsegmentation's (the paper's code), the block is given
mmseg's forward and keeps timm's parameters: HRNet's branch fusion (bilinear, not nearest) and Swin's
window attention (pad, then shift).

``norms`` are output norms as mmseg's Swin / ConvNeXt backbones have (``backbone.norm{i}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import timm
import timm.models.hrnet
import timm.models.swin_transformer
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

from rrseg.models.heads import resize

__all__ = [
    "TimmBackbone",
    "beit_backbone",
    "beit_layer_id",
    "convnext_backbone",
    "convnext_layer_id",
    "hrnet_backbone",
    "resnet_backbone",
    "swin_backbone",
]


class TimmBackbone(nn.Module):
    """A timm model returning ``len(channels)`` NCHW feature maps."""

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        channels: Sequence[int],
        indices: Sequence[int] | None = None,
        norm: str | None = None,
        layer_id_fn: Callable[[str], int] | None = None,
        num_layers: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("intermediates", "features", "swin"):
            raise ValueError(f"unknown backbone mode {mode!r}")
        self.model = model
        self.mode = mode
        self.indices = list(indices) if indices is not None else None
        self.channels = list(channels)
        if norm == "ln":  # NHWC LayerNorm, eps as mmseg's LN default
            self.norms = nn.ModuleList(nn.LayerNorm(c, eps=1e-5) for c in self.channels)
        elif norm == "ln2d":  # channels-first LayerNorm, eps as mmcls's ConvNeXt
            self.norms = nn.ModuleList(LayerNorm2d(c, eps=1e-6) for c in self.channels)
        elif norm is None:
            self.norms = None
        else:
            raise ValueError(f"unknown output norm {norm!r}")
        self._layer_id_fn = layer_id_fn
        self.num_layers = num_layers

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.mode == "swin":
            return self._forward_swin(x)
        if self.mode == "features":
            feats = list(self.model(x))
        else:
            feats = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        if self.norms is not None:
            feats = [norm(f) for norm, f in zip(self.norms, feats)]
        return feats

    def _forward_swin(self, x: Tensor) -> list[Tensor]:
        x = self.model.patch_embed(x)  # NHWC, as timm's forward_features
        outs = []
        for i, stage in enumerate(self.model.layers):
            x = stage(x)
            y = self.norms[i](x) if self.norms is not None else x
            outs.append(y.permute(0, 3, 1, 2).contiguous())
        return outs

    def layer_id(self, name: str) -> int:
        """Layer-decay id of a parameter named relative to this backbone (``model.*`` / ``norms.*``)."""
        if self._layer_id_fn is None or self.num_layers is None:
            raise AttributeError("this backbone defines no layer ids")
        if name.startswith("model."):
            return self._layer_id_fn(name[len("model.") :])
        return self.num_layers - 1

    def no_weight_decay(self) -> set[str]:
        """timm's no-weight-decay names (position embeddings, relative position tables), relative to self."""
        names = set()
        if hasattr(self.model, "no_weight_decay"):
            names = {f"model.{n}" for n in self.model.no_weight_decay()}
        for n, _ in self.named_parameters():
            if "relative_position_bias_table" in n or n.endswith(("pos_embed", "cls_token")):
                names.add(n)
        params = dict(self.named_parameters())
        return {n for n in names if n in params}


def _timm(name_or_cls: str | type, **kwargs: Any) -> nn.Module:
    """A timm model, never with downloaded weights."""
    if isinstance(name_or_cls, str):
        return timm.create_model(name_or_cls, pretrained=False, **kwargs)
    return name_or_cls(**kwargs)


def resnet_backbone(
    name: str | None = "resnet50c", output_stride: int = 8, drop_path_rate: float = 0.0, **kwargs: Any
) -> TimmBackbone:
    """ResNet dilated to ``output_stride``; maps of layer1..layer4. ``resnet50c``/``resnet101c`` are mmseg's
    ResNetV1c (deep stem); timm's dilation (first block of a dilated stage at the previous rate) is mmseg's
    ``contract_dilation``. ``name=None`` builds ``timm.models.resnet.ResNet(**kwargs)`` (small variants)."""
    args = dict(num_classes=0, global_pool="", output_stride=output_stride, drop_path_rate=drop_path_rate)
    if name is None:
        model = _timm(timm.models.resnet.ResNet, **args, **kwargs)
    else:
        model = _timm(name, **args, **kwargs)
    model.prune_intermediate_layers([1, 2, 3, 4], prune_head=True)
    channels = [info["num_chs"] for info in model.feature_info[1:5]]
    return TimmBackbone(model, "intermediates", channels, indices=[1, 2, 3, 4])


class _MMSegHRModule(timm.models.hrnet.HighResolutionModule):
    """timm's HRNet module with mmsegmentation's fusion: a coarser branch is upsampled bilinearly
    (align_corners False) by its scale factor, then resized to the finer branch's size where a side was odd
    (mmseg also resizes to the same size, which returns a copy, bit for bit), where timm upsamples by nearest
    neighbour (mmseg/models/backbones/hrnet.py: ``Upsample(..., mode='bilinear', align_corners=False)`` in
    ``_make_fuse_layers`` and the ``resize`` in ``forward``)."""

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        for i, branch in enumerate(self.branches):
            x[i] = branch(x[i])
        out = []
        for i, fuse_outer in enumerate(self.fuse_layers):
            y = None
            for j, f in enumerate(fuse_outer):
                z = f(x[j])
                if j > i:  # heads.resize skips the same size, which mmseg resizes to as well (a copy)
                    z = resize(z, x[i].shape[-2:])
                y = z if y is None else y + z
            out.append(self.fuse_act(y))
        return out


def _mmseg_fusion(model: nn.Module) -> None:
    """Give every HRNet module of a timm model mmseg's bilinear fusion (same parameters, same keys)."""
    for m in model.modules():
        if isinstance(m, timm.models.hrnet.HighResolutionModule):
            m.__class__ = _MMSegHRModule  # only forward differs; no state to convert
            for up in m.modules():
                if isinstance(up, nn.Upsample):
                    up.mode, up.align_corners = "bilinear", False


def hrnet_backbone(name: str | None = "hrnet_w48", cfg: dict | None = None, **kwargs: Any) -> TimmBackbone:
    """HRNetV2 as mmsegmentation's: the four branch outputs (strides 4..32) before timm's classification
    "incre" modules, the branches fused with mmseg's bilinear upsampling (:class:`_MMSegHRModule`), so any input
    size works and mmseg's HRNet checkpoints give mmseg's outputs. ``kwargs`` go to timm with a ``name``
    (e.g. ``cfg_variant``: another variant's layout under this name)."""
    if name is None:
        if cfg is None:
            raise ValueError("hrnet_backbone(name=None) needs a cfg")
        model = timm.models.hrnet.HighResolutionNetFeatures(
            cfg, feature_location="", out_indices=(1, 2, 3, 4)
        )
    else:
        model = _timm(name, features_only=True, feature_location="", out_indices=(1, 2, 3, 4), **kwargs)
    _mmseg_fusion(model)
    return TimmBackbone(model, "features", model.feature_info.channels())


class _MMSegSwinBlock(timm.models.swin_transformer.SwinTransformerBlock):
    """timm's Swin block with mmsegmentation's window attention order: pad the map to a multiple of the window
    first, then shift, with the shifted-window mask built on the padded map
    (mmseg/models/backbones/swin.py, ``ShiftWindowMSA.forward``). timm shifts first and pads after, which is
    another model whenever a side is not a multiple of the window (a 512 crop's 128x128 stage-1 map is not)."""

    def _attn(self, x: Tensor) -> Tensor:
        _, h, w, c = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
        hp, wp = x.shape[1:3]
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        windows = timm.models.swin_transformer.window_partition(x, self.window_size).view(-1, self.window_area, c)
        windows = self.attn(windows, mask=self.get_attn_mask(x) if shifted else None)
        x = timm.models.swin_transformer.window_reverse(windows.view(-1, wh, ww, c), self.window_size, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :h, :w, :].contiguous()


def _mmseg_windows(model: nn.Module) -> None:
    """mmseg's Swin on a timm Swin built with ``always_partition=True`` (windows never shrunk to a small map,
    odd blocks always shifted, as mmseg): inputs padded to the patch size (mmseg's corner ``AdaptivePadding``)
    and mmseg's pad-then-shift attention (:class:`_MMSegSwinBlock`)."""
    model.patch_embed.dynamic_img_pad = True
    for stage in model.layers:
        for block in stage.blocks:
            if not block.always_partition:
                raise ValueError("mmseg's Swin needs a timm Swin built with always_partition=True")
            block.__class__ = _MMSegSwinBlock  # only _attn differs; same parameters and keys


def swin_backbone(
    name: str | None = "swin_tiny_patch4_window7_224",
    img_size: int = 512,
    drop_path_rate: float = 0.3,
    **kwargs: Any,
) -> TimmBackbone:
    """mmseg's Swin (:func:`_mmseg_windows`) on timm's: any input size, attention masks rebuilt per input
    (timm's ``dynamic_img_size``; ``img_size`` only sets the size the model is first built for), windows of the
    model's size at every stage, maps padded to the window as mmseg pads them. Output LayerNorm per stage as
    mmseg (``norm0..3``); timm's final norm and head are dropped."""
    args = dict(
        num_classes=0, img_size=img_size, dynamic_img_size=True, always_partition=True, drop_path_rate=drop_path_rate
    )
    if name is None:
        model = _timm(timm.models.swin_transformer.SwinTransformer, **args, **kwargs)
    else:
        model = _timm(name, **args, **kwargs)
    model.prune_intermediate_layers(list(range(len(model.layers))), prune_norm=True, prune_head=True)
    _mmseg_windows(model)
    channels = [info["num_chs"] for info in model.feature_info]
    return TimmBackbone(model, "swin", channels, norm="ln")


def convnext_layer_id(name: str, num_layers: int = 8) -> int:
    """mmseg's stage-wise ids for ConvNeXt (``LearningRateDecayOptimizerConstructor``, decay_type
    "stage_wise", num_layers 6 -> 8 ids): stem and every downsampling layer 0, stage i's blocks i + 1,
    everything else (output norms, heads) ``num_layers - 1``."""
    if name.startswith("stem") or (name.startswith("stages.") and ".downsample." in name):
        return 0
    if name.startswith("stages."):
        return int(name.split(".")[1]) + 1
    return num_layers - 1


def convnext_backbone(
    name: str | None = "convnext_tiny", drop_path_rate: float = 0.4, **kwargs: Any
) -> TimmBackbone:
    """ConvNeXt stages 0..3 with mmcls-style channels-first output LayerNorms."""
    args = dict(num_classes=0, drop_path_rate=drop_path_rate)
    if name is None:
        model = _timm(timm.models.convnext.ConvNeXt, **args, **kwargs)
    else:
        model = _timm(name, **args, **kwargs)
    model.prune_intermediate_layers([0, 1, 2, 3], prune_norm=True, prune_head=True)
    channels = [info["num_chs"] for info in model.feature_info]
    return TimmBackbone(
        model,
        "intermediates",
        channels,
        indices=[0, 1, 2, 3],
        norm="ln2d",
        layer_id_fn=convnext_layer_id,
        num_layers=8,
    )


def beit_layer_id(name: str, depth: int) -> int:
    """mmseg's / BEiT's layer-decay ids: embeddings 0, block i -> i + 1, anything else depth + 1."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith(("patch_embed", "rel_pos_bias")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def beit_backbone(
    name: str | None = "beit_base_patch16_224",
    img_size: int = 640,
    indices: Sequence[int] = (3, 5, 7, 11),
    drop_path_rate: float = 0.1,
    **kwargs: Any,
) -> TimmBackbone:
    """BEiT tokens of blocks ``indices`` as stride-16 maps (no final norm, as mmseg's BEiT). BEiT's relative
    position tables are sized for ``img_size``: inputs must have exactly that size."""
    args = dict(num_classes=0, img_size=img_size, drop_path_rate=drop_path_rate)
    model = _timm(timm.models.beit.Beit, **args, **kwargs) if name is None else _timm(name, **args, **kwargs)
    model.prune_intermediate_layers(list(indices), prune_norm=True, prune_head=True)
    depth = len(model.blocks)
    channels = [model.embed_dim] * len(indices)
    backbone = TimmBackbone(
        model,
        "intermediates",
        channels,
        indices=list(indices),
        layer_id_fn=lambda n: beit_layer_id(n, depth),
        num_layers=depth + 2,
    )
    backbone.img_size = tuple(model.patch_embed.img_size)
    return backbone
