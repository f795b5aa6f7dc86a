"""Smoke test of the mmseg reference environment (make test-mmseg): mmseg's own _base_ model configs, shrunk to tiny
widths, build on mmcv-lite behind the stub mmcv.ops and predict full-size logits in float32 and float64."""

from __future__ import annotations

import pytest
import torch

from tests.reference import mmseg_env

pytestmark = pytest.mark.mmseg

SIZE = 64


def _deeplabv3plus(cfg: dict) -> dict:
    # ResNetV1c-18 at a quarter width: stages of 16, 32, 64, 128 channels (BasicBlock, expansion 1)
    cfg["backbone"].update(depth=18, stem_channels=16, base_channels=16)
    cfg["decode_head"].update(in_channels=128, channels=16, c1_in_channels=16, c1_channels=8)
    cfg["auxiliary_head"].update(in_channels=64, channels=16)
    return cfg


def _ocrnet_hr18(cfg: dict) -> dict:
    extra = cfg["backbone"]["extra"]
    extra["stage1"].update(num_blocks=(1,), num_channels=(8,))
    extra["stage2"].update(num_blocks=(1, 1), num_channels=(4, 8))
    extra["stage3"].update(num_modules=1, num_blocks=(1, 1, 1), num_channels=(4, 8, 16))
    extra["stage4"].update(num_modules=1, num_blocks=(1, 1, 1, 1), num_channels=(4, 8, 16, 32))
    fcn, ocr = cfg["decode_head"]
    fcn.update(in_channels=[4, 8, 16, 32], channels=60)
    ocr.update(in_channels=[4, 8, 16, 32], channels=16, ocr_channels=8)
    return cfg


def _upernet_swin(cfg: dict) -> dict:
    cfg["backbone"].update(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    cfg["decode_head"].update(in_channels=[16, 32, 64, 128], channels=16)
    cfg["auxiliary_head"].update(in_channels=64, channels=16)
    return cfg


def _upernet_convnext(cfg: dict) -> dict:
    cfg["backbone"].update(arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64]))
    cfg["decode_head"].update(in_channels=[8, 16, 32, 64], channels=16)
    cfg["auxiliary_head"].update(in_channels=32, channels=16)
    return cfg


def _upernet_beit(cfg: dict) -> dict:
    cfg["backbone"].update(img_size=(SIZE, SIZE), embed_dims=32, num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3))
    cfg["neck"].update(embed_dim=32)
    cfg["decode_head"].update(in_channels=[32] * 4, channels=16)
    cfg["auxiliary_head"].update(in_channels=32, channels=16)
    return cfg


CASES = {
    "deeplabv3plus_r50-d8": (_deeplabv3plus, 19),
    "ocrnet_hr18": (_ocrnet_hr18, 19),
    "upernet_swin": (_upernet_swin, 19),
    "upernet_convnext": (_upernet_convnext, 19),
    "upernet_beit": (_upernet_beit, 150),
}


@pytest.mark.parametrize("name", list(CASES))
def test_base_config_builds_and_predicts(name: str) -> None:
    if name == "upernet_convnext" and not mmseg_env.mmpretrain_available():
        pytest.skip(f"mmpretrain.ConvNeXt: {mmseg_env.mmpretrain_unavailable_reason()}")
    shrink, num_classes = CASES[name]
    cfg = mmseg_env.base_model_config(name)
    assert "data_preprocessor" not in cfg
    assert "SyncBN" not in repr(cfg)
    torch.manual_seed(0)
    model = mmseg_env.build(shrink(cfg)).eval()
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = mmseg_env.predict_logits(model, x)
        assert logits.shape == (1, num_classes, SIZE, SIZE)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
        # the same through encode_decode (what whole_inference calls)
        metas = [dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE))]
        torch.testing.assert_close(model.encode_decode(x, metas), logits)

        model.double()
        logits64 = mmseg_env.predict_logits(model, x.double())
    assert logits64.dtype == torch.float64
    assert logits64.shape == logits.shape
    scale = logits64.abs().max().item()
    torch.testing.assert_close(logits64.float(), logits, rtol=1e-3, atol=1e-4 * max(scale, 1.0))


def test_mmcv_ops_stub() -> None:
    assert mmseg_env.available()
    import mmcv.ops
    from mmcv.ops import point_sample

    feats = torch.arange(16.0).view(1, 1, 4, 4)
    # align_corners=False: the point (0.5, 0.5) is the centre of the map
    centre = point_sample(feats, torch.tensor([[[0.5, 0.5]]]), align_corners=False)
    assert centre.shape == (1, 1, 1)
    torch.testing.assert_close(centre, feats.mean().view(1, 1, 1))
    with pytest.raises(mmseg_env.MmcvOpsUnavailable, match="compiled extension"):
        from mmcv.ops import RoIAlign  # noqa: F401
    with pytest.raises(ModuleNotFoundError):
        mmcv.ops.sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    assert not hasattr(mmcv.ops, "__path__")
