"""`rrseg stats` on real label PNGs, checked against naive per-file counts.

The main runs are real subprocesses (``python -m rrseg``); the further error cases call the same entry point
in-process (``call_rrseg``), which checks the same contract (exit 2, one stderr line, no exception escapes)
without paying an interpreter and torch start-up per case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrseg.rebalance import ClassCounts

C = 6
H, W = 32, 48


def naive_counts(files: list[Path], num_classes: int, reduce_zero: bool = False) -> tuple[list[int], list[int]]:
    """Per-class image and pixel counts, one file and one class at a time."""
    image = [0] * num_classes
    pixel = [0] * num_classes
    for f in files:
        with Image.open(f) as im:
            arr = np.array(im).astype(np.int64)
        if reduce_zero:
            arr = np.where((arr == 0) | (arr == 255), 255, arr - 1)
        for c in range(num_classes):
            n = int((arr == c).sum())
            image[c] += n > 0
            pixel[c] += n
    return image, pixel


@pytest.fixture
def label_tree(tmp_path, write_label) -> tuple[Path, list[Path]]:
    """Nested folders of mode L and mode P label PNGs with ignore pixels; class 5 absent, class 4 rare."""
    rng = np.random.default_rng(0)
    root = tmp_path / "labels"
    files = []
    for i, rel in enumerate(["a.png", "train/b.png", "train/c.png", "train/city/d.png", "train/city/e.png"]):
        arr = rng.integers(0, 4, (H, W)).astype(np.uint8)
        arr[rng.random((H, W)) < 0.1] = 255
        if i == 2:
            arr[:4, :4] = 4
        files.append(write_label(root / rel, arr, "LP"[i % 2]))
    (root / "train" / "readme.txt").write_text("not a label")
    return root, files


def single_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.slow
def test_counts_json_and_txt(tmp_path, label_tree, run_rrseg):
    root, files = label_tree
    out = tmp_path / "out" / "counts.json"  # output folder does not exist yet
    proc = run_rrseg("stats", root, "--num-classes", C, "-o", out, "--txt", tmp_path / "toy", "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "5 label files" in proc.stdout

    data = json.loads(out.read_text())
    image, pixel = naive_counts(files, C)
    assert data["image_counts"] == image and data["pixel_counts"] == pixel
    assert image == [5, 5, 5, 5, 1, 0]
    assert data["num_images"] == 5 and data["num_classes"] == C
    assert data["options"]["reduce_zero_label"] is False and data["options"]["ignore_index"] == 255
    assert data["skipped"] == []
    assert Path(data["label_dir"]) == root.resolve()

    image_txt = tmp_path / "toy_image_label_stats.txt"
    pix_txt = tmp_path / "toy_pix_label_stats.txt"
    assert image_txt.read_text() == "".join(f"{v}\n" for v in image)  # one integer per line, as released
    assert pix_txt.read_text() == "".join(f"{v}\n" for v in pixel)
    from_txt = ClassCounts.load(image_txt, C)
    from_json = ClassCounts.load(out, C)
    assert from_txt.image_counts.tolist() == from_json.image_counts.tolist() == image
    assert from_txt.pixel_counts.tolist() == from_json.pixel_counts.tolist() == pixel
    assert from_json.num_images == 5
    assert sorted(p.name for p in out.parent.iterdir()) == ["counts.json"]  # no temporary files left


def test_reduce_zero_label(tmp_path, label_tree, call_rrseg):
    root, files = label_tree
    out = tmp_path / "counts.json"
    proc = call_rrseg("stats", root, "--num-classes", 4, "--reduce-zero-label", "-o", out, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    image, pixel = naive_counts(files, 4, reduce_zero=True)
    assert data["image_counts"] == image and data["pixel_counts"] == pixel
    assert data["options"]["reduce_zero_label"] is True


@pytest.mark.slow
def test_bad_value_is_a_one_line_error_and_writes_nothing(tmp_path, label_tree, write_label, run_rrseg):
    root, _ = label_tree
    arr = np.zeros((H, W), np.uint8)
    arr[3, 7] = 9  # >= C and not 255
    bad = write_label(root / "train" / "bad.png", arr)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_rrseg("stats", root, "--num-classes", C, "-o", out / "c.json", "--txt", out / "t", "--workers", 1)
    line = single_line_error(proc)
    assert str(bad) in line and "9" in line.replace(str(bad), "")
    assert line.startswith("rrseg stats: error:")
    assert list(out.iterdir()) == []  # no JSON, no text files, no temporary files


def test_on_bad_label_skip(tmp_path, label_tree, write_label, call_rrseg):
    root, files = label_tree
    arr = np.zeros((H, W), np.uint8)
    arr[0, 0] = 7
    bad = write_label(root / "bad.png", arr)
    out = tmp_path / "c.json"
    proc = call_rrseg("stats", root, "--num-classes", C, "--on-bad-label", "skip", "-o", out, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    image, pixel = naive_counts(files, C)  # the good files only
    assert data["image_counts"] == image and data["pixel_counts"] == pixel and data["num_images"] == 5
    assert [s["path"] for s in data["skipped"]] == [str(bad)]
    assert data["skipped"][0]["bad_values"] == {"7": 1}
    assert "skipped 1 files" in proc.stdout and str(bad) in proc.stdout


@pytest.mark.parametrize("kind", ["rgb", "truncated"])
def test_unreadable_label_names_the_file(tmp_path, label_tree, call_rrseg, kind):
    root, files = label_tree
    broken = root / "train" / f"{kind}.png"
    if kind == "rgb":
        Image.new("RGB", (W, H), (10, 20, 30)).save(broken)
    else:
        data = files[0].read_bytes()
        broken.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "c.json"
    line = single_line_error(call_rrseg("stats", root, "--num-classes", C, "-o", out, "--workers", 1))
    assert str(broken) in line
    if kind == "rgb":
        assert "RGB" in line
    assert not out.exists()


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_empty_or_missing_folder(tmp_path, call_rrseg, folder):
    if folder == "empty":
        (tmp_path / "empty" / "sub").mkdir(parents=True)
    out = tmp_path / "c.json"
    line = single_line_error(call_rrseg("stats", tmp_path / folder, "--num-classes", C, "-o", out))
    assert str(tmp_path / folder) in line
    assert not out.exists()


def test_help_has_an_example(call_rrseg):
    proc = call_rrseg("stats", "--help")
    assert proc.returncode == 0 and "example:" in proc.stdout and "--reduce-zero-label" in proc.stdout


# ------------------------------------------------------------------ --plot: image count against pixel count
def _capture_figures(monkeypatch) -> list:
    """The figures handed to save_figure (still written), for what they show."""
    import rrseg.metrics.report as report_module

    seen = []
    original = report_module.save_figure

    def keep(fig, path):
        fig.canvas.draw()
        seen.append({
            "title": fig.axes[0].get_title(),
            "scales": (fig.axes[0].get_xscale(), fig.axes[0].get_yscale()),
            "names": [t.get_text() for t in fig.axes[0].texts],
            "boxes": [t.get_window_extent() for t in fig.axes[0].texts if t.get_text() and "absent" not in
                      t.get_text()],
        })
        original(fig, path)

    monkeypatch.setattr(report_module, "save_figure", keep)
    return seen


def test_plot_of_image_against_pixel_counts(tmp_path, label_tree, call_rrseg, monkeypatch):
    from torchmetrics.functional import spearman_corrcoef

    root, files = label_tree
    seen = _capture_figures(monkeypatch)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class_{c}" for c in range(C)) + "\n")
    plot = tmp_path / "plots" / "stats.png"  # folder does not exist yet
    proc = call_rrseg("stats", root, "--num-classes", C, "-o", tmp_path / "counts.json", "--plot", plot,
                      "--class-names", names, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] > 400
    assert sorted(p.name for p in plot.parent.iterdir()) == ["stats.png"]  # no temporary file left

    image, pixel = naive_counts(files, C)
    present = [c for c in range(C) if image[c] > 0]  # class 5 is absent: not on a log axis
    rho = float(spearman_corrcoef(torch_tensor([image[c] for c in present]), torch_tensor([pixel[c] for c in present])))
    (fig,) = seen
    assert fig["scales"] == ("log", "log")
    assert fig["title"].endswith(f"Spearman \u03c1 = {rho:.2f}")
    assert f"Spearman rank correlation of image and pixel counts: {rho:.2f}" in proc.stdout
    assert "class_4" in fig["names"]  # the rarest class is named first
    assert "class_5" not in fig["names"] and "1 classes absent (not drawn)" in fig["names"]
    assert str(plot) in proc.stdout


def torch_tensor(values):
    import torch

    return torch.tensor(values, dtype=torch.float64)


def test_plot_names_classes_only_where_there_is_room(tmp_path, monkeypatch):
    """150 classes: many names would collide; the ones drawn overlap no other."""
    from rrseg.data.stats import plot_class_counts
    from rrseg.rebalance import ClassCounts

    seen = _capture_figures(monkeypatch)
    rng = np.random.default_rng(0)
    image = np.maximum(1, (2000 * np.exp(-np.arange(150) / 25)).astype(int))
    pixel = (image * rng.lognormal(8, 1.2, 150)).astype(int)
    rho = plot_class_counts(ClassCounts(image, pixel), tmp_path / "p.png", [f"name{c}" for c in range(150)])
    boxes = seen[0]["boxes"]
    assert 5 <= len(boxes) < 150
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert -1 <= rho <= 1 and f"{rho:.2f}" in seen[0]["title"]


@pytest.mark.parametrize("bad", ["stats.jpg", "a_file.txt/stats.png", "folder.png"])
def test_bad_plot_path_is_one_line_and_counts_nothing(tmp_path, label_tree, call_rrseg, bad):
    root, _ = label_tree
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "folder.png").mkdir()
    out = tmp_path / "counts.json"
    line = single_line_error(call_rrseg("stats", root, "--num-classes", C, "-o", out, "--plot", tmp_path / bad))
    assert line.startswith("rrseg stats: error: ")
    expected = {"stats.jpg": "give a path ending in .png", "folder.png": "is a directory",
                "a_file.txt/stats.png": "a_file.txt: output path exists and is not a directory"}
    assert expected[bad] in line
    assert not out.exists()
