"""benchmarks/longtail_study.py's bookkeeping, without training (the trainer is replaced): per-run JSONs, skipping
finished runs across sessions, rerunning results of another config, the pixel-loss ranking and the tables."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("longtail_study", ROOT / "benchmarks" / "longtail_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_report(miou: float, rare: float) -> dict:
    group = {"mIoU": rare, "mAcc": rare, "mPrecision": 0.5, "mFPR": 0.001}
    return {"overall": {"mIoU": miou, "mAcc": miou}, "groups": {"frequent": group, "common": group, "rare": group}}


class FakeTrainer:
    """Stands in for the trainer: the figures depend on the method (via cfg.loss) and the seed only."""

    runs: ClassVar[list] = []

    def __init__(self, cfg, resume=False, device="auto", overwrite=False):
        self.cfg = cfg

    def train(self):
        FakeTrainer.runs.append((self.cfg.name, self.cfg.train.seed, self.cfg.schedule.iters))
        bonus = {"ce": 0.0, "weighted_ce": 0.10, "focal": 0.05}.get(self.cfg.loss.pixel.type, 0.02)
        rr = 0.03 if self.cfg.loss.region.type == "rr" else 0.0
        return fake_report(0.3 + bonus + rr + 0.001 * self.cfg.train.seed, 0.05 + rr + 0.001 * self.cfg.train.seed)


@pytest.fixture
def setup(study, tmp_path, monkeypatch):
    monkeypatch.setattr(study, "Trainer", FakeTrainer)
    FakeTrainer.runs = []
    config = tmp_path / "demo.yaml"
    config.write_text((ROOT / "src" / "rrseg" / "configs" / "demo.yaml").read_text())
    results = tmp_path / "results"
    results.mkdir()
    base = ["data.train.root=x", "data.val.root=x"]

    def run(method: str, seed: int, iters: int = 600) -> dict:
        return study.run_one(tmp_path / "runs", results, config, study.config_sha256(config), method, iters, seed,
                             base)

    return run, config, results


def test_runs_write_json_and_finished_ones_are_skipped(study, setup):
    run, config, results = setup
    rec = run("rr", 0)
    path = results / "rr_600it_seed0.json"
    assert json.loads(path.read_text()) == rec
    assert rec["method"] == "rr" and rec["seed"] == 0 and rec["iters"] == 600 and rec["wall_seconds"] >= 0
    assert rec["overrides"] == ["loss.region.type=rr"] and rec["config_sha256"] == study.config_sha256(config)
    assert rec["row"]["rare_mIoU"] == pytest.approx(0.08) and rec["resumed"] is False
    assert run("rr", 0) == rec and FakeTrainer.runs == [("rr", 0, 600)]  # the next session: skipped
    run("rr", 0, iters=1800)  # another schedule is another run
    assert (results / "rr_1800it_seed0.json").is_file() and len(FakeTrainer.runs) == 2
    changed = re.sub(r"\blr: [0-9.e-]+", "lr: 0.00314", config.read_text())
    assert changed != config.read_text()
    config.write_text(changed)
    run("rr", 0)  # the demo config changed: the old result does not count
    assert len(FakeTrainer.runs) == 3
    assert json.loads(path.read_text())["config_sha256"] == study.config_sha256(config)


def test_composite_and_unknown_methods(study):
    assert study.overrides_of("rr+wce-invsqrt") == [*study.PIXEL_METHODS["wce-invsqrt"], "loss.region.type=rr"]
    with pytest.raises(SystemExit, match="unknown method"):
        study.overrides_of("rr+rr")


def test_ranking_waits_for_every_seed_then_tables(study, setup):
    run, config, results = setup
    seeds = [0, 1, 2]
    for method in study.PIXEL_METHODS:
        for seed in seeds[: 2 if method == "focal" else 3]:
            run(method, seed)
    for seed in seeds:
        run("rr", seed)
    records, stale = study.read_results(results, study.config_sha256(config))
    by_method = {m: [r for r in records if r["method"] == m] for m in study.PIXEL_METHODS}
    assert study.best_pixel(by_method, seeds) == (None, ["focal"])
    run("focal", 2)
    records, stale = study.read_results(results, study.config_sha256(config))
    by_method = {m: [r for r in records if r["method"] == m] for m in study.PIXEL_METHODS}
    assert study.best_pixel(by_method, seeds)[0] == "wce-log"  # the first of the two best (fake) weighted CEs
    for seed in seeds:
        run("rr+wce-log", seed)
    run("ce", 0, iters=1800)
    text, data = study.report(study.read_results(results, study.config_sha256(config))[0], seeds, 600, stale)
    assert text.index("### 600 iterations") < text.index("### 1800 iterations")
    assert "| rr | 3 | 33.10 ± 0.10 |" in text and "| rr+wce-log | 3 |" in text
    assert "rr - ce: rare +3.00 (2 x larger sd 0.20: clear)" in text
    assert "rr+wce-log - wce-log: rare +3.00" in text
    assert data["600"]["best_pixel"] == "wce-log" and data["1800"]["best_pixel"] is None
