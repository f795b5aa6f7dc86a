"""The paper families as mmsegmentation builds them, paired with rrseg's models: what the mmseg reference tests
(make test-mmseg) and the golden files they write (tests/models/golden/, checked by the fast tier without mmseg)
are made of. Nothing here imports mmseg or rrseg.

Weights: every floating-point tensor of the mmseg state dict is filled by :func:`fill_state_dict`, a function of
the key and shape alone (splitmix64 over the element index, seeded by the key's CRC-32), so a golden file stores
the key list, not the weights, and the fast tier rebuilds the same mmseg checkpoint bit for bit.
"""

from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

NUM_CLASSES = 4
GOLDEN_DIR = "tests/models/golden"


@dataclass(frozen=True)
class Family:
    """``config``: mmseg's own config of the paper model (folder/name under mmseg's ``configs/``);
    ``tiny``: overrides merged into its ``model`` dict for a tiny-width twin of ``rrseg_tiny`` (rrseg's registered
    test-sized variant, built with ``rrseg_options``); ``rrseg_full``: rrseg's paper variants with the mmseg config
    each mirrors (full size, key-for-key checks); ``eval_size``: whole-image input (H, W); ``slide``: (crop, stride)
    for slide inference on an input of ``slide_size``; ``train_size``: the training crop."""

    config: str
    tiny: dict[str, Any]
    rrseg_tiny: str
    rrseg_options: dict[str, Any]
    rrseg_full: dict[str, str]
    eval_size: tuple[int, int] = (36, 52)
    slide_size: tuple[int, int] = (36, 52)
    slide: tuple[tuple[int, int], tuple[int, int]] = ((32, 40), (20, 24))
    train_size: tuple[int, int] = (32, 32)
    needs: str = "mmseg"  # "mmpretrain" for ConvNeXt
    full_extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # per full config: overrides (e.g. BEiT size)


_HEAD = dict(num_classes=NUM_CLASSES)

FAMILIES: dict[str, Family] = {
    # ResNetV1c with one Bottleneck per stage (rrseg's deeplabv3plus_tiny): mmseg's ResNetV1c class with an extra
    # arch-table entry, registered by the reference as "ResNetV1cOneBlock" (depth 10 = Bottleneck x (1, 1, 1, 1));
    # Bottleneck as R50/R101 (mmseg's BasicBlock dilates only its first conv, timm's both)
    "deeplabv3plus": Family(
        config="deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512",
        tiny=dict(
            backbone=dict(type="ResNetV1cOneBlock", depth=10, stem_channels=16, base_channels=8),
            decode_head=dict(in_channels=256, channels=32, c1_in_channels=32, c1_channels=48, **_HEAD),
            auxiliary_head=dict(in_channels=128, channels=16, **_HEAD),
        ),
        rrseg_tiny="deeplabv3plus_tiny",
        rrseg_options={},
        rrseg_full={
            "deeplabv3plus_r50": "deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512",
            "deeplabv3plus_r101": "deeplabv3plus/deeplabv3plus_r101-d8_4xb4-160k_ade20k-512x512",
        },
    ),
    "ocrnet": Family(
        config="ocrnet/ocrnet_hr18_4xb4-160k_ade20k-512x512",
        tiny=dict(
            backbone=dict(
                extra=dict(
                    stage1=dict(num_modules=1, num_blocks=(1,), num_channels=(8,)),
                    stage2=dict(num_modules=1, num_blocks=(1, 1), num_channels=(8, 16)),
                    stage3=dict(num_modules=1, num_blocks=(1, 1, 1), num_channels=(8, 16, 32)),
                    stage4=dict(num_modules=1, num_blocks=(1, 1, 1, 1), num_channels=(8, 16, 32, 64)),
                )
            ),
            decode_head=[
                dict(in_channels=[8, 16, 32, 64], channels=120, **_HEAD),
                dict(in_channels=[8, 16, 32, 64], channels=32, ocr_channels=16, **_HEAD),
            ],
        ),
        rrseg_tiny="ocrnet_tiny",
        rrseg_options={},
        rrseg_full={
            "ocrnet_hr18": "ocrnet/ocrnet_hr18_4xb4-160k_ade20k-512x512",
            "ocrnet_hr48": "ocrnet/ocrnet_hr48_4xb4-160k_ade20k-512x512",
        },
    ),
    "upernet_swin": Family(
        config="swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512",
        tiny=dict(
            backbone=dict(
                embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7, drop_path_rate=0.0
            ),
            decode_head=dict(in_channels=[16, 32, 64, 128], channels=32, **_HEAD),
            auxiliary_head=dict(in_channels=64, channels=16, **_HEAD),
        ),
        rrseg_tiny="upernet_swin_tiny",
        rrseg_options=dict(drop_path_rate=0.0),
        rrseg_full={
            "upernet_swin_t": "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512",
            "upernet_swin_b": "swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_8xb2-160k_ade20k-512x512",
        },
    ),
    "upernet_convnext": Family(
        config="convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512",
        tiny=dict(
            backbone=dict(arch=dict(depths=[1, 1, 1, 1], channels=[16, 32, 64, 128]), drop_path_rate=0.0),
            decode_head=dict(in_channels=[16, 32, 64, 128], channels=32, **_HEAD),
            auxiliary_head=dict(in_channels=64, channels=16, **_HEAD),
        ),
        rrseg_tiny="upernet_convnext_tiny",
        rrseg_options=dict(drop_path_rate=0.0),
        rrseg_full={"upernet_convnext_t": "convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512"},
        needs="mmpretrain",
    ),
    "upernet_beit": Family(
        config="beit/beit-base_upernet_8xb2-160k_ade20k-640x640",
        tiny=dict(
            backbone=dict(img_size=(32, 32), embed_dims=32, num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3),
                          drop_path_rate=0.0),
            neck=dict(embed_dim=32),
            decode_head=dict(in_channels=[32] * 4, channels=32, **_HEAD),
            auxiliary_head=dict(in_channels=32, channels=16, **_HEAD),
        ),
        rrseg_tiny="upernet_beit_tiny",
        rrseg_options=dict(drop_path_rate=0.0, img_size=32),
        rrseg_full={
            "upernet_beit_b": "beit/beit-base_upernet_8xb2-160k_ade20k-640x640",
            "upernet_beit_l": "beit/beit-large_upernet_8xb1-amp-160k_ade20k-640x640",
        },
        eval_size=(32, 32),
        slide_size=(32, 48),
        slide=((32, 32), (16, 16)),
        train_size=(32, 32),
    ),
}


def merge(base: Any, overrides: Any) -> Any:
    """``overrides`` merged into a copy of ``base``: dicts key by key (recursively), lists element by element
    (OCRNet's two decode heads), anything else replaced."""
    if isinstance(base, dict) and isinstance(overrides, dict):
        out = copy.deepcopy(base)
        for k, v in overrides.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, (list, tuple)) and isinstance(overrides, list) and all(isinstance(o, dict) for o in overrides):
        return [merge(b, o) for b, o in zip(base, overrides)]
    return copy.deepcopy(overrides)


# --------------------------------------------------------------------------------------- deterministic weights
_M = 2**64


def _splitmix64(n: int, seed: int) -> np.ndarray:
    """``n`` pseudo-random doubles in [-1, 1): splitmix64 of ``seed * golden + index`` (integer arithmetic only)."""
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % _M)
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**52 - 1.0


def fill_value(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The float32 value of mmseg state-dict entry ``key``: BN statistics in their ranges, norm weights near 1,
    biases and embeddings small, weights uniform with variance 1/fan-in (activations stay O(1) at any depth)."""
    u = torch.from_numpy(_splitmix64(math.prod(shape), zlib.crc32(key.encode()))).reshape(shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 1.0 + 0.5 * u
    elif leaf == "running_mean" or leaf in ("bias", "q_bias", "v_bias"):
        v = 0.1 * u
    elif len(shape) >= 2 and leaf == "weight":
        v = u * math.sqrt(3.0 / math.prod(shape[1:]))
    elif leaf == "weight":  # norms
        v = 1.0 + 0.2 * u
    elif leaf.startswith("gamma"):  # layer scale
        v = 0.5 + 0.3 * u
    else:  # position tables and embeddings, class token
        v = 0.1 * u
    return v.to(torch.float32)


def fill_state_dict(keys: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    """The mmseg checkpoint of ``{key: (shape, dtype)}``: floating entries filled by :func:`fill_value`;
    ``num_batches_tracked`` 0; other integer buffers (relative-position indices) are the model's own and are
    left out (mmseg recomputes them; rrseg's converter drops them)."""
    out = {}
    for k, (shape, dtype) in keys.items():
        if dtype.startswith("torch.float"):
            out[k] = fill_value(k, tuple(shape))
        elif k.endswith("num_batches_tracked"):
            out[k] = torch.zeros((), dtype=torch.int64)
    return out


def inputs(family: Family) -> dict[str, torch.Tensor]:
    """The eval, slide and training inputs (float32, normalised-image scale) and training labels (NUM_CLASSES
    classes and some 255) of a family, from the same generator."""
    g = torch.Generator().manual_seed(20)
    eval_x = torch.randn((1, 3, *family.eval_size), generator=g)
    slide_x = torch.randn((1, 3, *family.slide_size), generator=g)
    train_x = torch.randn((2, 3, *family.train_size), generator=g)
    labels = torch.randint(0, NUM_CLASSES, (2, *family.train_size), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.15] = 255
    return {"eval": eval_x, "slide": slide_x, "train": train_x, "labels": labels}
