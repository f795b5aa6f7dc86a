"""`rrseg check-data`, `rrseg stats` and `rrseg score` on ADE20K-Full's TIFF labels (ids above 255, 255 a real
class, 65535 not labelled), as a dataset and as a folder of label files; bad TIFFs are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ADE20K_FULL_IDS


def tif(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im).astype(np.int64)


def single_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def naive(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    image, pixel = np.zeros(847, np.int64), np.zeros(847, np.int64)
    for f in files:
        arr = tif(f)
        for c in range(847):
            n = int((arr == c).sum())
            image[c] += n > 0
            pixel[c] += n
    return image, pixel


@pytest.mark.slow  # `rrseg check-data` in a subprocess
def test_check_data_recognises_the_layout(run_rrseg, ade20k_full):
    proc = run_rrseg("check-data", ade20k_full.parent, "--workers", 1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ade20k_full dataset at {ade20k_full} (847 classes)" in proc.stdout
    assert "split 'train': 4 images, 4 pairs checked, 0 problems" in proc.stdout


def test_check_data_names_each_bad_tiff_on_one_line(call_rrseg, ade20k_full, tmp_path):
    ann = ade20k_full / "annotations_detectron2"
    a = ann / "training" / "ADE_train_00000001.tif"
    Image.fromarray((tif(a) % 200).astype(np.uint8)).save(a)  # an 8-bit TIFF
    b = ann / "validation" / "ADE_val_00000002.tif"
    arr = tif(b)
    arr[0, 0] = 1000  # above the class count, not the ignore value
    Image.fromarray(arr.astype(np.uint16)).save(b)
    out = tmp_path / "check.json"
    proc = call_rrseg("check-data", ade20k_full, "--workers", 1, "--json", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (f"  {a}: label pixels are uint8 (8-bit), expected uint16 (16-bit); ADE20K-Full labels are uint16 "
            "TIFFs (mode I;16, as prepare_ade20k_full_sem_seg.py writes them)") in proc.stdout.splitlines()
    assert (f"  {b}: label values 1000 outside the class range 0..846 (ignore index 65535)"
            in proc.stdout.splitlines())
    report = json.loads(out.read_text())
    assert report["problem_counts"] == {"label_dtype": 1, "label_range": 1}


def test_stats_of_the_dataset_equal_naive_counts_and_the_folder_of_tiffs(call_rrseg, ade20k_full, tmp_path):
    files = sorted((ade20k_full / "annotations_detectron2" / "training").glob("*.tif"))
    image, pixel = naive(files)
    assert image[255] == image[300] == image[846] == 4 and pixel[256] > 0  # ids the fixture holds
    proc = call_rrseg("stats", ade20k_full.parent, "-o", tmp_path / "a.json", "--workers", 1,
                      "--plot", tmp_path / "a.png")
    assert proc.returncode == 0, proc.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["image_counts"] == image.tolist() and a["pixel_counts"] == pixel.tolist()
    assert a["options"]["ignore_index"] == 65535 and a["options"]["num_classes"] == 847
    assert a["dataset"] == "ade20k_full" and a["split"] == "train" and a["class_names"][846].startswith("adding")
    assert "4 label files, 847 classes" in proc.stdout
    assert (tmp_path / "a.png").stat().st_size > 0
    # the same files as a folder of labels, with the flags the dataset otherwise brings
    proc = call_rrseg("stats", ade20k_full / "annotations_detectron2" / "training", "--suffix", ".tif",
                      "--num-classes", 847, "--ignore-index", 65535, "-o", tmp_path / "b.json", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["image_counts"] == a["image_counts"] and b["pixel_counts"] == a["pixel_counts"]
    # 65535 left at the folder default (255) is a bad value, named with its file
    line = single_line_error(call_rrseg("stats", ade20k_full / "annotations_detectron2" / "training", "--suffix",
                                        ".tif", "--num-classes", 847, "-o", tmp_path / "c.json", "--workers", 1))
    assert "ADE_train_00000001.tif: label value 65535" in line and "not the ignore value 255" in line
    # the validation split by name
    proc = call_rrseg("stats", ade20k_full, "--split", "val", "-o", tmp_path / "v.json", "--workers", 1)
    assert proc.returncode == 0 and json.loads((tmp_path / "v.json").read_text())["num_images"] == 2


def test_stats_flag_errors_are_one_line(call_rrseg, ade20k_full, tmp_path):
    out = tmp_path / "x.json"
    line = single_line_error(call_rrseg("stats", ade20k_full, "--ignore-index", 255, "-o", out))
    assert line.endswith(f"error: --ignore-index 255: the ade20k_full dataset at {ade20k_full} has 65535; "
                         "leave --ignore-index out for a dataset")
    line = single_line_error(call_rrseg("stats", ade20k_full, "--num-classes", 150, "-o", out))
    assert "--num-classes 150: the ade20k_full dataset" in line and "has 847" in line
    line = single_line_error(call_rrseg("stats", ade20k_full, "--suffix", ".tif", "-o", out))
    assert "--suffix .tif: the ade20k_full dataset" in line
    folder = ade20k_full / "annotations_detectron2" / "training"
    line = single_line_error(call_rrseg("stats", folder, "--suffix", ".tif", "-o", out))
    assert f"{folder}: not a dataset layout, so a folder of label files: give --num-classes" in line
    assert not out.exists()


def test_stats_of_the_dataset_refuse_an_8_bit_tiff(call_rrseg, ade20k_full, tmp_path):
    a = ade20k_full / "annotations_detectron2" / "training" / "ADE_train_00000003.tif"
    Image.fromarray((tif(a) % 200).astype(np.uint8)).save(a)
    line = single_line_error(call_rrseg("stats", ade20k_full, "-o", tmp_path / "x.json", "--workers", 1))
    assert f"{a}: label pixels are uint8 (8-bit), expected uint16 (16-bit)" in line


def write_predictions(ade20k_full: Path, out: Path, wrong: dict[int, int] | None = None) -> None:
    """16-bit PNG predictions (as `rrseg predict` writes them above 256 classes) equal to the validation labels,
    with arbitrary classes where the label is 65535, and ``wrong`` classes replaced."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted((ade20k_full / "annotations_detectron2" / "validation").glob("*.tif")):
        pred = tif(f)
        pred[pred == 65535] = 511  # ignored pixels: whatever is predicted there does not count
        for old, new in (wrong or {}).items():
            pred[pred == old] = new
        im = Image.fromarray(pred.astype(np.uint16))
        assert im.mode == "I;16"
        im.save(out / f"{f.stem}.png")


def test_score_against_the_dataset_and_the_folder_of_tiffs(call_rrseg, ade20k_full, tmp_path):
    write_predictions(ade20k_full, tmp_path / "perfect")
    proc = call_rrseg("score", tmp_path / "perfect", ade20k_full, "-o", tmp_path / "p.json", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["num_images"] == 2 and report["num_classes"] == 847
    assert report["overall"]["aAcc"] == report["overall"]["mIoU"] == 1.0
    per = report["per_class"]
    assert per[255]["name"] == "pier" and per[255]["iou"] == 1.0 and per[846]["iou"] == 1.0
    # class 300 predicted as 255 (a real class here): both lose, the rest stays perfect
    write_predictions(ade20k_full, tmp_path / "wrong", {300: 255})
    proc = call_rrseg("score", tmp_path / "wrong", ade20k_full, "-o", tmp_path / "w.json", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    wrong = json.loads((tmp_path / "w.json").read_text())
    assert wrong["overall"]["mIoU"] < 1.0 and wrong["overall"]["aAcc"] < 1.0
    per = wrong["per_class"]
    assert per[300]["iou"] == 0.0 and 0.0 < per[255]["iou"] < 1.0 and per[846]["iou"] == 1.0
    # the same through a folder of TIFFs with the flags
    proc = call_rrseg("score", tmp_path / "wrong", ade20k_full / "annotations_detectron2" / "validation",
                      "--num-classes", 847, "--ignore-index", 65535, "-o", tmp_path / "f.json", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    folder = json.loads((tmp_path / "f.json").read_text())
    assert folder["overall"] == wrong["overall"]


def test_score_needs_a_prediction_for_every_validation_label(call_rrseg, ade20k_full, tmp_path):
    write_predictions(ade20k_full, tmp_path / "pred")
    (tmp_path / "pred" / "ADE_val_00000002.png").unlink()
    line = single_line_error(call_rrseg("score", tmp_path / "pred", ade20k_full, "-o", tmp_path / "r.json"))
    assert "no prediction for 1 of 2 ground-truth files: ADE_val_00000002" in line


def test_fixture_holds_what_the_issue_asks_for(ade20k_full):
    values = set()
    for f in (ade20k_full / "annotations_detectron2").rglob("*.tif"):
        with Image.open(f) as im:
            assert im.mode == "I;16"
            values |= set(np.unique(np.array(im)).tolist())
    assert {255, 300, 846, 65535} <= values <= {*ADE20K_FULL_IDS, 65535}
