"""Training on ADE20K-Full (847 classes, 65535 ignored) from the shipped RR preset, on the TIFF fixture: the ignore
index reaches the transforms, the losses, RR and the metrics; a few steps run end to end with RR; the checkpoint
predicts 16-bit PNGs that `rrseg score` scores against the dataset; bad TIFFs stop training at the start."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrseg.data.transforms import PadToSize, RandomCropCatMax
from rrseg.engine.components import build_datasets
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer

from .test_trainer import log, rrseg

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "upernet_swin_t" / "ade20k_full_160k_rr.yaml"


def overrides(root: Path, work_dir: Path, iters: int = 3) -> list[str]:
    """The preset made test-sized: tiny Swin UPerNet, 32x32 crops of the 64x48 images, 3 iterations."""
    return [
        "model.name=upernet_swin_tiny", "model.options={drop_path_rate: 0.1}", "model.pretrained=none",
        f"data.train.root={root}", f"data.val.root={root}", "data.batch_size=2", "data.workers=0",
        "data.crop_size=[32,32]", "data.scale=[64,48]", "data.ratio_range=[0.75,1.25]",
        f"schedule.iters={iters}", "schedule.warmup_iters=1", f"eval.interval={iters}", "eval.batch_size=2",
        "train.log_interval=1", f"train.checkpoint_interval={iters}", "train.sync_bn=false",
        "train.tensorboard=false", "train.progress=false", f"work_dir={work_dir}",
    ]


def test_the_ignore_index_reaches_transforms_losses_rr_and_metrics(ade20k_full, tmp_path):
    cfg = load_config(PRESET, overrides(ade20k_full, tmp_path / "work"))
    assert cfg.data.train.type == "ade20k_full" and cfg.model.num_classes == 847 and cfg.loss.counts is None
    train, val, train_tf, _ = build_datasets(cfg)
    assert train.ignore_index == val.ignore_index == 65535
    steps = {type(t): t for t in train_tf.transforms}
    assert steps[RandomCropCatMax].ignore_index == 65535
    assert steps[PadToSize].mask_fill == 65535

    trainer = Trainer(cfg, device="cpu")
    parts = trainer.setup()
    assert parts.ignore_index == 65535 and parts.num_classes == 847
    assert parts.model.rebalance.ignore_index == 65535
    names = {t.name: t for t in parts.criterion.terms}
    assert set(names) == {"loss_ce", "loss_aux", "loss_rr"}
    assert names["loss_ce"].ignore_index == names["loss_aux"].ignore_index == 65535
    # counted from the TIFFs before the first step: ids above 255 and 255 itself are classes, 65535 is not
    assert parts.counts.num_classes == 847
    assert parts.counts.image_counts[[255, 300, 846]].tolist() == [4, 4, 4]
    assert parts.counts.image_counts.sum() > 12 and parts.counts.image_counts[847 - 1 - 1] == 0


@pytest.mark.slow  # trains the 847-class preset in a subprocess
def check_report_and_predictions(work: Path, root: Path, pred: Path, cli_env) -> None:
    """A trained ADE20K-Full run's report counts exactly the labelled validation pixels (65535 left out), and
    ``rrseg predict`` of its export writes 16-bit PNGs of class ids < 847 into ``pred``."""
    report = json.loads((work / "report.json").read_text())
    assert report["num_classes"] == 847 and report["per_class"][255]["name"] == "pier"
    # labelled validation pixels only (65535 left out): the confusion matrix counted exactly those
    gt = [np.array(Image.open(f)) for f in sorted((root / "annotations_detectron2" / "validation")
                                                 .glob("*.tif"))]
    assert sum(c["label_pixels"] for c in report["per_class"]) == sum(int((g != 65535).sum()) for g in gt)

    images = sorted((root / "images_detectron2" / "validation").glob("*.jpg"))
    rrseg(["predict", work / "inference.safetensors", *images, "--out", pred, "--device", "cpu"],
          cli_env)
    for img in images:
        png = (pred / f"{img.stem}.png").read_bytes()
        # 847 classes: a 16-bit greyscale PNG (IHDR bit depth 16, colour type 0; Pillow 10.0, the floor, reads
        # it as mode "I", Pillow 13 as "I;16", so the header is what is checked)
        assert png[12:16] == b"IHDR" and (png[24], png[25]) == (16, 0)
        with Image.open(pred / f"{img.stem}.png") as im:
            assert im.size == (64, 48) and int(np.array(im).max()) < 847


def test_rr_trains_end_to_end_then_predicts_and_scores(ade20k_full, tmp_path, cli_env):
    work = tmp_path / "work"
    rrseg(["train", PRESET, "--set", *overrides(ade20k_full, work)], cli_env, timeout=600)
    records = [r for r in log(work) if "loss_rr" in r]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    for r in records:
        assert all(math.isfinite(r[k]) for k in ("loss_ce", "loss_aux", "loss_rr"))
    assert any(r["loss_rr"] > 0 for r in records)
    counts = json.loads((work / "counts.json").read_text())
    assert len(counts["image_counts"]) == 847 and counts["image_counts"][846] == 4
    check_report_and_predictions(work, ade20k_full, tmp_path / "pred", cli_env)
    proc = rrseg(["score", tmp_path / "pred", ade20k_full, "-o", tmp_path / "score.json", "--workers", 1], cli_env)
    scored = json.loads((tmp_path / "score.json").read_text())
    assert scored["num_images"] == 2 and scored["num_classes"] == 847
    assert "2 images scored" in proc.stdout


@pytest.mark.slow  # a subprocess that reads the TIFFs before it stops
def test_a_bad_tiff_stops_training_at_the_start(ade20k_full, tmp_path, cli_env):
    bad = ade20k_full / "annotations_detectron2" / "training" / "ADE_train_00000004.tif"
    with Image.open(bad) as im:
        arr = np.array(im)
    Image.fromarray((arr % 200).astype(np.uint8)).save(bad)
    work = tmp_path / "work"
    proc = rrseg(["train", PRESET, "--set", *overrides(ade20k_full, work)], cli_env, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0] == (f"rrseg train: error: {bad}: label pixels are uint8 (8-bit), expected uint16 (16-bit); "
                        "ADE20K-Full labels are uint16 TIFFs (mode I;16, as prepare_ade20k_full_sem_seg.py writes "
                        "them)")
    assert not work.exists()
    # a value above the class count that is not the ignore value, likewise
    arr = arr.astype(np.uint16)
    arr[0, 0] = 2000
    Image.fromarray(arr).save(bad)
    proc = rrseg(["train", PRESET, "--set", *overrides(ade20k_full, work)], cli_env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"{bad}: label values 2000 outside the class range 0..846 (ignore index 65535)")
