"""Weight loading from other code bases, checked against reference implementations where there is one."""

from __future__ import annotations

import json
import logging
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from rrseg.errors import RRSegError
from rrseg.models import build_model
from rrseg.models.checkpoint_conversion import _unfold_to_official
from rrseg.models.weights import load_pretrained, read_state_dict


@pytest.fixture
def transformers():
    """transformers (extra ``hf``, and a dev dependency: the tests that compare against it fail without it)."""
    import transformers

    return transformers


def _perturb(module: nn.Module, scale: float = 0.05) -> None:
    """Move every parameter and BN statistic off its init, so a wrong mapping cannot go unnoticed."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


# ------------------------------------------------------------------ Hugging Face transformers -> timm
def test_hf_swin_matches_transformers(transformers, tmp_path):
    cfg = transformers.SwinConfig(
        image_size=64, embed_dim=16, depths=[2, 2, 2], num_heads=[1, 2, 2], window_size=4
    )
    hf = transformers.SwinModel(cfg).eval()
    _perturb(hf, 0.02)
    hf.save_pretrained(tmp_path)
    ours = timm.models.swin_transformer.SwinTransformer(
        img_size=64, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 2), window_size=4, num_classes=0
    ).eval()
    result = load_pretrained(ours, tmp_path, verbose=False)
    assert result.source == "hf" and not result.missing
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = hf(x).last_hidden_state.reshape(2, 4, 4, -1)
        torch.testing.assert_close(ours.forward_features(x), expected, rtol=1e-4, atol=1e-4)


def test_hf_beit_matches_transformers(transformers, tmp_path):
    cfg = transformers.BeitConfig(
        image_size=64,
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=128,
        use_relative_position_bias=True,
        use_absolute_position_embeddings=False,
        layer_scale_init_value=0.1,
        use_mask_token=False,
    )
    hf = transformers.BeitModel(cfg).eval()
    _perturb(hf, 0.02)
    hf.save_pretrained(tmp_path)
    # into a whole BEiT UPerNet: the backbone part loads, heads stay as initialised
    model = build_model("upernet_beit_tiny", 4, img_size=64).eval()
    model.backbone.model.blocks = model.backbone.model.blocks[:3]
    result = load_pretrained(model, tmp_path, verbose=False)
    assert result.source == "hf" and result.target == "backbone.model" and not result.missing
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = hf(x, output_hidden_states=True).hidden_states[-1][:, 1:]  # last block, patch tokens
        got = model.backbone.model.forward_intermediates(x, indices=[2], intermediates_only=True)[0]
        torch.testing.assert_close(got.flatten(2).transpose(1, 2), expected, rtol=1e-4, atol=1e-4)


def test_hf_convnext_matches_transformers(transformers, tmp_path):
    cfg = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1], layer_scale_init_value=0.5
    )
    hf = transformers.ConvNextModel(cfg).eval()
    _perturb(hf, 0.02)
    hf.save_pretrained(tmp_path)
    ours = timm.models.convnext.ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64), num_classes=0).eval()
    load_pretrained(ours, tmp_path, verbose=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = hf(x, output_hidden_states=True).hidden_states[1:]
        for got, exp in zip(ours.forward_intermediates(x, intermediates_only=True), expected):
            torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)


def test_sharded_hf_folder(tmp_path):
    model = timm.models.convnext.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=0)
    sd = model.state_dict()
    keys = sorted(sd)
    half = len(keys) // 2
    save_file({k: sd[k] for k in keys[:half]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in keys[half:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: f"model-0000{1 + (i >= half)}-of-00002.safetensors" for i, k in enumerate(keys)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert set(read_state_dict(tmp_path)) == set(keys)


# ------------------------------------------------------------------------- mmsegmentation checkpoints
def _mmseg_patch_merging(x: torch.Tensor, norm: nn.LayerNorm, reduction: nn.Linear) -> torch.Tensor:
    """mmseg's PatchMerging forward (nn.Unfold based), as in mmseg/models/backbones/swin.py."""
    b, h, w, _ = x.shape
    x = x.permute(0, 3, 1, 2)
    x = nn.Unfold(kernel_size=2, stride=2)(x).transpose(1, 2)  # B, H/2*W/2, 4C in (c, kh, kw) order
    return reduction(norm(x)).reshape(b, h // 2, w // 2, -1)


def test_mmseg_patch_merging_order_is_undone():
    c = 8
    mm_norm, mm_red = nn.LayerNorm(4 * c), nn.Linear(4 * c, 2 * c, bias=False)
    _perturb(mm_norm, 0.5)
    _perturb(mm_red, 0.5)
    ours = timm.models.swin_transformer.PatchMerging(dim=c)
    with torch.no_grad():
        ours.norm.weight.copy_(_unfold_to_official(mm_norm.weight))
        ours.norm.bias.copy_(_unfold_to_official(mm_norm.bias))
        ours.reduction.weight.copy_(_unfold_to_official(mm_red.weight))
        x = torch.randn(2, 6, 10, c)
        torch.testing.assert_close(ours(x), _mmseg_patch_merging(x, mm_norm, mm_red))


def _swin_official_to_mmseg(sd: dict) -> dict:
    """mmseg's tools/model_converters/swin2mmseg.py (official Swin -> mmseg), for the round trip below."""

    def reduction_order(x):
        out_c, in_c = x.shape
        return x.reshape(out_c, 4, in_c // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_c, in_c)

    def norm_order(x):
        return x.reshape(4, x.shape[0] // 4)[[0, 2, 1, 3], :].transpose(0, 1).reshape(x.shape[0])

    out = {}
    for k, v in sd.items():
        if k.startswith("layers"):
            if "attn." in k:
                k = k.replace("attn.", "attn.w_msa.")
            elif "mlp.fc1." in k:
                k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
            elif "mlp.fc2." in k:
                k = k.replace("mlp.fc2.", "ffn.layers.1.")
            elif "downsample.reduction." in k:
                v = reduction_order(v)
            elif "downsample.norm." in k:
                v = norm_order(v)
            k = k.replace("layers", "stages", 1)
        elif k.startswith("patch_embed"):
            k = k.replace("proj", "projection")
        out["backbone." + k] = v
    return out


def _uper_to_mmseg(head: dict) -> dict:
    """Our (smp) UPerNet decoder keys in mmseg's UPerHead names, written from mmseg's module layout."""
    out = {}
    cbr = {"0": "conv", "1": "bn"}
    for k, v in head.items():
        k = re.sub(
            r"^decoder\.psp\.blocks\.(\d)\.1\.(\d)\.", lambda m: f"psp_modules.{m[1]}.1.{cbr[m[2]]}.", k
        )
        k = re.sub(r"^decoder\.psp\.out_conv\.(\d)\.", lambda m: f"bottleneck.{cbr[m[1]]}.", k)
        k = re.sub(
            r"^decoder\.fpn_lateral_blocks\.(\d)\.conv_norm_relu\.(\d)\.",
            lambda m: f"lateral_convs.{2 - int(m[1])}.{cbr[m[2]]}.",
            k,
        )
        k = re.sub(
            r"^decoder\.fpn_conv_blocks\.(\d)\.(\d)\.", lambda m: f"fpn_convs.{2 - int(m[1])}.{cbr[m[2]]}.", k
        )
        k = re.sub(r"^decoder\.fusion_block\.(\d)\.", lambda m: f"fpn_bottleneck.{cbr[m[1]]}.", k)
        out[k] = v
    return out


class _ConvModule(nn.Module):
    def __init__(self, cin, cout, k=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _MMSegUPerHead(nn.Module):
    """mmseg's UPerHead forward (mmseg/models/decode_heads/uper_head.py), as the reference."""

    def __init__(self, in_channels, channels, num_classes, scales=(1, 2, 3, 6)):
        super().__init__()
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _ConvModule(in_channels[-1], channels)) for s in scales
        )
        self.bottleneck = _ConvModule(in_channels[-1] + len(scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(_ConvModule(c, channels) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(_ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = _ConvModule(len(in_channels) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs):
        def up(x, ref):
            return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)

        x = inputs[-1]
        psp = self.bottleneck(torch.cat([x] + [up(m(x), x) for m in self.psp_modules], 1))
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)] + [psp]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + up(laterals[i], laterals[i - 1])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals) - 1)] + [laterals[-1]]
        outs = [outs[0]] + [up(o, outs[0]) for o in outs[1:]]
        return self.conv_seg(self.fpn_bottleneck(torch.cat(outs, 1)))


def test_mmseg_uperhead_maps_onto_smp_decoder(tmp_path):
    model = build_model("upernet_convnext_tiny", 5).eval()
    ref = _MMSegUPerHead(model.backbone.channels, model.feature_channels, 5).eval()
    _perturb(ref)
    ckpt = {"meta": {"CLASSES": ["a", "b", "c", "d", "e"]}, "state_dict": {}}
    ckpt["state_dict"] = {f"decode_head.{k}": v for k, v in ref.state_dict().items()}
    torch.save(ckpt, tmp_path / "mmseg.pth")
    result = load_pretrained(model, tmp_path / "mmseg.pth", verbose=False)
    assert result.source == "mmseg" and not result.unexpected
    assert not [k for k in result.missing if k.startswith("decode_head.")]
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip(model.backbone.channels, (4, 8, 16, 32))]
    with torch.no_grad():
        torch.testing.assert_close(model.decode_head(feats), ref(feats))


def test_mmseg_swin_upernet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    source = build_model("upernet_swin_tiny", 5).eval()
    _perturb(source)
    # official Swin layout: downsampling at the end of a stage (timm: at the start of the next one)
    official = {}
    for k, v in source.backbone.model.state_dict().items():
        k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k)
        official[k] = v
    sd = _swin_official_to_mmseg(official)
    sd.update(
        {
            f"backbone.norm{k[len('norms.') :]}": v
            for k, v in source.backbone.state_dict().items()
            if k.startswith("norms.")
        }
    )
    sd.update({f"decode_head.{k}": v for k, v in _uper_to_mmseg(source.decode_head.state_dict()).items()})
    sd.update({f"auxiliary_head.{k}": v for k, v in source.auxiliary_head.state_dict().items()})
    assert "backbone.stages.0.downsample.reduction.weight" in sd  # mmseg's layout indeed
    assert "backbone.stages.1.blocks.1.attn.w_msa.relative_position_bias_table" in sd
    torch.save({"state_dict": sd}, tmp_path / "upernet_swin_mmseg.pth")

    target = build_model("upernet_swin_tiny", 5).eval()
    result = load_pretrained(target, tmp_path / "upernet_swin_mmseg.pth", verbose=False)
    assert not result.missing and not result.unexpected
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


def _rename(sd: dict, rules: list[tuple[str, str]]) -> dict:
    out = {}
    for k, v in sd.items():
        for a, b in rules:
            k = re.sub(a, b, k)
        out[k] = v
    return out


# our keys -> mmseg's, written from mmseg's / mmcls's module names
MMSEG_LAYOUTS = {
    "upernet_beit_tiny": [
        (r"^backbone\.model\.blocks\.(\d+)\.", r"backbone.layers.\1."),
        (r"\.norm1\.", ".ln1."),
        (r"\.norm2\.", ".ln2."),
        (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
        (r"\.mlp\.fc2\.", ".ffn.layers.1."),
        (r"^backbone\.model\.patch_embed\.proj\.", "backbone.patch_embed.projection."),
        (r"^backbone\.model\.", "backbone."),
        (r"^decode_head\.(.*)$", r"UPER:\1"),
    ],
    "upernet_convnext_tiny": [
        (r"^backbone\.model\.stem\.", "backbone.downsample_layers.0."),
        (r"^backbone\.model\.stages\.(\d+)\.downsample\.", r"backbone.downsample_layers.\1."),
        (r"^backbone\.model\.stages\.(\d+)\.blocks\.(\d+)\.", r"backbone.stages.\1.\2."),
        (r"\.conv_dw\.", ".depthwise_conv."),
        (r"\.mlp\.fc(\d)\.", r".pointwise_conv\1."),
        (r"^backbone\.norms\.(\d+)\.", r"backbone.norm\1."),
        (r"^decode_head\.(.*)$", r"UPER:\1"),
    ],
    "deeplabv3plus_tiny": [
        (r"^backbone\.model\.conv1\.(\d)\.", r"backbone.stem.\1."),
        (r"^backbone\.model\.bn1\.", "backbone.stem.7."),
        (r"^backbone\.model\.", "backbone."),  # DepthwiseSeparableASPPHead: mmseg's names as they are
    ],
    "ocrnet_tiny": [  # CascadeEncoderDecoder: decode_head.0 = FCN soft regions, decode_head.1 = OCR head
        (r"^backbone\.model\.", "backbone."),
        (r"^decode_head\.", "decode_head.1."),
        (r"^auxiliary_head\.", "decode_head.0."),
    ],
}


@pytest.mark.parametrize("name", list(MMSEG_LAYOUTS))
def test_mmseg_layouts_load(name, tmp_path):
    torch.manual_seed(0)
    source = build_model(name, 5).eval()
    _perturb(source)
    sd = {}
    for k, v in _rename(source.state_dict(), MMSEG_LAYOUTS[name]).items():
        if not k:
            continue
        sd[k] = v
    uper = {k[len("UPER:") :]: v for k, v in sd.items() if k.startswith("UPER:")}
    sd = {k: v for k, v in sd.items() if not k.startswith("UPER:")}
    sd.update({f"decode_head.{k}": v for k, v in _uper_to_mmseg(uper).items()})
    torch.save({"state_dict": sd}, tmp_path / "mmseg.pth")
    target = build_model(name, 5).eval()
    result = load_pretrained(target, tmp_path / "mmseg.pth", verbose=False)
    assert result.source == "mmseg" and not result.unexpected and not result.missing
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's table interpolation warns about torch internals
def test_beit_relative_position_tables_are_resized_to_the_model(tmp_path):
    small = build_model("upernet_beit_tiny", 4, img_size=64)
    torch.save(small.backbone.model.state_dict(), tmp_path / "beit_64.pth")
    big = build_model("upernet_beit_tiny", 4, img_size=128)
    result = load_pretrained(big, tmp_path / "beit_64.pth", verbose=False)
    tables = [k for k in result.loaded if k.endswith("relative_position_bias_table")]
    assert tables and set(tables) <= set(result.resized)
    table = big.backbone.model.blocks[0].attn.relative_position_bias_table
    assert table.shape == (15 * 15 + 3, 2)
    # the three cls-token entries are carried over as they are
    small_table = small.backbone.model.blocks[0].attn.relative_position_bias_table
    torch.testing.assert_close(table[-3:], small_table[-3:])


# ------------------------------------------------------------------------------------- bad files
def test_unreadable_and_unmatched_files(tmp_path):
    model = build_model("deeplabv3plus_tiny", 4)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RRSegError, match=r"junk\.pth: cannot read"):
        load_pretrained(model, tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(RRSegError, match=r"junk\.safetensors"):
        load_pretrained(model, tmp_path / "junk.safetensors")
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(RRSegError, match="no tensor matches"):
        load_pretrained(model, tmp_path / "other.pth")
    torch.save({"x": nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a pickled module: weights_only refuses
    with pytest.raises(RRSegError, match="weights-only"):
        load_pretrained(model, tmp_path / "pickled.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(RRSegError, match=r"no model\.safetensors"):
        load_pretrained(model, tmp_path / "empty_dir")


def test_packaged_demo_backbone_loads_by_name():
    """The demo's pretrained backbone is package data: found by name wherever rrseg is installed, and it
    fills every backbone tensor of the demo model (nothing of the decoder)."""
    from safetensors import safe_open

    from rrseg.models.weights import packaged_weights

    path = packaged_weights()["demo_small_backbone"]
    assert path.stat().st_size < 10e6
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        first = f.get_tensor("conv1.0.weight")
    assert meta["recipe"] == "benchmarks/pretrain_demo_backbone.py"
    assert json.loads(meta["dataset"])["kind"] == "pretrain"
    model = build_model("deeplabv3plus_small", num_classes=30, pretrained="rrseg:demo_small_backbone")
    torch.testing.assert_close(model.backbone.model.conv1[0].weight, first, rtol=0, atol=0)
    scratch = build_model("deeplabv3plus_small", num_classes=30)
    backbone_keys = set(scratch.backbone.model.state_dict())
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == backbone_keys


def test_load_summary_is_logged_and_can_be_silenced(caplog):
    """load_pretrained logs its summary at INFO (logger rrseg.models.weights): a level above INFO on the
    ``rrseg`` logger (what ``rrseg --quiet`` sets) silences it, as does ``verbose=False``."""
    model = build_model("deeplabv3plus_small", num_classes=30)
    caplog.set_level(logging.INFO, logger="rrseg")
    load_pretrained(model, "rrseg:demo_small_backbone")
    [record] = [r for r in caplog.records if r.name == "rrseg.models.weights"]
    assert record.levelno == logging.INFO and "demo_small_backbone" in record.getMessage()
    caplog.clear()
    load_pretrained(model, "rrseg:demo_small_backbone", verbose=False)
    assert not caplog.records
    caplog.set_level(logging.WARNING, logger="rrseg")
    load_pretrained(model, "rrseg:demo_small_backbone")
    assert not caplog.records


def test_unknown_packaged_weights_name_is_one_line():
    with pytest.raises(RRSegError, match=r"rrseg:nope: no packaged weights of that name; packaged: .*demo_small"):
        build_model("deeplabv3plus_small", num_classes=30, pretrained="rrseg:nope")
