"""`rrseg demo` at a tiny size, through its real code path: dataset generation then reuse, both runs (one after
the other in this process, then side by side as two one-thread processes), every report file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from rrseg.tools.experiment import last_run, read_log

TINY_DATA = {"num_classes": 6, "num_train": 24, "num_val": 8, "size": (48, 32)}
REPORT_FILES = ("summary.json", "README.md", "iou_vs_count.png", "curves.png", "predictions.png")
ROW_KEYS = {"overall_mIoU", "frequent_mIoU", "common_mIoU", "rare_mIoU", "rare_mPrecision", "rare_mFPR"}
SUMMARY_KEYS = {"rows", "iterations", "config_iterations", "seed", "dataset", "dataset_seed", "parallel",
                "threads_per_run", "wall_seconds", "dataset_seconds", "total_seconds", "rare_classes",
                "prediction_images"}


def tiny_demo_config(path: Path) -> Path:
    """The demo config's shape at a tiny size; the demo sets the data roots and counts itself."""
    cfg = {
        "name": "tiny-demo",
        "model": {"name": "deeplabv3plus_tiny"},
        "data": {"train": {"type": "folder", "root": "unset", "split": "train"},
                 "val": {"type": "folder", "root": "unset", "split": "val"},
                 "batch_size": 4, "workers": 1, "crop_size": [32, 32], "scale": [48, 32]},
        "optim": {"type": "adamw", "lr": 0.002},
        "schedule": {"iters": 50, "warmup_iters": 1},  # --iters 3 below overrides it
        "eval": {"interval": 0, "batch_size": 8},
        "train": {"log_interval": 1, "checkpoint_interval": 1000, "tensorboard": False, "progress": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def end_hashes(out: Path) -> dict[str, list[str]]:
    """Each run's final parameter SHA-256 (logged by the trainer at the end of its latest run)."""
    return {key: [r for r in last_run(read_log(out / key)) if r["event"] == "end"][-1]["param_sha256"]
            for key in ("ce", "rr")}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the side-by-side processes: then both ways must be bit-identical
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_demo_tiny_serial_then_side_by_side(tmp_path, one_thread, caplog):
    from rrseg.tools.demo import run_demo

    caplog.set_level(logging.INFO, logger="rrseg")

    out, config = tmp_path / "demo", tiny_demo_config(tmp_path / "tiny.yaml")
    serial = run_demo(out, config=config, iters=3, parallel=False, dataset=TINY_DATA, device="cpu")
    assert "generating the synthetic" in caplog.text
    caplog.clear()
    report = out / "report"
    for name in REPORT_FILES:
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    summary = json.loads((report / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert set(summary["rows"]) == {"cross-entropy", "+ RR"}
    assert all(row.keys() >= ROW_KEYS for row in summary["rows"].values())
    assert summary["iterations"] == 3 and summary["config_iterations"] == 50 and summary["parallel"] is False
    assert set(summary["wall_seconds"]) == {"cross-entropy", "+ RR"}
    assert all(s > 0 for s in summary["wall_seconds"].values())
    # the prediction rows: the first validation images by file name that contain a rare class
    from rrseg.data import build_dataset
    from rrseg.tools.experiment import images_with_classes

    ce_report = json.loads((out / "ce" / "report.json").read_text())
    rare = ce_report["group_classes"]["rare"]
    assert summary["rare_classes"] == [ce_report["per_class"][k]["name"] for k in rare]
    val = build_dataset("folder", out / "synthetic", "val")
    expected = [val.samples[i].key for i in images_with_classes(val, rare, 6)]
    assert summary["prediction_images"] == expected and 1 <= len(expected) <= 6
    assert expected == sorted(expected)
    text = (report / "README.md").read_text()
    assert "predictions.png" in text and "iou_vs_count.png" in text and "rare prec" in text
    hashes = end_hashes(out)

    dataset_stamp = (out / "synthetic" / "counts.json").stat().st_mtime_ns
    side = run_demo(out, config=config, iters=3, parallel=True, dataset=TINY_DATA, device="cpu")
    assert "using the synthetic dataset" in caplog.text
    assert (out / "synthetic" / "counts.json").stat().st_mtime_ns == dataset_stamp  # reused, not regenerated
    assert side["parallel"] is True and side["threads_per_run"] == 1
    assert (out / "ce.log").is_file() and (out / "rr.log").is_file()
    # side by side, each run loads its own batches (the serial runs had the config's loader worker)
    assert all(yaml.safe_load((out / key / "config.yaml").read_text())["data"]["workers"] == 0 for key in ("ce", "rr"))
    # one thread both ways: the same weights bit for bit, hence the same table
    assert end_hashes(out) == hashes
    assert side["rows"] == serial["rows"]
    assert json.loads((report / "summary.json").read_text())["parallel"] is True


def test_demo_refuses_a_dataset_made_with_other_settings(tmp_path):
    from rrseg.data.synthetic import make_synthetic
    from rrseg.errors import RRSegError
    from rrseg.tools.demo import prepare_dataset

    make_synthetic(tmp_path / "synthetic", num_classes=6, num_train=24, num_val=8, size=(48, 32), seed=3,
                   workers=1, verbose=False)
    with pytest.raises(RRSegError, match=r"not the demo's dataset: seed 3 \(expected 0\)"):
        prepare_dataset(tmp_path / "synthetic", TINY_DATA)
    with pytest.raises(RRSegError, match=r"num_classes 6 \(expected 30\)"):
        prepare_dataset(tmp_path / "synthetic")


def test_demo_cli_refuses_minutes_and_passes_its_options(call_rrseg, monkeypatch, tmp_path):
    import rrseg.tools.demo as demo

    proc = call_rrseg("demo", "--minutes", "6")
    assert proc.returncode == 2 and "--minutes was removed" in proc.stderr and "--iters" in proc.stderr
    proc = call_rrseg("demo", "--iters", "0")
    assert proc.returncode == 2 and "--iters must be at least 1" in proc.stderr
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: calls.append((a, k)))
    assert call_rrseg("demo", "--out", tmp_path, "--iters", "3", "--seed", "2", "--parallel").returncode == 0
    assert call_rrseg("demo", "--out", tmp_path, "--no-parallel").returncode == 0
    (args, kwargs), (_, kwargs2) = calls
    assert args == (str(tmp_path), None, 2, 3) and kwargs == {"parallel": True}
    assert kwargs2 == {"parallel": False}
