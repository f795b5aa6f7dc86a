"""`rrseg score` on real PNG folders: the report against ConfusionMatrix on the same arrays.

The main run and one error run are real subprocesses (``python -m rrseg``); further cases call the same entry
point in-process (``call_rrseg``) to keep the suite fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rrseg.metrics import ConfusionMatrix, frequency_groups
from rrseg.rebalance import ClassCounts

C = 5
NAMES = ["road", "sky", "car", "person", "bicycle"]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    # scoring in-process must not change the caller's torch thread count; restore it anyway, for isolation
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_pair(rng, shape, num_classes=C, gt_values=None):
    gt = rng.integers(0, gt_values or num_classes, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    pred = np.where(rng.random(shape) < 0.7, np.minimum(gt, num_classes - 1), rng.integers(0, num_classes, shape))
    return pred.astype(np.uint8), gt


def reference(pairs, reduce_zero=False) -> ConfusionMatrix:
    cm = ConfusionMatrix(C)
    for pred, gt in pairs:
        gt = gt.astype(np.int64)
        if reduce_zero:
            gt = np.where((gt == 0) | (gt == 255), 255, gt - 1)
        cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt))
    return cm


@pytest.fixture
def folders(tmp_path, write_label):
    """3 scored pairs of two sizes; ground truth with _labelTrainIds names and a sub-folder; a stray prediction."""
    rng = np.random.default_rng(0)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pairs = []
    for stem, gt_name, shape in [("img0", "img0.png", (32, 48)), ("img1", "img1_labelTrainIds.png", (24, 40)),
                                 ("img2", "val/img2.png", (32, 48))]:
        pred, gt = make_pair(rng, shape)
        write_label(pred_dir / f"{stem}.png", pred)
        write_label(gt_dir / gt_name, gt, "P")
        pairs.append((pred, gt))
    write_label(pred_dir / "stray.png", np.zeros((8, 8), np.uint8))  # a prediction without ground truth
    return pred_dir, gt_dir, pairs


@pytest.mark.slow
def test_score_report_matches_confusion_matrix(tmp_path, folders, run_rrseg):
    pred_dir, gt_dir, pairs = folders
    counts_path = tmp_path / "counts.json"
    region_counts = [30, 2, 17, 9, 0]
    counts_path.write_text(json.dumps(ClassCounts(np.array(region_counts)).to_json()))
    names_path = tmp_path / "names.txt"
    names_path.write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "reports" / "report.json"
    proc = run_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "--counts", counts_path,
                     "--class-names", names_path, "-o", out, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert "3 images scored" in proc.stdout and "worst classes by IoU" in proc.stdout
    assert "frequent" in proc.stdout and "rare" in proc.stdout

    report = json.loads(out.read_text())
    m = reference(pairs).compute()
    assert report["num_images"] == 3 and report["num_classes"] == C
    per = report["per_class"]
    assert [p["name"] for p in per] == NAMES
    np.testing.assert_allclose([p["iou"] for p in per], m.iou, rtol=1e-12)
    np.testing.assert_allclose([p["acc"] for p in per], m.acc, rtol=1e-12)
    assert [p["fp"] for p in per] == m.fp.tolist() and [p["tp"] for p in per] == m.tp.tolist()
    assert report["overall"]["mIoU"] == pytest.approx(m.mIoU) and report["overall"]["aAcc"] == pytest.approx(m.aAcc)
    groups = frequency_groups(region_counts)
    assert report["group_classes"] == {k: v.tolist() for k, v in groups.items()}
    for name, classes in groups.items():
        assert report["groups"][name]["mIoU"] == pytest.approx(np.nanmean(m.iou[classes]))
    assert [p["region_count"] for p in per] == region_counts
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json"]


@pytest.mark.slow
def test_missing_predictions_listed_in_one_line(tmp_path, folders, write_label, run_rrseg):
    pred_dir, gt_dir, _ = folders
    write_label(gt_dir / "img7.png", np.zeros((4, 4), np.uint8))
    write_label(gt_dir / "val" / "img5_labelTrainIds.png", np.zeros((4, 4), np.uint8))
    out = tmp_path / "report.json"
    proc = run_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "-o", out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "no prediction for 2 of 5 ground-truth files: img5, img7" in lines[0]
    assert not out.exists()


def single_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_size_mismatch_lists_the_pair(tmp_path, folders, write_label, call_rrseg):
    pred_dir, gt_dir, _ = folders
    write_label(pred_dir / "img1.png", np.zeros((20, 40), np.uint8))  # ground truth is 24x40
    out = tmp_path / "report.json"
    line = single_line_error(call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "-o", out, "--workers", 1))
    assert "img1.png is 20x40 but " in line and "img1_labelTrainIds.png is 24x40" in line
    assert not out.exists()


def test_prediction_out_of_range(tmp_path, folders, write_label, call_rrseg):
    pred_dir, gt_dir, _ = folders
    write_label(pred_dir / "img2.png", np.full((32, 48), C, np.uint8))
    out = tmp_path / "report.json"
    line = single_line_error(call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "-o", out, "--workers", 1))
    assert "img2.png" in line and "prediction value" in line
    assert not out.exists()


def test_reduce_zero_label(tmp_path, write_label, call_rrseg):
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(2):
        pred, gt = make_pair(rng, (32, 48), gt_values=C + 1)  # ADE20K style: 0 = other, 1..C = classes
        write_label(tmp_path / "pred" / f"{i}.png", pred)
        write_label(tmp_path / "gt" / f"{i}.png", gt)
        pairs.append((pred, gt))
    out = tmp_path / "report.json"
    proc = call_rrseg("score", tmp_path / "pred", tmp_path / "gt", "--num-classes", C, "--reduce-zero-label",
                      "-o", out, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    m = reference(pairs, reduce_zero=True).compute()
    np.testing.assert_allclose([p["iou"] for p in report["per_class"]], m.iou, rtol=1e-12)
    np.testing.assert_allclose([p["acc"] for p in report["per_class"]], m.acc, rtol=1e-12)
    assert "groups" not in report  # no --counts, no frequency groups
    # without --reduce-zero-label the ground-truth value C is out of range: an error, not a wrong score
    line = single_line_error(call_rrseg("score", tmp_path / "pred", tmp_path / "gt", "--num-classes", C,
                                        "-o", tmp_path / "r2.json", "--workers", 1))
    assert "label value" in line


def test_bad_counts_and_names(tmp_path, folders, call_rrseg):
    pred_dir, gt_dir, _ = folders
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"image_counts": [1, 2, 3]}))
    line = single_line_error(call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "--counts", counts,
                                        "-o", tmp_path / "r.json"))
    assert "3 entries but num_classes is 5" in line
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    line = single_line_error(call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "--class-names", names,
                                        "-o", tmp_path / "r.json"))
    assert "names.txt: 2 class names" in line
    assert not (tmp_path / "r.json").exists()


def test_score_folders_parallel_equals_serial(folders):
    from rrseg.tools.score import score_folders

    pred_dir, gt_dir, pairs = folders
    serial, n = score_folders(pred_dir, gt_dir, C, workers=1)
    parallel, _ = score_folders(pred_dir, gt_dir, C, workers=2)
    assert n == 3
    np.testing.assert_array_equal(serial.mat, reference(pairs).mat.numpy())
    np.testing.assert_array_equal(parallel.mat, serial.mat)


def test_cityscapes_gtfine_names_match_plain_prediction_stems(tmp_path, write_label):
    from rrseg.tools.score import score_folders

    write_label(tmp_path / "pred" / "frankfurt_000000_000294.png", np.eye(4, dtype=np.uint8))
    write_label(tmp_path / "gt" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelTrainIds.png",
                np.eye(4, dtype=np.uint8))
    metrics, n = score_folders(tmp_path / "pred", tmp_path / "gt", 2, workers=1)  # default gt_suffixes
    assert n == 1 and metrics.aAcc == 1.0


def test_score_folders_leaves_torch_threads_alone(folders):
    from rrseg.tools.score import score_folders

    pred_dir, gt_dir, _ = folders
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        score_folders(pred_dir, gt_dir, C, workers=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_help_has_an_example(call_rrseg):
    proc = call_rrseg("score", "--help")
    assert proc.returncode == 0 and "example:" in proc.stdout and "--counts" in proc.stdout


def test_group_by_pixel_and_both(tmp_path, folders, call_rrseg):
    """--group-by both: the region groups as without it, and pixel groups from the pixel counts, each checked
    against a ranking and means computed here."""
    pred_dir, gt_dir, pairs = folders
    region_counts, pixel_counts = [30, 2, 17, 9, 0], [100, 9000, 40, 700, 0]
    counts_path = tmp_path / "counts.json"
    counts_path.write_text(json.dumps(ClassCounts(np.array(region_counts), np.array(pixel_counts)).to_json()))
    out = tmp_path / "report.json"
    proc = call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "--counts", counts_path, "--group-by", "both",
                      "-o", out, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    mat = reference(pairs).compute().mat

    def miou(classes):
        ious = [mat[c, c] / (mat[c, :].sum() + mat[:, c].sum() - mat[c, c]) for c in classes]
        kept = [v for v in ious if v == v]
        return sum(kept) / len(kept)

    # 5 classes at the ADE20K fractions: round(5 * 20/150) = 1 frequent, round(5 * 55/150) = 2 common
    by_region = sorted(range(C), key=lambda c: (-region_counts[c], c))
    by_pixel = sorted(range(C), key=lambda c: (-pixel_counts[c], c))
    expected = {"frequent": by_region[:1], "common": by_region[1:3], "rare": by_region[3:],
                "pixel_frequent": by_pixel[:1], "pixel_common": by_pixel[1:3], "pixel_rare": by_pixel[3:]}
    assert report["group_classes"] == expected and report["group_by"] == "both"
    for name, classes in expected.items():
        assert report["groups"][name]["mIoU"] == pytest.approx(miou(classes)), name
    row = next(line for line in proc.stdout.splitlines() if line.startswith("pixel_rare"))
    assert row.endswith("pixel count")

    proc = call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "--counts", counts_path, "--group-by", "pixel",
                      "-o", out, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(out.read_text())["groups"]) == ["pixel_frequent", "pixel_common", "pixel_rare"]


def test_group_by_pixel_without_pixel_counts(tmp_path, folders, call_rrseg):
    pred_dir, gt_dir, _ = folders
    counts_path = tmp_path / "counts.json"
    counts_path.write_text(json.dumps({"image_counts": [30, 2, 17, 9, 0]}))
    out = tmp_path / "report.json"
    line = single_line_error(call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "--counts", counts_path,
                                        "--group-by", "pixel", "-o", out))
    assert line.startswith(f"rrseg score: error: --group-by pixel: --counts {counts_path}: group_by 'pixel' ranks "
                           "classes by pixel count, but these class counts hold image (region) counts only")
    line = single_line_error(call_rrseg("score", pred_dir, gt_dir, "--num-classes", C, "--group-by", "both",
                                        "-o", out))
    assert "--group-by both: the groups need class counts (--counts)" in line
    assert not out.exists()
