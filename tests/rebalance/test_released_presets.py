"""Every RR / CeCo preset (configs/*/*_rr.yaml, *_ceco.yaml) against the released numbers of released.py: the
config as rrseg's loader resolves it, and the region branch rrseg builds from it. Expected values come from the
table only, never from rrseg's modules or defaults."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch

from rrseg.engine.config import load_config
from rrseg.rebalance import ClassCounts
from rrseg.rebalance.counts import released_stats_path

from .released import COMMON, PRESET_HEADS, PRIOR_EPS, RELEASED_COUNTS, UNRELEASED_CHOICES

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted(glob.glob(str(REPO / "configs/*/*_rr.yaml")) + glob.glob(str(REPO / "configs/*/*_ceco.yaml")))


def released_row(path: str) -> dict:
    p = Path(path)
    method = "ceco" if p.stem.endswith("_ceco") else "rr"
    assert (p.parent.name, method) in PRESET_HEADS, f"{p}: add its family's released head to released.py"
    return PRESET_HEADS[(p.parent.name, method)]


def dataset_of(path: str) -> str:
    stem = Path(path).stem
    return next(name for name in ("ade20k_full", "ade20k", "coco_stuff164k") if stem.startswith(name))


def test_every_preset_family_is_in_the_table():
    assert len(PRESETS) >= 23  # 9 families x 2 datasets, ADE20K-Full, 2 x 2 CeCo
    assert {(Path(p).parent.name, "ceco" if p.endswith("_ceco.yaml") else "rr") for p in PRESETS} == set(PRESET_HEADS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{Path(p).parent.name}/{Path(p).stem}")
def test_preset_follows_the_released_head(path):
    row = released_row(path)
    cfg = load_config(path)
    region = cfg.loss.region
    weight = row["img_cls_weight"] if row["img_cls_weight"] is not None else UNRELEASED_CHOICES["img_cls_weight"]
    consistency = UNRELEASED_CHOICES["consistency_weight"] if row["consistency"] else 0.0

    # the config, as resolved
    assert region.type == ("ceco" if row["etf"] else "rr")
    assert (region.trainable, region.per_image, region.prior) == (
        COMMON["trainable"], COMMON["per_image"], COMMON["prior"])
    assert region.loss_weight == weight
    assert region.dropout == row["dropout"]

    # the class counts the prior is made of: the released file of the dataset
    released = RELEASED_COUNTS[dataset_of(path)]
    num_classes = cfg.model.num_classes
    if released is None:  # none released (ADE20K-Full): counted from the training labels; a stand-in here
        assert cfg.loss.counts is None
        counts = ClassCounts(np.arange(1, num_classes + 1))
    else:
        file, classes, low, high, total = released
        assert released_stats_path(cfg.loss.counts).name == file
        counts = ClassCounts.load(cfg.loss.counts)
        n = counts.image_counts
        assert (len(n), n.min(), n.max(), n.sum()) == (classes, low, high, total) == (num_classes, low, high, total)

    # the branch rrseg builds from it
    branch = region.build(64, num_classes, counts, 255)
    assert branch.etf == row["etf"]
    assert branch.smooth == row["smooth"]
    assert (branch.logit_scale if branch.etf else 1.0) == row["scale"]
    assert branch.dropout.p == row["dropout"]
    assert branch.loss_weight == weight
    assert branch.ignored_region == row["ignored_region"]
    assert branch.consistency_weight == consistency
    assert not branch.per_image
    assert all(not p.requires_grad for p in branch.parameters())
    n = torch.tensor(counts.image_counts, dtype=torch.float64)
    torch.testing.assert_close(branch.log_prior.double(), torch.log(n / n.sum() + PRIOR_EPS), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", [p for p in PRESETS if released_row(p)["consistency"]],
                         ids=lambda p: f"{Path(p).parent.name}/{Path(p).stem}")
def test_unreleased_values_are_marked(path):
    """The consistency weight is not released: its line says so."""
    line = next(x for x in Path(path).read_text().splitlines() if x.strip().startswith("consistency_weight:"))
    assert "# differs: not released" in line
