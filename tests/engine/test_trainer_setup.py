"""What the trainer builds before the first step, in-process: SyncBN conversion, the RR branch's ignore index,
the loss terms' averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from torch import nn

from rrseg.engine.components import build_criterion, convert_sync_bn
from rrseg.engine.config import load_config, parse_config
from rrseg.engine.trainer import Trainer
from rrseg.models import build_model
from rrseg.rebalance import ClassCounts


@pytest.mark.parametrize("name", ["deeplabv3plus_tiny", "upernet_swin_tiny"])
def test_sync_bn_keeps_the_rr_batchnorm_per_process(name):
    model = build_model(name, num_classes=4, rebalance={"type": "rr", "counts": [9, 5, 2, 1]})
    keys = list(model.state_dict())
    rr_bn = model.rebalance.reduce[1]
    converted = convert_sync_bn(model)
    assert list(converted.state_dict()) == keys
    assert converted.rebalance.reduce[1] is rr_bn and type(rr_bn) is nn.BatchNorm2d
    outside = [(n, m) for n, m in converted.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and not n.startswith("rebalance.")]
    assert outside and all(type(m) is nn.SyncBatchNorm for _, m in outside), [n for n, _ in outside]
    # without a branch every BatchNorm is converted
    plain = convert_sync_bn(build_model(name, num_classes=4))
    assert not any(type(m) is nn.BatchNorm2d for m in plain.modules())


def write_folder_dataset(root: Path, ignore_index: int) -> None:
    """3 classes, 32x32 images; every label has some pixels equal to ``ignore_index``."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": ["a", "b", "c"], "ignore_index": ignore_index}))
    for split, n in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.repeat(np.arange(3, dtype=np.uint8), 11)[:32][None, :].repeat(32, 0)
            label[:4] = ignore_index
            Image.fromarray(label).save(root / "labels" / split / f"{i}.png")
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i}.jpg")


@pytest.mark.parametrize("region", ["rr", "ceco"])
def test_rr_branch_takes_the_ignore_index_of_the_training_data(tmp_path, region):
    write_folder_dataset(tmp_path / "data", ignore_index=200)
    cfg = {
        "model": {"name": "deeplabv3plus_tiny"},
        "data": {"train": {"type": "folder", "root": str(tmp_path / "data"), "split": "train"},
                 "val": {"type": "folder", "root": str(tmp_path / "data"), "split": "val"},
                 "batch_size": 2, "workers": 0, "crop_size": [32, 32], "scale": [32, 32]},
        "loss": {"region": {"type": region}, "counts": None},
        "train": {"deterministic": False, "tensorboard": False, "progress": False},
        "work_dir": str(tmp_path / "work"),
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    trainer = Trainer(load_config(tmp_path / "cfg.yaml"), device="cpu")
    parts = trainer.setup()
    assert parts.ignore_index == 200
    assert parts.model.rebalance.ignore_index == 200
    pixel = parts.criterion.terms[0]
    assert pixel.ignore_index == 200


@pytest.mark.parametrize("avg_non_ignore", [True, False])
@pytest.mark.parametrize("kind", ["ce", "weighted_ce", "focal", "balanced_softmax", "blv"])
def test_every_pixel_term_and_the_aux_ce_follow_avg_non_ignore(kind, avg_non_ignore):
    cfg = parse_config({"loss": {"pixel": {"type": kind, "avg_non_ignore": avg_non_ignore}}})
    model = build_model("ocrnet_tiny", num_classes=4)
    criterion = build_criterion(cfg, model, ClassCounts(np.array([9, 5, 2, 1]), np.array([900, 500, 20, 10])), 4)
    assert [t.name for t in criterion.terms][1:] == ["loss_aux"]
    assert [t.avg_non_ignore for t in criterion.terms] == [avg_non_ignore, avg_non_ignore]


def test_weight_sum_rule_reaches_weighted_ce():
    cfg = parse_config({"loss": {"pixel": {"type": "weighted_ce", "divide_by_weight_sum": True}}})
    criterion = build_criterion(cfg, build_model("ocrnet_tiny", num_classes=4), ClassCounts(np.array([9, 5, 2, 1]),
                                np.array([900, 500, 20, 10])), 4)
    assert criterion.terms[0].divide_by_weight_sum and not criterion.terms[1].divide_by_weight_sum
