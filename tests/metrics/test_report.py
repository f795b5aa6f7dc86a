"""build_report / format_report / markdown_report / plot_iou_vs_count."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rrseg.io import jsonable
from rrseg.metrics import SegMetrics, frequency_groups
from rrseg.metrics.report import build_report, format_report, markdown_report, plot_iou_vs_count

NAMES = ["wall", "sky", "floor", "tree", "ceiling", "bed", "lamp", "vase"]


@pytest.fixture
def metrics() -> SegMetrics:
    rng = np.random.default_rng(0)
    mat = rng.integers(0, 30, (8, 8)) + np.diag(rng.integers(20, 200, 8))
    mat[6, :] = 0
    mat[:, 6] = 0  # class 6 absent: IoU NaN
    return SegMetrics(mat)


COUNTS = [900, 40, 700, 3, 80, 20, 1, 5]


def test_build_report_structure(metrics):
    report = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3))
    assert report["num_classes"] == 8
    overall = report["overall"]
    for key in ("aAcc", "mIoU", "mAcc", "mDice"):
        assert overall[key] == pytest.approx(getattr(metrics, key))
    assert overall["mFPR"] == pytest.approx(metrics.summary()["mFPR"])

    groups = frequency_groups(COUNTS, sizes=(2, 3))
    assert report["group_classes"] == {k: v.tolist() for k, v in groups.items()}
    assert report["group_classes"]["frequent"] == [0, 2]
    for name, classes in groups.items():
        assert report["groups"][name]["mIoU"] == pytest.approx(np.nanmean(metrics.iou[classes]))

    assert [p["class"] for p in report["per_class"]] == list(range(8))
    for p in report["per_class"]:
        c = p["class"]
        assert p["name"] == NAMES[c]
        assert p["region_count"] == COUNTS[c]
        assert c in report["group_classes"][p["group"]]
        assert p["tp"] == metrics.tp[c] and p["fp"] == metrics.fp[c] and p["fn"] == metrics.fn[c]
        if c == 6:
            assert p["iou"] is None and p["acc"] is None
        else:
            assert p["iou"] == pytest.approx(metrics.iou[c]) and p["acc"] == pytest.approx(metrics.acc[c])
    json.dumps(jsonable(report), allow_nan=False)  # strict JSON


def test_build_report_without_counts(metrics):
    report = build_report(metrics)
    assert "groups" not in report and "group_classes" not in report
    assert [p["name"] for p in report["per_class"]] == [str(i) for i in range(8)]
    assert all(p["group"] is None and p["region_count"] is None for p in report["per_class"])


def test_build_report_thresholds(metrics):
    report = build_report(metrics, region_counts=COUNTS, group_thresholds=(500, 10))
    assert report["group_classes"] == {"frequent": [0, 2], "common": [4, 1, 5], "rare": [7, 3, 6]}


def test_build_report_bad_lengths(metrics):
    with pytest.raises(ValueError, match="class names"):
        build_report(metrics, NAMES[:-1])
    with pytest.raises(ValueError, match="region counts"):
        build_report(metrics, region_counts=[*COUNTS, 1])


def test_format_report(metrics):
    report = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3))
    text = format_report(report, worst=3)
    lines = text.splitlines()
    overall = next(line for line in lines if line.startswith("overall"))
    assert f"{100 * metrics.mIoU:6.2f}" in overall and overall.rstrip().endswith("8")
    for name in ("frequent", "common", "rare"):
        row = next(line for line in lines if line.startswith(name))
        assert f"{100 * report['groups'][name]['mIoU']:6.2f}" in row
    assert f"aAcc {100 * metrics.aAcc:.2f}" in text
    # the 3 worst classes by IoU, worst first; the absent class (no IoU) is not among them
    worst = [NAMES[c] for c in np.argsort(np.where(np.isnan(metrics.iou), np.inf, metrics.iou))[:3]]
    start = lines.index("3 worst classes by IoU:")
    listed = [line.split()[0] for line in lines[start + 2 : start + 5]]
    assert listed == worst
    assert "worst classes" not in format_report(report, worst=0)


def test_format_report_nan_shows_na():
    mat = np.zeros((3, 3), np.int64)
    mat[0, 0] = 4
    report = build_report(SegMetrics(mat), region_counts=[5, 1, 0], group_sizes=(1, 1))
    text = format_report(report)
    common = next(line for line in text.splitlines() if line.startswith("common"))
    assert "n/a" in common and "nan" not in text.lower()


def test_markdown_report(metrics):
    report = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3))
    md = markdown_report(report, title="run A")
    assert md.startswith("# run A\n")
    rows = [line for line in md.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == 8
    cells = [c.strip() for c in rows[2].split("|")[1:-1]]
    assert cells[:4] == ["2", "floor", "700", "frequent"]
    assert cells[4] == f"{100 * metrics.iou[2]:.2f}"
    assert cells[7] == str(metrics.fp[2])
    assert [c.strip() for c in rows[6].split("|")[1:-1]][4] == "n/a"  # absent class
    assert "nan" not in md.lower()


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the empty figure has no legend entries
def test_plot_iou_vs_count(metrics, tmp_path):
    a = build_report(metrics, NAMES, COUNTS)
    b = build_report(SegMetrics(metrics.mat + np.eye(8, dtype=np.int64) * 50), NAMES, COUNTS)
    out = tmp_path / "plots" / "iou.png"  # folder does not exist yet
    plot_iou_vs_count({"baseline": a, "rr": b}, out, title="test")
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert sorted(p.name for p in out.parent.iterdir()) == ["iou.png"]  # no temporary files left
    # a report without region counts gives no points but still a valid figure
    plot_iou_vs_count({"no counts": build_report(metrics)}, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


# ------------------------------------------------------------------ groups by pixel count
PIXELS = [5_000, 90_000, 1_200, 40_000, 300, 7_000, 10, 60_000]  # ranked otherwise than COUNTS


def _iou_by_hand(mat: np.ndarray, c: int) -> float:
    union = mat[c, :].sum() + mat[:, c].sum() - mat[c, c]
    return mat[c, c] / union if union else float("nan")


def _mean_by_hand(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return sum(kept) / len(kept) if kept else float("nan")


def test_build_report_groups_by_pixel_and_both(metrics):
    by_pixel = sorted(range(8), key=lambda c: (-PIXELS[c], c))  # [1, 7, 3, 5, 0, 2, 4, 6]
    by_region = sorted(range(8), key=lambda c: (-COUNTS[c], c))
    assert by_pixel[:2] != by_region[:2]
    report = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3), pixel_counts=PIXELS, group_by="both")
    assert report["group_by"] == "both"
    expected = {"frequent": by_region[:2], "common": by_region[2:5], "rare": by_region[5:],
                "pixel_frequent": by_pixel[:2], "pixel_common": by_pixel[2:5], "pixel_rare": by_pixel[5:]}
    assert report["group_classes"] == expected
    assert report["group_ranking"] == {k: "pixel" if k.startswith("pixel_") else "region" for k in expected}
    for name, classes in expected.items():
        assert report["groups"][name]["mIoU"] == pytest.approx(
            _mean_by_hand([_iou_by_hand(metrics.mat, c) for c in classes])), name
    for p in report["per_class"]:
        assert p["pixel_count"] == PIXELS[p["class"]] and p["region_count"] == COUNTS[p["class"]]
        assert p["class"] in expected[p["group"]] and p["class"] in expected[p["pixel_group"]]
    # the region groups are exactly what they were before (readers of report["groups"]["rare"])
    region_only = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3))
    for name in ("frequent", "common", "rare"):
        assert report["groups"][name] == region_only["groups"][name]
    assert "pixel_rare" not in region_only["groups"] and region_only["group_by"] == "region"
    assert region_only["per_class"][0]["pixel_group"] is None

    only_pixel = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3), pixel_counts=PIXELS, group_by="pixel")
    assert list(only_pixel["groups"]) == ["pixel_frequent", "pixel_common", "pixel_rare"]
    assert all(p["group"] is None for p in only_pixel["per_class"])
    json.dumps(jsonable(report), allow_nan=False)


def test_build_report_pixel_groups_need_pixel_counts(metrics):
    from rrseg.errors import RRSegError

    with pytest.raises(RRSegError, match="ranks classes by pixel count, but these class counts hold image"):
        build_report(metrics, NAMES, COUNTS, group_by="pixel")
    with pytest.raises(ValueError, match="pixel counts have 9 entries for 8 classes"):
        build_report(metrics, NAMES, COUNTS, pixel_counts=[*PIXELS, 1], group_by="both")


def test_tables_say_which_ranking_a_group_comes_from(metrics):
    report = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3), pixel_counts=PIXELS, group_by="both")
    lines = format_report(report, worst=8).splitlines()
    assert lines[0].rstrip().endswith("classes  ranked by")
    for name in ("frequent", "common", "rare", "pixel_frequent", "pixel_common", "pixel_rare"):
        row = next(line for line in lines if line.split()[0] == name)
        assert row.endswith("pixel count" if name.startswith("pixel_") else "region count"), row
        assert f"{100 * report['groups'][name]['mIoU']:6.2f}" in row
    sky = next(line for line in lines if line.strip().startswith("sky "))
    assert sky.endswith("common / pixel_frequent")  # sky: 40 regions (4th of 8), most pixels

    md = markdown_report(report)
    assert "| rare |" in md and "| region count |" in md and "| pixel_rare |" in md and "| pixel count |" in md
    sky_row = next(line for line in md.splitlines() if line.startswith("| 1 | sky |"))
    assert sky_row.endswith("| 90000 | pixel_frequent |")


def test_plots_name_the_ranking_of_their_groups(metrics, tmp_path, monkeypatch):
    import rrseg.metrics.report as report_module

    figures = []
    original = report_module.save_figure

    def keep(fig, path):
        figures.append([t.get_text() for ax in fig.axes for t in ax.texts] + [fig.axes[0].get_xlabel()])
        original(fig, path)

    monkeypatch.setattr(report_module, "save_figure", keep)
    report = build_report(metrics, NAMES, COUNTS, group_sizes=(2, 3), pixel_counts=PIXELS, group_by="both")
    plot_iou_vs_count({"a": report}, tmp_path / "region.png")
    plot_iou_vs_count({"a": report}, tmp_path / "pixel.png", count="pixel")
    region_texts, pixel_texts = figures
    assert "groups ranked by region count" in region_texts and "groups ranked by pixel count" in pixel_texts
    assert {"frequent", "common", "rare"} <= set(region_texts) and {"frequent", "common", "rare"} <= set(pixel_texts)
    assert pixel_texts[-1].startswith("pixel count")
    for name in ("region.png", "pixel.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"
    # without pixel counts the pixel plot has no points and no groups, but is a valid figure
    plot_iou_vs_count({"a": build_report(metrics, NAMES, COUNTS)}, tmp_path / "none.png", count="pixel")
    assert not any(t.startswith("groups ranked") for t in figures[-1])
