"""mmsegmentation's own outputs for a family of :mod:`tests.reference.families` (needs the make test-mmseg venv).

Everything runs in float64 from the float32 weights of ``families.fill_state_dict``: whole-image logits
(``EncoderDecoder.whole_inference``), slide-window logits (``slide_inference``), and in training mode (batch-norm
on batch statistics, dropout off so that both sides see the same features) the decode head's pre-classifier
features and logits, the auxiliary (OCRNet: soft-region) logits and the two cross-entropy losses of
``model.loss`` with the configs' own loss settings.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tests.reference import families, mmseg_env


def _register_one_block_resnet() -> None:
    """mmseg's ResNetV1c with one more arch-table entry (depth 10: Bottleneck x (1, 1, 1, 1)), so that a tiny
    DeepLabV3+ is mmseg's code with rrseg's test-sized block counts."""
    from mmseg.models.backbones.resnet import Bottleneck, ResNetV1c
    from mmseg.registry import MODELS

    if "ResNetV1cOneBlock" in MODELS.module_dict:
        return

    class ResNetV1cOneBlock(ResNetV1c):
        arch_settings: ClassVar[dict] = {10: (Bottleneck, (1, 1, 1, 1))}

    MODELS.register_module(name="ResNetV1cOneBlock", module=ResNetV1cOneBlock)


def model_config(config: str, overrides: dict[str, Any] | None = None) -> dict:
    """mmseg's model dict of ``config`` (SyncBN as BN, nothing downloaded) with ``overrides`` merged in."""
    cfg = mmseg_env.base_model_config(config)
    return families.merge(cfg, overrides) if overrides else cfg


def build_filled(cfg: dict) -> tuple[nn.Module, dict[str, tuple[tuple[int, ...], str]]]:
    """The mmseg model of ``cfg`` in float64 with the deterministic weights, and its state dict's key table."""
    _register_one_block_resnet()
    model = mmseg_env.build(cfg)
    keys = {k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}
    missing, unexpected = model.load_state_dict(families.fill_state_dict(keys), strict=False)
    assert not unexpected and all(not keys[k][1].startswith("torch.float") for k in missing), missing
    return model.double(), keys


def _metas(shape: tuple[int, int]) -> list[dict]:
    return [dict(img_shape=tuple(shape), ori_shape=tuple(shape), pad_shape=tuple(shape))]


def _decode_heads(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(the head whose classifier RR reads, the auxiliary / soft-region head)."""
    if isinstance(model.decode_head, nn.ModuleList):  # CascadeEncoderDecoder: [FCN soft regions, OCR]
        return model.decode_head[-1], model.decode_head[0]
    return model.decode_head, getattr(model, "auxiliary_head", None)


def outputs(family: families.Family) -> tuple[dict[str, torch.Tensor], dict]:
    """(mmseg's float64 outputs for the family's inputs, the key table of its state dict)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    cfg = model_config(family.config, family.tiny)
    model, keys = build_filled(cfg)
    x = {k: v.double() if v.is_floating_point() else v for k, v in families.inputs(family).items()}
    out: dict[str, torch.Tensor] = {}
    model.eval()
    with torch.no_grad():
        out["eval_logits"] = model.whole_inference(x["eval"], _metas(family.eval_size))
        crop, stride = family.slide
        model.test_cfg = mmseg_env.config_dict(dict(mode="slide", crop_size=crop, stride=stride))
        out["slide_logits"] = model.slide_inference(x["slide"], _metas(family.slide_size))

    # training mode: batch statistics, dropout off (both sides), the decode head's classifier input and output
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.eval()
    head, aux = _decode_heads(model)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        head.conv_seg.register_forward_hook(lambda m, i, o: seen.update(features=i[0], logits=o)),
        aux.conv_seg.register_forward_hook(lambda m, i, o: seen.update(aux_logits=o)),
    ]
    samples = []
    for label in x["labels"]:
        s = SegDataSample(metainfo=dict(img_shape=family.train_size, ori_shape=family.train_size,
                                        pad_shape=family.train_size))
        s.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(s)
    losses = model.loss(x["train"], samples)
    for h in hooks:
        h.remove()
    out.update({k: v.detach() for k, v in seen.items()})
    cascade = isinstance(model.decode_head, nn.ModuleList)
    out["loss_decode"] = losses["decode_1.loss_ce" if cascade else "decode.loss_ce"].detach()
    out["loss_aux"] = losses["decode_0.loss_ce" if cascade else "aux.loss_ce"].detach()
    return out, keys
