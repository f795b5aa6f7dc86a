"""Registry, options, the ``rebalance`` setting, and the full-size models' settings (no training here)."""

from __future__ import annotations

import pytest
import torch

from rrseg.errors import RRSegError
from rrseg.models import build_model, build_rebalance, list_models, model_options
from rrseg.rebalance import RegionRebalance

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


def test_rebalance_settings(tmp_path):
    counts = [40, 30, 20, 10]
    assert build_rebalance(None, 32, 4) is None
    assert build_rebalance("none", 32, 4) is None
    rr = build_rebalance({"type": "rr", "counts": counts}, 32, 4)
    assert isinstance(rr, RegionRebalance) and not rr.etf and rr.smooth == 0.5
    expected = torch.log(torch.tensor(counts, dtype=torch.float64) / sum(counts)).float()
    torch.testing.assert_close(rr.log_prior, expected)
    ceco = build_rebalance({"type": "ceco", "counts": counts, "loss_weight": 0.8}, 32, 4)
    assert ceco.etf and ceco.smooth == 1.0 and ceco.loss_weight == 0.8
    # a released-format counts file
    (tmp_path / "toy_image_label_stats.txt").write_text("\n".join(map(str, counts)) + "\n")
    from_file = build_rebalance({"type": "rr", "counts": str(tmp_path / "toy_image_label_stats.txt")}, 32, 4)
    torch.testing.assert_close(from_file.log_prior, expected)
    assert build_rebalance({"type": "rr", "prior": "none"}, 32, 4) is not None  # no counts needed
    assert build_rebalance(rr, 32, 4) is rr

    with pytest.raises(RRSegError, match="needs class counts"):
        build_rebalance("rr", 32, 4)
    with pytest.raises(RRSegError, match="type must be"):
        build_rebalance({"type": "focal", "counts": counts}, 32, 4)
    with pytest.raises(RRSegError, match="unknown option 'smoth'"):
        build_rebalance({"type": "rr", "counts": counts, "smoth": 0.5}, 32, 4)
    with pytest.raises(RRSegError, match="num_classes is 5"):
        build_rebalance({"type": "rr", "counts": counts}, 32, 5)
    with pytest.raises(RRSegError, match="smooth"):
        build_rebalance({"type": "rr", "counts": counts, "smooth": 1.5}, 32, 4)
    with pytest.raises(RRSegError, match="feature channels"):
        build_rebalance(rr, 64, 4)


def test_model_rebalance_attaches_to_feature_channels():
    model = build_model("upernet_convnext_tiny", 4, rebalance={"type": "ceco", "counts": [4, 3, 2, 1]})
    assert model.rebalance.reduce[0].in_channels == model.feature_channels
    assert model.rebalance.etf
    model.set_rebalance(None)
    assert model.rebalance is None and not any(k.startswith("rebalance.") for k in model.state_dict())


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
