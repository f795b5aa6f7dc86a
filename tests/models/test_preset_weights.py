"""The paper presets' backbone weights: each family's timm tag against the checkpoint mmsegmentation's config loads.

``STARTS`` is the reference, written here (never read from rrseg): per preset folder (configs/<model>/) the timm
tag, the tag's origin as timm's ``pretrained_cfg`` has it, the checkpoint mmseg 1.2.2's config for the model loads
(the config file in the comment), and the verdict, "same" only where both are provably the same weights. The tests
check that every preset names its folder's tag, that timm still lists the tag with that origin (a timm change is
noticed), and that each tag loads through timm's hub-cache path from a cache the test writes itself (offline;
nothing is downloaded): fast with a small model of the tag's own architecture, full size for three of them (slow).
docs/FIDELITY.md, "Backbone weights", is this table in words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import timm
import torch

from rrseg.engine.config import load_config
from rrseg.errors import RRSegError
from rrseg.models import build_model
from rrseg.models.backbones import beit_backbone, convnext_backbone, hrnet_backbone, resnet_backbone, swin_backbone
from rrseg.models.weights import PAPER_WEIGHTS, load_pretrained, usual_weights
from tests.models.test_weights import MMSEG_LAYOUTS, _perturb, _rename, _swin_official_to_mmseg

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Start:
    tag: str  # timm "architecture.tag"
    origin: dict  # the tag's pretrained_cfg: hf_hub_id, url, origin_url (None where timm has none)
    mmseg: str  # the checkpoint mmseg 1.2.2's config loads (resolved where it is an open-mmlab:// name)
    verdict: str  # "same" | "differs"
    how: str


def _origin(hub: str, url: str | None = None, origin_url: str | None = None) -> dict:
    return {"hf_hub_id": hub, "url": url, "origin_url": origin_url}


GLUON = "https://github.com/rwightman/pytorch-pretrained-gluonresnet/releases/download/v0.1/"
SWIN = "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
OPENMMLAB = "https://download.openmmlab.com/"

STARTS = {
    "deeplabv3plus_r50": Start(
        "resnet50c.gluon_in1k",
        _origin("timm/resnet50c.gluon_in1k", GLUON + "gluon_resnet50_v1c-48092f55.pth",
                "https://cv.gluon.ai/model_zoo/classification.html"),
        # configs/_base_/models/deeplabv3plus_r50-d8.py L13 pretrained='open-mmlab://resnet50_v1c'
        # (mmengine/hub/openmmlab.json L38)
        OPENMMLAB + "pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
        "differs",
        "GluonCV's ResNet-50 V1c vs open-mmlab's own ImageNet training of the same architecture",
    ),
    "deeplabv3plus_r101": Start(
        "resnet101c.gluon_in1k",
        _origin("timm/resnet101c.gluon_in1k", GLUON + "gluon_resnet101_v1c-1f26822a.pth",
                "https://cv.gluon.ai/model_zoo/classification.html"),
        # configs/deeplabv3plus/deeplabv3plus_r101-d8_4xb4-160k_ade20k-512x512.py L2
        # pretrained='open-mmlab://resnet101_v1c' (mmengine/hub/openmmlab.json L39)
        OPENMMLAB + "pretrain/third_party/resnet101_v1c-e67eebb6.pth",
        "differs",
        "GluonCV's ResNet-101 V1c vs open-mmlab's own ImageNet training of the same architecture",
    ),
    "ocrnet_hr18": Start(
        "hrnet_w18.ms_in1k",
        _origin("timm/hrnet_w18.ms_in1k"),
        # configs/_base_/models/ocrnet_hr18.py L14 pretrained='open-mmlab://msra/hrnetv2_w18'
        # (mmengine/hub/openmmlab.json L21)
        OPENMMLAB + "pretrain/third_party/hrnetv2_w18-00eb2006.pth",
        "differs",
        "not shown to be the same: both are MSRA's HRNetV2-W18 ImageNet-1K weights by name, but timm names only "
        "its hub copy (no source file); ms_in1k, not timm's default ms_aug_in1k (MSRA's later re-training)",
    ),
    "ocrnet_hr48": Start(
        "hrnet_w48.ms_in1k",
        _origin("timm/hrnet_w48.ms_in1k"),
        # configs/ocrnet/ocrnet_hr48_4xb4-160k_ade20k-512x512.py L4 pretrained='open-mmlab://msra/hrnetv2_w48'
        # (mmengine/hub/openmmlab.json L24)
        OPENMMLAB + "pretrain/third_party/hrnetv2_w48-d2186c55.pth",
        "differs",
        "not shown to be the same: both are MSRA's HRNetV2-W48 ImageNet-1K weights by name, but timm names only "
        "its hub copy (no source file)",
    ),
    "upernet_swin_t": Start(
        "swin_tiny_patch4_window7_224.ms_in1k",
        _origin("timm/swin_tiny_patch4_window7_224.ms_in1k", SWIN + "swin_tiny_patch4_window7_224.pth"),
        # configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py L7 checkpoint_file
        OPENMMLAB + "mmsegmentation/v0.5/pretrain/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth",
        "same",
        "mmseg's file is the official swin_tiny_patch4_window7_224.pth (timm's url) through "
        "tools/model_converters/swin2mmseg.py; the RR release loads the official file",
    ),
    "upernet_swin_b": Start(
        "swin_base_patch4_window12_384.ms_in22k",
        _origin("timm/swin_base_patch4_window12_384.ms_in22k", SWIN + "swin_base_patch4_window12_384_22k.pth"),
        # configs/swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512.py L4
        OPENMMLAB + "mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth",
        "same",
        "mmseg's file is the official swin_base_patch4_window12_384_22k.pth (timm's url) through swin2mmseg.py; "
        "the RR release loads the official file",
    ),
    "upernet_convnext_t": Start(
        "convnext_tiny.fb_in1k",
        _origin("timm/convnext_tiny.fb_in1k", "https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth"),
        # configs/convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py L7 checkpoint_file
        OPENMMLAB + "mmclassification/v0/convnext/downstream/"
        "convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth",
        "differs",
        "the EMA weights of the official ImageNet-1K run (timm) vs its non-EMA weights (mmcls's noema file)",
    ),
    "upernet_beit_b": Start(
        "beit_base_patch16_224.in22k_ft_in22k",
        _origin("timm/beit_base_patch16_224.in22k_ft_in22k"),
        # configs/beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py L9 pretrained= (a local file: the official
        # BEiT file through tools/model_converters/beit2mmseg.py)
        "pretrain/beit_base_patch16_224_pt22k_ft22k.pth",
        "differs",
        "not shown to be the same: timm names only its hub copy; the official file is the one timm 0.6 loaded "
        "for beit_base_patch16_224_in22k",
    ),
    "upernet_beit_l": Start(
        "beit_large_patch16_224.in22k_ft_in22k",
        _origin("timm/beit_large_patch16_224.in22k_ft_in22k"),
        # configs/beit/beit-large_upernet_8xb1-amp-160k_ade20k-640x640.py L9 pretrained= (as BEiT-B)
        "pretrain/beit_large_patch16_224_pt22k_ft22k.pth",
        "differs",
        "not shown to be the same: timm names only its hub copy; the official file is the one timm 0.6 loaded "
        "for beit_large_patch16_224_in22k",
    ),
    # Mask2Former (detectron2): the `mmseg` field holds the file the release's config loads
    "mask2former_r50": Start(
        "resnet50.tv_in1k",
        _origin("timm/resnet50.tv_in1k", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                "https://github.com/pytorch/vision"),
        # Mask2Former configs/ade20k/semantic-segmentation/Base-ADE20K-SemanticSegmentation.yaml L5
        # WEIGHTS: "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
        "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/torchvision/R-50.pkl",
        "differs",
        "not shown to be the same: both are torchvision's ImageNet-1K ResNet-50 by name (detectron2's .pkl is its "
        "conversion of torchvision's file; timm names torchvision's resnet50-0676ba61.pth), in another layout",
    ),
    "mask2former_swin_t": Start(
        "swin_tiny_patch4_window7_224.ms_in1k",
        _origin("timm/swin_tiny_patch4_window7_224.ms_in1k", SWIN + "swin_tiny_patch4_window7_224.pth"),
        # Mask2Former configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml L13
        # WEIGHTS: "swin_tiny_patch4_window7_224.pkl" (tools/convert-pretrained-swin-model-to-d2.py of the official)
        "swin_tiny_patch4_window7_224.pkl",
        "same",
        "the release's .pkl is the official swin_tiny_patch4_window7_224.pth (timm's url) re-pickled by its "
        "tools/convert-pretrained-swin-model-to-d2.py (the same tensors, names matched by detectron2 on loading)",
    ),
}


def _presets() -> list[Path]:
    return sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "_base_")


# ---------------------------------------------------------------------------------------------- the table
def test_the_table_covers_every_preset_folder_and_says_same_or_differs():
    folders = {p.parent.name for p in _presets()}
    assert folders == set(STARTS)
    assert len(_presets()) == 46
    for start in STARTS.values():
        assert start.verdict in ("same", "differs") and start.how


@pytest.mark.parametrize("path", _presets(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_preset_names_its_folders_tag(path):
    cfg = load_config(path)  # _base_ inheritance included
    start = STARTS[path.parent.name]
    assert cfg.model.name == path.parent.name
    assert cfg.model.pretrained == f"timm:{start.tag}"


def test_every_tag_is_listed_by_timm_with_the_origin_in_the_table():
    listed = set(timm.list_pretrained())
    for folder, start in STARTS.items():
        assert start.tag in listed, folder
        cfg = timm.models.get_pretrained_cfg(start.tag).to_dict()
        assert {k: cfg.get(k) or None for k in start.origin} == start.origin, folder
        assert start.tag.split(".")[0] == cfg["architecture"]


def test_the_warning_names_the_table_tag():
    """rrseg's own list (the warning's tag for an unset model.pretrained) is the table's."""
    assert {folder: f"timm:{start.tag}" for folder, start in STARTS.items()} == PAPER_WEIGHTS


@pytest.mark.parametrize("folder", list(STARTS))
def test_the_paper_backbone_fits_the_tags_architecture_at_full_size(folder):
    """On the meta device (no memory, no time): the paper model's backbone is timm's architecture of the tag,
    and every tensor it has is in that architecture's classification model (what the hub file holds) with the
    same shape, but BEiT's relative position tables (sized for 224, resized to 640 on loading)."""
    start = STARTS[folder]
    arch = start.tag.split(".")[0]
    with torch.device("meta"):
        model = build_model(folder, 150)
        hub_layout = timm.create_model(arch, num_classes=timm.models.get_pretrained_cfg(start.tag).num_classes)
    assert model.backbone.model.pretrained_cfg["architecture"] == arch
    own, hub = model.backbone.model.state_dict(), hub_layout.state_dict()
    assert not [k for k in own if k not in hub]
    other = [k for k in own if own[k].shape != hub[k].shape]
    assert all(k.endswith("relative_position_bias_table") for k in other) and (bool(other) == arch.startswith("beit"))


# -------------------------------------------------------------------------- every tag through the hub cache
# a backbone of the tag's own timm architecture at a test size, built by rrseg's backbone function for the
# family, and timm's keyword arguments for that size (the "hub" file is timm's classification model of it)
SMALL = {
    "resnet": (resnet_backbone, dict(layers=[1, 1, 1, 1], base_width=16)),
    "hrnet": (hrnet_backbone, dict(cfg_variant="hrnet_w18_small")),
    "swin": (partial(swin_backbone, img_size=64), dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))),
    "convnext": (convnext_backbone, dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))),
    "beit": (partial(beit_backbone, img_size=64, indices=(0, 1, 2, 3)), dict(depth=4, embed_dim=32, num_heads=2)),
}


def _randomised(sd: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's table interpolation warns about torch internals
@pytest.mark.parametrize("folder", list(STARTS))
def test_every_tag_loads_from_a_test_written_hub_cache(folder, hf_hub_cache):
    start = STARTS[folder]
    arch = start.tag.split(".")[0]
    build, size = SMALL[next(f for f in SMALL if arch.startswith(f))]
    backbone = build(arch, **size)
    cfg = timm.models.get_pretrained_cfg(start.tag)
    hub = _randomised(timm.create_model(arch, num_classes=cfg.num_classes, **size).state_dict(), 1)
    hf_hub_cache(cfg.hf_hub_id, hub)  # HF_HUB_OFFLINE=1: from this cache or not at all

    result = load_pretrained(backbone, f"timm:{start.tag}", verbose=False)
    assert result.path == f"timm {start.tag}" and not result.missing
    assert f"{cfg.classifier}.weight" in result.unexpected  # the classifier is not the backbone's
    own = backbone.model.state_dict()
    resized = set(result.resized)
    assert bool(resized) == arch.startswith("beit")  # 224's relative position tables into a 64 model
    for k in result.loaded:
        if k not in resized:
            torch.testing.assert_close(own[k], hub[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["deeplabv3plus_r50", "upernet_swin_t", "upernet_convnext_t"])
def test_paper_models_load_their_tag_at_full_size(folder, hf_hub_cache):
    """build_model with the preset's own spec, from a full-size hub file (the three smallest families'; the
    others' layouts are checked at full size on the meta device above)."""
    start = STARTS[folder]
    cfg = timm.models.get_pretrained_cfg(start.tag)
    hub = _randomised(timm.create_model(start.tag.split(".")[0], num_classes=cfg.num_classes).state_dict(), 2)
    hf_hub_cache(cfg.hf_hub_id, hub)
    model = build_model(folder, 150, pretrained=f"timm:{start.tag}")
    own = model.backbone.model.state_dict()
    for k, v in own.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, hub[k], rtol=0, atol=0, msg=k)


# ------------------------------------------------------------------------------------ from scratch: none
@pytest.mark.parametrize("spec", ["none", "None", "NONE"])
def test_none_means_no_weights(spec):
    torch.manual_seed(0)
    a = build_model("ocrnet_tiny", 3, pretrained=spec)
    torch.manual_seed(0)
    b = build_model("ocrnet_tiny", 3)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)


def test_usual_weights():
    assert usual_weights("upernet_swin_t", build_model("upernet_swin_tiny", 3)) == PAPER_WEIGHTS["upernet_swin_t"]
    for name in ("ocrnet_tiny", "deeplabv3plus_tiny", "deeplabv3plus_small", "upernet_swin_tiny",
                 "upernet_convnext_tiny", "upernet_beit_tiny"):
        assert usual_weights(name, build_model(name, 3)) is None, name  # no timm weights for these backbones
    with torch.device("meta"):  # not a paper model, but a timm backbone with weights: timm's default tag
        assert usual_weights("mine", build_model("ocrnet_hr18", 3)) == "timm:hrnet_w18.ms_aug_in1k"


def test_a_file_named_none_is_given_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RRSegError, match=r"none: weights file not found"):
        build_model("ocrnet_tiny", 3, pretrained="./none")


# ------------------------------------------------------- mmseg's backbone-only ImageNet files, converted
def _mmseg_backbone_only(name: str, source: torch.nn.Module) -> dict:
    """``source``'s backbone in the names of the backbone-only files mmseg's configs load for ImageNet starts:
    ResNetV1c (``stem.*``), Swin after swin2mmseg.py, BEiT after beit2mmseg.py, mmcls ConvNeXt; no prefix."""
    if name == "upernet_swin_tiny":
        official = {re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k): v
                    for k, v in source.backbone.model.state_dict().items()}
        sd = _swin_official_to_mmseg(official)
        sd.update({f"backbone.norm{k[len('norms.'):]}": v for k, v in source.backbone.state_dict().items()
                   if k.startswith("norms.")})
    else:
        sd = _rename({f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}, MMSEG_LAYOUTS[name])
    return {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["deeplabv3plus_tiny", "upernet_swin_tiny", "upernet_beit_tiny",
                                  "upernet_convnext_tiny"])
def test_mmseg_backbone_only_files_are_converted(name, tmp_path):
    torch.manual_seed(0)
    source = build_model(name, 5).eval()
    _perturb(source)
    sd = _mmseg_backbone_only(name, source)
    assert not any(k.startswith(("backbone.", "model.")) for k in sd)
    torch.save({"state_dict": sd}, tmp_path / "pretrain.pth")
    target = build_model(name, 5).eval()
    result = load_pretrained(target, tmp_path / "pretrain.pth", verbose=False)
    assert result.source == "mmseg" and not result.unexpected
    assert not [k for k in result.missing if k.startswith("backbone.")]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(target.backbone(x), source.backbone(x)):
            torch.testing.assert_close(a, b)
