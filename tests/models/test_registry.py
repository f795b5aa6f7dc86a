"""Registry, options, the region branch attached to a model, and the full-size models' settings (no training here)."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from rrseg.errors import RRSegError
from rrseg.models import build_model, list_models, model_options
from rrseg.rebalance import CeCoOptions, ClassCounts, NoRegionLoss, RegionRebalance, RROptions

REQUIRED = [
    "deeplabv3plus_r50",
    "deeplabv3plus_r101",
    "ocrnet_hr18",
    "ocrnet_hr48",
    "upernet_swin_t",
    "upernet_swin_b",
    "upernet_convnext_t",
    "upernet_beit_b",
    "upernet_beit_l",
    "deeplabv3plus_tiny",
    "deeplabv3plus_small",
    "ocrnet_tiny",
    "upernet_swin_tiny",
    "upernet_convnext_tiny",
    "upernet_beit_tiny",
]


def test_list_models_has_every_config_name():
    names = list_models()
    assert set(REQUIRED) <= set(names)
    assert list_models("beit") == sorted(n for n in names if "beit" in n)


def test_unknown_model_suggests_close_names():
    with pytest.raises(RRSegError, match="did you mean upernet_swin_t"):
        build_model("upernet_swin_tt", 10)


def test_bad_options_are_rrseg_errors():
    with pytest.raises(RRSegError, match="unknown option 'img_sise'"):
        build_model("upernet_swin_tiny", 4, img_sise=64)
    with pytest.raises(RRSegError, match="output_stride must be 8 or 16"):
        build_model("deeplabv3plus_tiny", 4, output_stride=12)
    with pytest.raises(RRSegError, match="num_classes"):
        build_model("deeplabv3plus_tiny", 0)
    with pytest.raises(RRSegError, match=r"pretrained=True: give 'timm'"):
        build_model("deeplabv3plus_tiny", 4, pretrained=True)
    with pytest.raises(RRSegError, match="not found"):
        build_model("deeplabv3plus_tiny", 4, pretrained="/nonexistent/weights.pth")
    assert "output_stride" in model_options("deeplabv3plus_r50")


def test_region_branches_build_from_their_typed_options(tmp_path):
    counts = [40, 30, 20, 10]
    assert NoRegionLoss().build(32, 4, counts) is None
    rr = RROptions().build(32, 4, counts)
    assert isinstance(rr, RegionRebalance) and not rr.etf and rr.smooth == 0.5 and rr.ignore_index == 255
    expected = torch.log(torch.tensor(counts, dtype=torch.float64) / sum(counts)).float()
    torch.testing.assert_close(rr.log_prior, expected)
    ceco = CeCoOptions(loss_weight=0.8).build(32, 4, counts, ignore_index=200)
    assert ceco.etf and ceco.smooth == 1.0 and ceco.loss_weight == 0.8 and ceco.ignore_index == 200
    # a released-format counts file
    (tmp_path / "toy_image_label_stats.txt").write_text("\n".join(map(str, counts)) + "\n")
    from_file = RROptions().build(32, 4, str(tmp_path / "toy_image_label_stats.txt"))
    torch.testing.assert_close(from_file.log_prior, expected)
    assert RROptions(prior="none").build(32, 4) is not None  # no counts needed

    with pytest.raises(RRSegError, match=r"^region loss 'rr': prior='region' needs class counts"):
        RROptions().build(32, 4)
    with pytest.raises(RRSegError, match="num_classes is 5"):
        RROptions().build(32, 5, counts)
    with pytest.raises(RRSegError, match=r"^region loss 'rr': smooth is the true-class target probability"):
        RROptions(smooth=1.5).build(32, 4, counts)


def test_every_region_option_reaches_the_branch_with_one_default():
    """The options classes declare the defaults; RegionRebalance's keywords are read from them, and build passes
    every field (a field without a keyword, or with another default, is a second place for a default)."""
    params = inspect.signature(RegionRebalance).parameters
    for cls in (RROptions, CeCoOptions):
        for f in dataclasses.fields(cls):
            if f.name != "type":
                assert params[f.name].default == f.default, (cls.__name__, f.name)
    changed = {"loss_weight": 0.3, "trainable": True, "per_image": True, "prior": "pixel", "smooth": 0.7,
               "reduce_channels": 8, "hidden_channels": 16, "dropout": 0.2, "prior_eps": 1e-6,
               "ignored_region": True, "logit_scale": 3.0, "slots": 2}
    assert set(changed) | {"consistency_weight"} == {f.name for f in dataclasses.fields(CeCoOptions)} - {"type"}
    counts = ClassCounts(np.array([4, 3, 2, 1]), np.array([40, 30, 2, 1]))
    branch = CeCoOptions(**changed).build(32, 4, counts)
    assert branch.reduce[0].out_channels == 8 and branch.gain[0].out_features == 16 and branch.dropout.p == 0.2
    assert all(p.requires_grad for p in branch.parameters())
    for name in ("loss_weight", "per_image", "smooth", "prior_eps", "ignored_region", "logit_scale", "slots"):
        assert getattr(branch, name) == changed[name], name
    assert branch.etf and RROptions(consistency_weight=0.5).build(32, 4, counts).consistency_weight == 0.5
    torch.testing.assert_close(branch.log_prior, torch.log(torch.tensor([40, 30, 2, 1]) / 73 + 1e-6))


def test_a_branch_is_attached_after_the_model_is_built_and_must_fit_it():
    model = build_model("upernet_convnext_tiny", 4)
    branch = CeCoOptions().build(model.feature_channels, 4, [4, 3, 2, 1])
    assert model.set_rebalance(branch) is branch and model.rebalance is branch
    assert list(model.state_dict())[-1].startswith("rebalance.")  # the last module, as its parameters are made
    model.set_rebalance(None)
    assert model.rebalance is None and not any(k.startswith("rebalance.") for k in model.state_dict())
    with pytest.raises(RRSegError, match=r"^the RegionRebalance takes 64 feature channels and 4 classes, but the "
                                         r"model's pixel classifier reads 32 channels and predicts 4 classes$"):
        model.set_rebalance(RROptions().build(64, 4, [4, 3, 2, 1]))
    with pytest.raises(RRSegError, match="predicts 4 classes"):
        model.set_rebalance(RegionRebalance(model.feature_channels, 5, [5, 4, 3, 2, 1]))
    assert model.rebalance is None


def test_the_removed_rebalance_setting_names_the_new_spelling():
    with pytest.raises(RRSegError, match=r"^build_model\(rebalance=\.\.\.\) was removed: .*model\.set_rebalance\("
                                         r"RegionRebalance\(model\.feature_channels, model\.num_classes, counts"):
        build_model("ocrnet_tiny", 4, rebalance={"type": "rr", "counts": [4, 3, 2, 1]})
    model = build_model("ocrnet_tiny", 4)
    for old in ({"type": "rr", "counts": [4, 3, 2, 1]}, "rr"):
        with pytest.raises(RRSegError, match=r"^set_rebalance takes a built branch or None, not a .*RegionRebalance"):
            model.set_rebalance(old)
    with pytest.raises(RRSegError, match=r"build_rebalance was removed: .*model\.set_rebalance\(branch\)"):
        from rrseg.models import build_rebalance  # noqa: F401


# The full-size models with the settings the paper's configs use (mmseg): built, one small forward each.
FULL = [
    # name, options, feature channels, aux in_channels, aux channels, drop path, layer ids
    ("deeplabv3plus_r50", {}, 512, 1024, 256, None, None),
    ("ocrnet_hr18", {}, 512, 18 + 36 + 72 + 144, 270, None, None),
    ("upernet_swin_t", {}, 512, 384, 256, 0.3, None),
    ("upernet_convnext_t", {}, 512, 384, 256, 0.4, 8),
    ("upernet_beit_b", {"img_size": 64}, 768, 768, 256, 0.1, 14),
]


@pytest.mark.parametrize(
    "name,options,feat,aux_in,aux_ch,drop_path,num_layers",
    [pytest.param(*f, marks=pytest.mark.slow) if f[0] == "upernet_beit_b" else f for f in FULL],  # BEiT-B: ~1.5 s
    ids=[f[0] for f in FULL],
)
def test_full_size_model_settings(name, options, feat, aux_in, aux_ch, drop_path, num_layers):
    model = build_model(name, 150, **options)
    assert model.feature_channels == feat and model.decode_head.conv_seg.in_channels == feat
    assert model.auxiliary_head.in_channels == aux_in and model.auxiliary_head.channels == aux_ch
    assert model.aux_loss_weight == pytest.approx(0.4)
    assert model.num_layers == num_layers
    if drop_path is not None:
        rates = [m.drop_prob for m in model.backbone.modules() if type(m).__name__ == "DropPath"]
        assert max(rates) == pytest.approx(drop_path)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 150, 64, 64) and torch.isfinite(out).all()
