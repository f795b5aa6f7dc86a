"""Key conversions for checkpoints written by other code bases, all mechanical (renames, reorders, splits).

- ``hf_to_timm``: Hugging Face transformers checkpoints (the format ``save_pretrained`` writes and the Hub
  holds) of Swin, BEiT and ConvNeXt -> timm names (q/k/v concatenated into timm's fused ``qkv``).
- ``mmseg_to_rrseg``: mmsegmentation checkpoints -> this package's Segmentor names. Backbones: Swin (mmseg's
  own layout, with the nn.Unfold channel order of its patch merging undone, or the official Swin-seg layout),
  BEiT, ConvNeXt (mmcls), ResNetV1c, HRNet (same names as timm). Heads: UPerHead (onto smp's decoder),
  FCNHead, DepthwiseSeparableASPPHead (DeepLabV3+; same names), OCRNet's cascade (``decode_head.0`` is our
  auxiliary head, ``decode_head.1`` the OCR head) and BEiT's Feature2Pyramid neck. The demo's smp DeepLabV3+
  decoder has no mmseg counterpart.
- ``timm_filter``: timm's own ``checkpoint_filter_fn`` of the family (official-repo layouts, resized
  relative-position tables and patch embeddings), applied after the above.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import timm.models.beit
import timm.models.convnext
import timm.models.hrnet
import timm.models.resnet
import timm.models.swin_transformer
import torch
from torch import Tensor, nn

__all__ = ["backbone_family", "hf_to_timm", "is_hf_format", "mmseg_to_rrseg", "timm_filter"]

StateDict = dict[str, Tensor]


def backbone_family(model: nn.Module) -> str:
    """ "swin" | "beit" | "convnext" | "resnet" | "hrnet" | "other" for a timm model."""
    if isinstance(model, timm.models.swin_transformer.SwinTransformer):
        return "swin"
    if isinstance(model, timm.models.beit.Beit):
        return "beit"
    if isinstance(model, timm.models.convnext.ConvNeXt):
        return "convnext"
    if isinstance(model, timm.models.resnet.ResNet):
        return "resnet"
    if isinstance(model, timm.models.hrnet.HighResolutionNet):
        return "hrnet"
    return "other"


def timm_filter(state_dict: StateDict, model: nn.Module) -> StateDict:
    """timm's checkpoint filter for the model's family (a no-op for families without one)."""
    family = backbone_family(model)
    fn: Callable | None = {
        "swin": timm.models.swin_transformer.checkpoint_filter_fn,
        "beit": timm.models.beit.checkpoint_filter_fn,
        "convnext": timm.models.convnext.checkpoint_filter_fn,
    }.get(family)
    if fn is None:
        return state_dict
    if family == "convnext":  # timm's ConvNeXt filter looks up model keys; a pruned model lacks the head
        model_keys = set(model.state_dict())
        if not any(k.startswith(("downsample_layers.", "visual.trunk.")) for k in state_dict):
            return state_dict
        out = fn({k: v for k, v in state_dict.items() if not k.startswith(("head.", "norm."))}, model)
        return {k: v for k, v in out.items() if k in model_keys or not k.startswith("stages.")}
    return fn(state_dict, model)


# --------------------------------------------------------------------------------------------- HF -> timm
def is_hf_format(state_dict: StateDict) -> bool:
    return any(re.match(r"^(\w+\.)?embeddings\.(patch_embeddings|cls_token)", k) for k in state_dict)


def _strip_hf_prefix(state_dict: StateDict) -> StateDict:
    out = {}
    for k, v in state_dict.items():
        m = re.match(r"^(swin|beit|convnext|model)\.(.*)$", k)
        if m and (m.group(2).startswith(("embeddings.", "encoder.", "layernorm", "pooler."))):
            k = m.group(2)
        elif k.startswith(("classifier.", "lm_head.", "decode_head.", "auxiliary_head.", "fpn")):
            out[k] = v  # kept so the load summary lists it as unexpected
            continue
        out[k] = v
    return out


def _fuse_qkv(out: StateDict, src: StateDict, prefix: str, dst: str, kind: str) -> None:
    """q, k, v Linear weights (and biases) -> one fused qkv Linear as timm has it."""
    w = [src.pop(f"{prefix}.{n}.weight") for n in ("query", "key", "value")]
    out[f"{dst}.qkv.weight"] = torch.cat(w, 0)
    biases = {n: src.pop(f"{prefix}.{n}.bias", None) for n in ("query", "key", "value")}
    if kind == "beit":  # BEiT: q and v biases only (k has none)
        if biases["query"] is not None:
            out[f"{dst}.q_bias"] = biases["query"]
        if biases["value"] is not None:
            out[f"{dst}.v_bias"] = biases["value"]
    elif all(b is not None for b in biases.values()):
        out[f"{dst}.qkv.bias"] = torch.cat([biases["query"], biases["key"], biases["value"]], 0)


def _hf_swin(sd: StateDict) -> StateDict:
    out: StateDict = {}
    sd = dict(sd)
    for k in [k for k in sd if k.endswith("attention.self.query.weight")]:
        pre = k[: -len(".query.weight")]
        m = re.match(r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.", pre)
        _fuse_qkv(out, sd, pre, f"layers.{m.group(1)}.blocks.{m.group(2)}.attn", "swin")
    rules = [
        (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (r"^embeddings\.norm\.", "patch_embed.norm."),
        (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.", r"layers.\1.blocks.\2.norm1."),
        (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.", r"layers.\1.blocks.\2.norm2."),
        (
            r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.relative_position_bias_table",
            r"layers.\1.blocks.\2.attn.relative_position_bias_table",
        ),
        (
            r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.output\.dense\.",
            r"layers.\1.blocks.\2.attn.proj.",
        ),
        (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.intermediate\.dense\.", r"layers.\1.blocks.\2.mlp.fc1."),
        (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.output\.dense\.", r"layers.\1.blocks.\2.mlp.fc2."),
        # HF downsamples at the end of a stage, as the official code; timm's filter moves it to the next stage
        (r"^encoder\.layers\.(\d+)\.downsample\.", r"layers.\1.downsample."),
        (r"^layernorm\.", "norm."),
    ]
    return _apply_rules(sd, rules, out, skip=("relative_position_index", "mask_token"))


def _hf_beit(sd: StateDict) -> StateDict:
    out: StateDict = {}
    sd = dict(sd)
    for k in [k for k in sd if k.endswith("attention.attention.query.weight")]:
        pre = k[: -len(".query.weight")]
        i = re.match(r"encoder\.layer\.(\d+)\.", pre).group(1)
        _fuse_qkv(out, sd, pre, f"blocks.{i}.attn", "beit")
    rules = [
        (r"^embeddings\.cls_token$", "cls_token"),
        (r"^embeddings\.position_embeddings$", "pos_embed"),
        (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (
            r"^encoder\.layer\.(\d+)\.attention\.attention\.relative_position_bias\.relative_position_bias_table$",
            r"blocks.\1.attn.relative_position_bias_table",
        ),
        (
            r"^encoder\.relative_position_bias\.relative_position_bias_table$",
            "rel_pos_bias.relative_position_bias_table",
        ),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
        (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
        (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
        (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
        (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
        (r"^encoder\.layer\.(\d+)\.lambda_1$", r"blocks.\1.gamma_1"),
        (r"^encoder\.layer\.(\d+)\.lambda_2$", r"blocks.\1.gamma_2"),
        (r"^pooler\.layernorm\.", "fc_norm."),
        (r"^layernorm\.", "norm."),
    ]
    return _apply_rules(sd, rules, out, skip=("relative_position_index", "mask_token"))


def _hf_convnext(sd: StateDict) -> StateDict:
    rules = [
        (r"^embeddings\.patch_embeddings\.", "stem.0."),
        (r"^embeddings\.layernorm\.", "stem.1."),
        (r"^encoder\.stages\.(\d+)\.downsampling_layer\.(\d+)\.", r"stages.\1.downsample.\2."),
        (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.", r"stages.\1.blocks.\2.conv_dw."),
        (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.", r"stages.\1.blocks.\2.norm."),
        (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv(\d)\.", r"stages.\1.blocks.\2.mlp.fc\3."),
        (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter$", r"stages.\1.blocks.\2.gamma"),
        (r"^layernorm\.", "head.norm."),
    ]
    return _apply_rules(dict(sd), rules, {})


def _apply_rules(sd: StateDict, rules, out: StateDict, skip: tuple[str, ...] = ()) -> StateDict:
    for k, v in sd.items():
        if any(s in k for s in skip):
            continue
        for pattern, repl in rules:
            if re.search(pattern, k):
                k = re.sub(pattern, repl, k)
                break
        out[k] = v
    return out


def hf_to_timm(state_dict: StateDict, model: nn.Module) -> StateDict:
    """A transformers-format Swin / BEiT / ConvNeXt checkpoint in timm names (for ``model``'s family)."""
    family = backbone_family(model)
    sd = _strip_hf_prefix(state_dict)
    if family == "swin":
        return _hf_swin(sd)
    if family == "beit":
        return _hf_beit(sd)
    if family == "convnext":
        return _hf_convnext(sd)
    return sd  # nothing known to convert: the load summary will show what does not match


# -------------------------------------------------------------------------------------- mmseg -> rrseg
def _unfold_to_official(x: Tensor) -> Tensor:
    """Undo mmseg's nn.Unfold channel order in patch merging: (c, kh, kw) -> official (kw, kh, c) blocks."""
    if x.dim() == 2:  # reduction weight [out, 4C]
        out, four_c = x.shape
        return x.reshape(out, four_c // 4, 4).transpose(1, 2)[:, [0, 2, 1, 3], :].reshape(out, four_c)
    four_c = x.shape[0]  # norm weight / bias [4C]
    return x.reshape(four_c // 4, 4).transpose(0, 1)[[0, 2, 1, 3], :].reshape(four_c)


def _mmseg_swin(bb: StateDict) -> StateDict:
    native = any(".w_msa." in k for k in bb)
    out: StateDict = {}
    for k, v in bb.items():
        if "relative_position_index" in k or "attn_mask" in k:
            continue
        m = re.match(r"^norm(\d+)\.(.*)$", k)
        if m:
            out[f"norms.{m.group(1)}.{m.group(2)}"] = v
            continue
        if native:
            k = k.replace("patch_embed.projection.", "patch_embed.proj.")
            k = re.sub(r"^stages\.", "layers.", k)
            k = k.replace(".attn.w_msa.", ".attn.")
            k = k.replace(".ffn.layers.0.0.", ".mlp.fc1.")
            k = k.replace(".ffn.layers.1.", ".mlp.fc2.")
            if ".downsample." in k:
                v = _unfold_to_official(v)
        out[f"model.{k}"] = v
    return out


def _mmseg_beit(bb: StateDict) -> StateDict:
    out: StateDict = {}
    for k, v in bb.items():
        if "relative_position_index" in k:
            continue
        k = k.replace("patch_embed.projection.", "patch_embed.proj.")
        k = re.sub(r"^layers\.(\d+)\.", r"blocks.\1.", k)
        k = k.replace(".ln1.", ".norm1.").replace(".ln2.", ".norm2.")
        k = k.replace(".ffn.layers.0.0.", ".mlp.fc1.").replace(".ffn.layers.1.", ".mlp.fc2.")
        out[f"model.{k}"] = v
    return out


def _mmseg_convnext(bb: StateDict) -> StateDict:
    out: StateDict = {}
    for k, v in bb.items():
        m = re.match(r"^norm(\d+)\.(.*)$", k)
        if m:
            out[f"norms.{m.group(1)}.{m.group(2)}"] = v
            continue
        k = re.sub(r"^downsample_layers\.0\.", "stem.", k)
        k = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", k)
        k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = k.replace(".depthwise_conv.", ".conv_dw.").replace(".pointwise_conv", ".mlp.fc")
        if k.endswith(".gamma") and v.dim() != 1:
            v = v.reshape(-1)
        out[f"model.{k}"] = v
    return out


def _mmseg_resnet(bb: StateDict) -> StateDict:
    stem = {
        "stem.0.": "conv1.0.",
        "stem.1.": "conv1.1.",
        "stem.3.": "conv1.3.",
        "stem.4.": "conv1.4.",
        "stem.6.": "conv1.6.",
        "stem.7.": "bn1.",
    }
    out: StateDict = {}
    for k, v in bb.items():
        for a, b in stem.items():
            if k.startswith(a):
                k = b + k[len(a) :]
                break
        out[f"model.{k}"] = v
    return out


def _mmseg_uperhead(head: StateDict, levels: int = 4) -> StateDict:
    out: StateDict = {}
    cbr = {"conv": "0", "bn": "1"}
    for k, v in head.items():
        m = re.match(r"^psp_modules\.(\d+)\.1\.(conv|bn)\.(.*)$", k)
        if m:
            out[f"decoder.psp.blocks.{m.group(1)}.1.{cbr[m.group(2)]}.{m.group(3)}"] = v
            continue
        m = re.match(r"^bottleneck\.(conv|bn)\.(.*)$", k)
        if m:
            out[f"decoder.psp.out_conv.{cbr[m.group(1)]}.{m.group(2)}"] = v
            continue
        m = re.match(r"^(lateral_convs|fpn_convs)\.(\d+)\.(conv|bn)\.(.*)$", k)
        if m:  # mmseg counts from the finest level, smp from the coarsest
            j = levels - 2 - int(m.group(2))
            if m.group(1) == "lateral_convs":
                out[f"decoder.fpn_lateral_blocks.{j}.conv_norm_relu.{cbr[m.group(3)]}.{m.group(4)}"] = v
            else:
                out[f"decoder.fpn_conv_blocks.{j}.{cbr[m.group(3)]}.{m.group(4)}"] = v
            continue
        m = re.match(r"^fpn_bottleneck\.(conv|bn)\.(.*)$", k)
        if m:
            out[f"decoder.fusion_block.{cbr[m.group(1)]}.{m.group(2)}"] = v
            continue
        out[k] = v  # conv_seg.*, and anything unknown (e.g. RR's branch) for the summary
    return out


def mmseg_to_rrseg(state_dict: StateDict, segmentor: nn.Module) -> StateDict:
    """An mmsegmentation (or mmcls ``backbone.``-prefixed) state dict in this package's Segmentor names."""
    groups: dict[str, StateDict] = {}
    for k, v in state_dict.items():
        head, _, rest = k.partition(".")
        groups.setdefault(head, {})[rest] = v
    out: StateDict = {}
    timm_model = segmentor.backbone.model
    family = backbone_family(timm_model)
    bb = groups.pop("backbone", {})
    convert = {"swin": _mmseg_swin, "beit": _mmseg_beit, "convnext": _mmseg_convnext, "resnet": _mmseg_resnet}
    bb = convert.get(family, lambda d: {f"model.{k}": v for k, v in d.items()})(bb)
    # timm's filter on the timm part: official layouts, relative-position tables resized to this model
    timm_part = {k[len("model.") :]: v for k, v in bb.items() if k.startswith("model.")}
    timm_part = timm_filter(timm_part, timm_model)
    out.update({f"backbone.model.{k}": v for k, v in timm_part.items()})
    out.update({f"backbone.{k}": v for k, v in bb.items() if not k.startswith("model.")})

    decode = groups.pop("decode_head", {})
    is_uper = type(segmentor.decode_head).__name__ == "UPerHead"
    if getattr(segmentor, "cascade", False) and any(k.startswith(("0.", "1.")) for k in decode):
        for k, v in decode.items():  # CascadeEncoderDecoder: decode_head.0 = FCN (our aux), .1 = OCR
            idx, _, rest = k.partition(".")
            out[f"{'auxiliary_head' if idx == '0' else 'decode_head'}.{rest}"] = v
    else:
        decode = _mmseg_uperhead(decode) if is_uper else decode
        out.update({f"decode_head.{k}": v for k, v in decode.items()})
    for k, v in groups.pop("auxiliary_head", {}).items():
        out[f"auxiliary_head.{k}"] = v
    for k, v in groups.pop("neck", {}).items():
        out[f"neck.{k}"] = v
    for group, rest in groups.items():  # e.g. mmcls "head.*": left for the summary
        out.update({f"{group}.{k}": v for k, v in rest.items()})
    return out
