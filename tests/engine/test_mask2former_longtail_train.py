"""Region rebalance for mask classification through `rrseg train` (mask2former_tiny): the RR branch on the mask
features (loss.region.type rr), the rebalanced query classifier (loss.pixel.query_prior region), LTSS's frequency
matcher (loss.pixel.matcher frequency) and all three at once, each against the plain run of the same seed; and RR's
consistency term refused for a mask model before training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from .test_mask2former_train import TINY
from .test_trainer import log, yaml_work_dir

SWITCHES = {
    "plain": {},
    "rr": {"region": {"type": "rr"}},
    "query_prior": {"pixel": {"query_prior": "region"}},
    # the tiny data's 24 images: t = 0.5 gives its rarer classes 2-4 queries (s = 2)
    "matcher": {"pixel": {"matcher": "frequency", "matcher_t": 0.5}},
    "all": {"region": {"type": "rr"}, "pixel": {"query_prior": "region", "matcher": "frequency", "matcher_t": 0.5}},
}


def _loss(tiny_dataset, switch: dict) -> dict:
    loss = {"counts": str(tiny_dataset / "counts.json"), "pixel": {**TINY["loss"]["pixel"], **switch.get("pixel", {})}}
    if "region" in switch:
        loss["region"] = switch["region"]
    return loss


@pytest.mark.slow  # five 3-iteration trainings of the tiny model, in this process
def test_each_switch_trains_end_to_end(tiny_config, tiny_dataset):
    from rrseg.cli.main import main
    from rrseg.rebalance.mask2former import frequency_queries

    counts = json.loads((tiny_dataset / "counts.json").read_text())
    assert max(frequency_queries(counts["image_counts"], counts["num_images"], 0.5, 2.0)) > 1
    first = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, switch in SWITCHES.items():
            cfg = tiny_config(name, **{**TINY, "loss": _loss(tiny_dataset, switch)},
                              schedule={"iters": 3, "warmup_iters": 1}, eval={"interval": 0, "batch_size": 4})
            assert main(["train", str(cfg), "--device", "cpu"]) == 0, name
            work = Path(yaml_work_dir(cfg))
            records = [r for r in log(work) if r["event"] == "train"]
            assert [r["iteration"] for r in records] == [1, 2, 3]
            for r in records:
                assert all(math.isfinite(r[k]) for k in ("loss_cls", "loss_mask", "loss_dice", "loss")), name
                assert ("loss_rr" in r) == ("region" in switch), name
            first[name] = records[0]
            report = json.loads((work / "report.json").read_text())
            assert report["iteration"] == 3 and 0 <= report["overall"]["mIoU"] <= 1
    finally:
        torch.set_num_threads(threads)
    plain = first["plain"]
    # the same seed, model and batch: iteration 1's losses differ where each switch acts (RR's branch draws its
    # initialisation after the model's, so the matcher's random points differ in its run)
    assert first["rr"]["loss_rr"] > 0
    assert first["query_prior"]["loss_cls"] != plain["loss_cls"]
    assert first["query_prior"]["loss_mask"] == plain["loss_mask"]  # the same matching, the same points
    assert first["matcher"]["loss_mask"] != plain["loss_mask"]  # more queries matched to the rarer masks
    assert first["all"]["loss_cls"] != first["matcher"]["loss_cls"] and "loss_rr" in first["all"]


def test_the_consistency_term_is_refused_before_training(tiny_config, tiny_dataset, call_rrseg):
    loss = _loss(tiny_dataset, {"region": {"type": "rr", "smooth": 1.0, "consistency_weight": 0.5}})
    cfg = tiny_config("consistency", **{**TINY, "loss": loss})
    proc = call_rrseg("train", cfg)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["rrseg train: error: loss.region.consistency_weight: the consistency term needs per-pixel class "
                     "logits, which a mask-classification model (Mask2Former) does not have; set it to 0"]
    assert not (Path(yaml_work_dir(cfg)) / "checkpoints").exists()


def test_the_ltss_matcher_preset():
    """LTSS's matcher-maskformer2_R50_bs16_200k.yaml: its baseline (ade20k_full_200k) with MATCHER multi-match, T 3e-4,
    S 2; both ADE20K-Full presets report LTSS's own frequency groups."""
    from rrseg.engine.config import config_to_dict, load_config

    base = load_config("mask2former_r50/ade20k_full_200k")
    matcher = load_config("mask2former_r50/ade20k_full_200k_matcher")
    p = matcher.loss.pixel
    assert (p.type, p.matcher, p.matcher_t, p.matcher_s, p.query_prior) == ("mask2former", "frequency", 3e-4, 2.0,
                                                                            "none")
    assert base.loss.pixel.matcher == "hungarian" and base.eval.group_by == matcher.eval.group_by == "ltss_both"
    a, b = config_to_dict(base), config_to_dict(matcher)
    for key in ("name", "paper", "work_dir", "loss"):
        a.pop(key), b.pop(key)
    assert a == b  # nothing else differs from the baseline
