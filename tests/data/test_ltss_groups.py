"""LTSS's frequent / common / rare labels of ADE20K-Full, shipped as a resource of the ade20k_full dataset: their
counts as LTSS's register file states them, the class order ours, and eval.group_by ltss_* through the Evaluator,
its report and its refusal for other datasets."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from rrseg.data.ade20k_full import ade20k_full_classes, ltss_groups
from rrseg.engine.config import ConfigError, EvalConfig, parse_config
from rrseg.engine.evaluator import Evaluator
from rrseg.errors import RRSegError
from rrseg.metrics.confusion import ConfusionMatrix
from rrseg.metrics.report import markdown_report

# the header of caopulan/Mask2Former-LT ltss/data/datasets/register_ade20k_full.py:
# "number classes of frequent, common, rare (image frequency): 512, 175, 160"
# "number classes of frequent, common, rare (pixel frequency): 509, 169, 169"
LTSS_HEADER = {"image": (512, 175, 160), "pixel": (509, 169, 169)}


def _rows() -> list[list[str]]:
    text = resources.files("rrseg.data").joinpath("resources", "ade20k_full_ltss_groups.tsv").read_text("utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0].split("\t") == ["train_id", "image_frequency", "pixel_frequency", "image_count", "pixel_count",
                                    "name"]
    return [line.split("\t") for line in lines[1:]]


@pytest.mark.parametrize("kind", ["image", "pixel"])
def test_the_group_sizes_are_ltss_header(kind):
    groups = ltss_groups(kind)
    assert list(groups) == ["frequent", "common", "rare"]
    assert tuple(len(groups[g]) for g in groups) == LTSS_HEADER[kind]
    every = np.sort(np.concatenate(list(groups.values())))
    assert np.array_equal(every, np.arange(847))  # each class in exactly one group


def test_the_class_order_is_ours_and_the_labels_read_from_the_right_columns():
    rows = _rows()
    assert [int(r[0]) for r in rows] == list(range(847))
    assert tuple(r[5] for r in rows) == ade20k_full_classes()  # 'wall' is train id 0 in both
    # LTSS's image labels follow its image counts (its header: rare up to 5 images, common 6..14, frequent from 15);
    # were the two label columns swapped, 'rare' would also hold classes of more images
    image = {g: [int(r[3]) for r in rows if r[1] == g] for g in ("frequent", "common", "rare")}
    assert max(image["rare"]) == 5 and (min(image["common"]), max(image["common"])) == (6, 14)
    assert min(image["frequent"]) == 15 and max(image["frequent"]) == 13445
    pixel = {g: [float(r[4]) for r in rows if r[2] == g] for g in ("frequent", "common", "rare")}
    assert max(pixel["rare"]) < min(pixel["common"]) <= max(pixel["common"]) < min(pixel["frequent"])
    assert sum(r[1] != r[2] for r in rows) > 0  # the two labellings differ
    assert rows[0][1:3] == ["frequent", "frequent"] and rows[846][1:3] == ["rare", "rare"]


def test_group_by_takes_the_ltss_values():
    for value in ("ltss_image", "ltss_pixel", "ltss_both"):
        assert parse_config({"eval": {"group_by": value}}).eval.group_by == value
    with pytest.raises(ConfigError, match=r"eval\.group_by.*'ltss' is not one of region, pixel, both, ltss_image, "
                                          r"ltss_pixel, ltss_both"):
        parse_config({"eval": {"group_by": "ltss"}})


def _confusion(num_classes: int) -> ConfusionMatrix:
    cm = ConfusionMatrix(num_classes, 65535)
    label = np.arange(num_classes).reshape(1, -1)
    pred = label.copy()
    pred[0, ::3] = 0  # every third class wrong
    import torch

    cm.update(torch.from_numpy(pred), torch.from_numpy(label))
    return cm


def test_the_evaluator_reports_ltss_groups_without_counts():
    names = ade20k_full_classes()
    both = Evaluator(EvalConfig(group_by="ltss_both"), 847, 65535, None, names)
    image, pixel = ltss_groups("image"), ltss_groups("pixel")
    assert list(both.groups) == ["frequent", "common", "rare", "pixel_frequent", "pixel_common", "pixel_rare"]
    for name in image:
        assert np.array_equal(both.groups[name], image[name])
        assert np.array_equal(both.groups[f"pixel_{name}"], pixel[name])
    report = both.report_of(_confusion(847))
    assert report["group_by"] == "ltss_both"
    assert report["group_classes"]["rare"] == image["rare"].tolist()
    assert report["group_ranking"]["rare"] == "region" and report["group_ranking"]["pixel_rare"] == "pixel"
    iou = np.array([p["iou"] for p in report["per_class"]], dtype=float)
    assert report["groups"]["rare"]["mIoU"] == pytest.approx(np.nanmean(iou[image["rare"]]))
    assert report["per_class"][846]["group"] == "rare" and report["per_class"][0]["pixel_group"] == "pixel_frequent"
    assert "| rare | " in markdown_report(report) and "LTSS's image frequency labels" in markdown_report(report)

    only_image = Evaluator(EvalConfig(group_by="ltss_image"), 847, 65535, None, names)
    assert list(only_image.groups) == ["frequent", "common", "rare"]
    only_pixel = Evaluator(EvalConfig(group_by="ltss_pixel"), 847, 65535, None, names)
    assert list(only_pixel.groups) == ["pixel_frequent", "pixel_common", "pixel_rare"]


def test_ltss_groups_are_refused_for_other_classes():
    with pytest.raises(RRSegError, match=r"^config key 'eval.group_by': 'ltss_image' are LTSS's labels of "
                                         r"ADE20K-Full's 847 classes \(data.val type ade20k_full\), but this "
                                         r"evaluation has 3 classes, from 'a'; use region, pixel or both$"):
        Evaluator(EvalConfig(group_by="ltss_image"), 3, 255, None, ["a", "b", "c"])
    with pytest.raises(RRSegError, match=r"this evaluation has 847 classes without names"):
        Evaluator(EvalConfig(group_by="ltss_pixel"), 847, 65535)
    renamed = list(ade20k_full_classes())
    renamed[5] = "something else"
    with pytest.raises(RRSegError, match=r"'ltss_both' are LTSS's labels"):
        Evaluator(EvalConfig(group_by="ltss_both"), 847, 65535, None, renamed)
