"""benchmarks/m2f_rr_study.py's bookkeeping, without training (the trainer is replaced): the switches' overrides,
the frequency matcher's t, the combination chosen on seed 0 and run on the other seeds, finished runs skipped in the
next session, and the table with the per-pixel rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling imports (longtail_study, mask2former_cpu)
    try:
        spec = importlib.util.spec_from_file_location("m2f_rr_study", ROOT / "benchmarks" / "m2f_rr_study.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


class FakeTrainer:
    """The figures depend on the switches (via cfg.loss) and the seed only."""

    runs: ClassVar[list] = []

    def __init__(self, cfg, resume=False, device=None, overwrite=False):
        self.cfg = cfg

    def train(self):
        cfg = self.cfg
        FakeTrainer.runs.append((cfg.name, cfg.train.seed, cfg.schedule.iters, cfg.model.name))
        rare = 0.05 + 0.001 * cfg.train.seed
        rare += 0.04 if cfg.loss.pixel.query_prior != "none" else 0.0
        rare += 0.02 if cfg.loss.pixel.matcher == "frequency" else 0.0
        rare -= 0.01 if cfg.loss.region.type == "rr" else 0.0
        group = {"mIoU": rare, "mAcc": rare, "mPrecision": 0.5, "mFPR": 0.001}
        return {"overall": {"mIoU": 0.3 + rare / 3, "mAcc": 0.3}, "groups": {"frequent": group, "common": group,
                                                                              "rare": group}}


def test_the_switches_and_t(study, tiny_dataset):
    t = 0.05
    assert study.overrides_of("plain", t) == []
    assert study.overrides_of("rr+query-prior", t) == ["loss.region.type=rr", "loss.pixel.query_prior=region"]
    assert study.overrides_of("freq-matcher", t) == ["loss.pixel.matcher=frequency", "loss.pixel.matcher_t=0.05",
                                                     "loss.pixel.matcher_s=2.0"]
    with pytest.raises(SystemExit, match="unknown method 'focal'"):
        study.overrides_of("rr+focal", t)
    from rrseg.rebalance import ClassCounts

    counts = ClassCounts(np.array([90, 60, 40, 30, 20, 10, 8, 5, 3, 1]), None, 100)
    # the default split of 10 classes: frequent 1, common 4 (60..20), rare 5 (10..1): the rare border is 10 images
    assert study.border_t(counts) == pytest.approx(0.10)


def test_the_combination_rule(study):
    def rec(rare, overall):
        return {"row": {"rare_mIoU": rare, "overall_mIoU": overall}}

    seed0 = {"plain": rec(0.10, 0.50), "rr": rec(0.12, 0.495), "query-prior": rec(0.15, 0.48),
             "freq-matcher": rec(0.11, 0.52)}
    combo, why = study.choose_combination(seed0)  # query-prior loses 2 points overall: left out
    assert combo == "rr+freq-matcher" and "beat plain" in why
    seed0["rr"] = rec(0.09, 0.50)
    combo, why = study.choose_combination(seed0)  # one qualifies: the two best by rare mIoU
    assert combo == "query-prior+freq-matcher" and "the two best by rare mIoU" in why


def test_a_study_runs_once_then_continues_and_reports(study, tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setattr(study.longtail_study, "Trainer", FakeTrainer)  # the shared run_one trains
    monkeypatch.setattr(study, "prepare_dataset", lambda path: tiny_dataset)
    FakeTrainer.runs = []
    results = tmp_path / "results"
    argv = ["--out", str(tmp_path / "runs"), "--results-dir", str(results), "--iters", "1000"]
    data = study.main(argv)
    assert {r[3] for r in FakeTrainer.runs} == {"mask2former_small"}
    assert [(m, s) for m, s, _, _ in FakeTrainer.runs] == [
        *((m, s) for m in ("plain", "rr", "query-prior", "freq-matcher") for s in (0, 1, 2)),
        ("query-prior+freq-matcher", 1), ("query-prior+freq-matcher", 2)]
    assert data["combination"] == "query-prior+freq-matcher"
    saved = json.loads((results / "freq-matcher_1000it_seed2.json").read_text())
    assert saved["overrides"][0] == "loss.pixel.matcher=frequency" and saved["model"] == "mask2former_small"
    text = (results / "results.md").read_text()
    assert "| plain | 3 | 31.70 ± 0.03 | 5.10 ± 0.10 |" in text and "| query-prior+freq-matcher | 2 |" in text
    assert "its row: seeds [1, 2]" in text
    # the long-tail study's per-pixel CE and RR rows at 1000 iterations, when they are in the repository
    if (ROOT / "benchmarks" / "results" / "longtail" / "ce_1000it_seed0.json").is_file():
        assert "| per-pixel CE (deeplabv3plus_small) | 3 |" in text and "| per-pixel + RR | 3 |" in text

    FakeTrainer.runs = []
    study.main(argv)  # the next session: everything is there
    assert FakeTrainer.runs == []
    (results / "rr_1000it_seed1.json").unlink()
    study.main(argv)
    assert [(m, s) for m, s, _, _ in FakeTrainer.runs] == [("rr", 1)]
    FakeTrainer.runs = []
    study.main([*argv, "--lr", "0.002"])  # another recipe: every result is stale
    assert len(FakeTrainer.runs) == 14
