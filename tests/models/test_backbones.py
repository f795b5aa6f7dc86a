"""The timm backbone adapters against timm's own feature extraction."""

from __future__ import annotations

import timm
import torch

from rrseg.models.backbones import convnext_backbone, hrnet_backbone, resnet_backbone, swin_backbone
from rrseg.models.ocrnet import _TINY_HRNET


def test_swin_adapter_equals_timm_where_timm_is_mmseg_and_handles_other_sizes():
    """Where every stage map is a multiple of the window and larger than it (448: 112, 56, 28, 14 for window 7),
    timm's Swin computes what mmseg's does, and the adapter equals timm's fixed-size model. Elsewhere they differ
    (timm shrinks the window to a small map and shifts before padding): tests/models/test_mmseg_golden.py checks
    the adapter against mmseg's own outputs there."""
    kw = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7, drop_path_rate=0.0)
    ours = swin_backbone(None, img_size=448, **kw).eval()
    ref = timm.models.swin_transformer.SwinTransformer(img_size=448, num_classes=0, **kw).eval()
    ref.load_state_dict(ours.model.state_dict(), strict=False)
    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        got = ours(x)
        expected = ref.forward_intermediates(x, intermediates_only=True)  # static masks, NCHW
        for g, e, norm in zip(got, expected, ours.norms):
            torch.testing.assert_close(g, norm(e.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        # any size, also non-square, odd and smaller than the built size (padded as mmseg pads)
        assert [tuple(f.shape[-2:]) for f in ours(torch.randn(1, 3, 96, 150))] == [
            (24, 38),
            (12, 19),
            (6, 10),
            (3, 5),
        ]


def test_resnet_adapter_is_dilated_as_mmseg_d8():
    bb = resnet_backbone("resnet50c", output_stride=8).eval()
    assert bb.channels == [256, 512, 1024, 2048]
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]
    layer4 = bb.model.layer4
    # contract_dilation: the first block of a dilated stage keeps the previous rate
    assert layer4[0].conv2.dilation == (2, 2) and layer4[1].conv2.dilation == (4, 4)
    assert bb.model.layer3[0].conv2.dilation == (1, 1) and bb.model.layer3[1].conv2.dilation == (2, 2)


def test_hrnet_adapter_returns_branches_not_incre_features():
    # timm's default feature_location ("incre") would give 128/256/512/1024 channels
    bb = hrnet_backbone(None, cfg=_TINY_HRNET).eval()
    assert bb.channels == [8, 16, 32, 64]
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]


def test_convnext_adapter_normalises_each_stage():
    torch.manual_seed(0)
    bb = convnext_backbone(None, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)).eval()
    with torch.no_grad():
        feats = bb(torch.randn(2, 3, 64, 64))
    for f in feats:  # channels-first LayerNorm at init: zero mean, unit variance over channels
        mean, var = f.mean(1), f.var(1, unbiased=False)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
        # unit up to the LayerNorm's eps (1e-6): var / (var + eps) at each position, ~3e-4 below 1 at most here
        torch.testing.assert_close(var, torch.ones_like(var), atol=2e-3, rtol=0)
