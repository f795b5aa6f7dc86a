"""ClassCounts: every accepted source, every rejected one, and priors that stay finite."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rrseg.errors import RRSegError
from rrseg.rebalance import ClassCounts, CountsError


@pytest.mark.parametrize(
    "source",
    [
        [3, 0, 7, 1],
        (3, 0, 7, 1),
        torch.tensor([3, 0, 7, 1]),
        torch.tensor([3.0, 0.0, 7.0, 1.0]),
        np.array([3, 0, 7, 1], dtype=np.uint16),
        np.array([3.0, 0.0, 7.0, 1.0]),
    ],
    ids=["list", "tuple", "tensor", "float-tensor", "uint16", "whole-floats"],
)
def test_load_sequences(source):
    counts = ClassCounts.load(source, num_classes=4)
    assert counts.image_counts.dtype == np.int64
    assert counts.image_counts.tolist() == [3, 0, 7, 1]
    assert counts.pixel_counts is None and counts.num_classes == 4
    assert ClassCounts.load(counts, 4) is counts


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ([1, 2, 3], "3 entries but num_classes is 4"),
        ([1, -2, 3, 4], "class 1 is negative"),
        ([1, 2.5, 3, 4], "whole numbers"),
        ([1, float("nan"), 3, 4], "finite"),
        ([1, float("inf"), 3, 4], "finite"),
        (["1", "2", "3", "4"], "numbers"),
        ([[1, 2], [3, 4]], "flat list"),
        ([1, None, 3, 4], "numbers"),
    ],
)
def test_load_rejects(source, match):
    with pytest.raises(CountsError, match=match) as info:
        ClassCounts.load(source, num_classes=4)
    assert isinstance(info.value, RRSegError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_json_round_trip(tmp_path):
    counts = ClassCounts(np.array([5, 0, 2]), np.array([500, 0, 37]), num_images=6)
    path = tmp_path / "counts.json"
    path.write_text(json.dumps(counts.to_json()))
    back = ClassCounts.load(path, 3)
    assert back.image_counts.tolist() == [5, 0, 2]
    assert back.pixel_counts.tolist() == [500, 0, 37]
    assert back.num_images == 6
    assert ClassCounts.load(str(path)).image_counts.tolist() == [5, 0, 2]  # str path works too


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"pixel_counts": [1, 2]}', "image_counts"),
        ("[1, 2, 3]", "image_counts"),
        ('{"image_counts": [1, 2], "pixel_counts": [1, 2, 3]}', "pixel_counts has 3"),
        ('{"image_counts": [1, -4]}', "negative"),
        ('{"image_counts": [1, 2], "pixel_counts": [1, 0.5]}', "whole"),
    ],
)
def test_bad_json(tmp_path, text, match):
    path = tmp_path / "counts.json"
    path.write_text(text)
    with pytest.raises(CountsError, match=match) as info:
        ClassCounts.load(path)
    assert str(path) in str(info.value)


def test_released_text_format_with_pixel_sibling(tmp_path):
    (tmp_path / "toy_image_label_stats.txt").write_text("12\n0\n\n7\n")  # a blank line is tolerated
    (tmp_path / "toy_pix_label_stats.txt").write_text("1200\n0\n70\n")
    counts = ClassCounts.load(tmp_path / "toy_image_label_stats.txt", 3)
    assert counts.image_counts.tolist() == [12, 0, 7]
    assert counts.pixel_counts.tolist() == [1200, 0, 70]


def test_text_file_without_sibling(tmp_path):
    path = tmp_path / "region_counts.txt"
    path.write_text(" 4\n5 \n")
    counts = ClassCounts.load(path, 2)
    assert counts.image_counts.tolist() == [4, 5] and counts.pixel_counts is None


def test_text_sibling_length_mismatch(tmp_path):
    (tmp_path / "a_image_label_stats.txt").write_text("1\n2\n")
    (tmp_path / "a_pix_label_stats.txt").write_text("1\n2\n3\n")
    with pytest.raises(CountsError, match=r"a_pix_label_stats\.txt"):
        ClassCounts.load(tmp_path / "a_image_label_stats.txt")


def test_text_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("3\n4\nfour\n")
    with pytest.raises(CountsError, match=r"c\.txt: line 3 is not an integer: 'four'"):
        ClassCounts.load(path)
    path.write_text("3\n-4\n")
    with pytest.raises(CountsError, match="negative"):
        ClassCounts.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CountsError, match="not found") as info:
        ClassCounts.load(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)
    with pytest.raises(CountsError, match="not found"):
        ClassCounts.load(tmp_path)  # a directory is not a counts file


def test_binary_file_is_a_counts_error(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(CountsError, match=r"counts\.txt"):
        ClassCounts.load(path)


# Read by hand from the files released with the paper (shared/data/official-stats/*_label_stats.txt, one count per
# line in class order; the package ships copies in rrseg/rebalance/resources): the number of classes, the sum of each
# file, and a few entries (class index: count). Literals, so that the loader is checked against the release and
# not against the files it reads itself.
RELEASED = {
    "ade20k": {
        "num_classes": 150,
        "image": {"total": 165120, "entries": {0: 11588, 1: 6042, 75: 324, 96: 41, 149: 421}},
        "pixel": {"total": 4354607494, "entries": {0: 737138625, 1: 503599787, 75: 4920789, 149: 890841}},
    },
    "cityscapes": {
        "num_classes": 19,
        "image": {"total": 34723, "entries": {0: 2934, 1: 2811, 5: 2949, 9: 1654, 16: 142, 18: 1646}},
        "pixel": {"total": 5523279889, "entries": {0: 2036416525, 1: 336090793, 9: 63949536, 17: 5449152,
                                                   18: 22861233}},
    },
    "coco_stuff164k": {
        "num_classes": 171,
        "image": {"total": 965042, "entries": {0: 63965, 1: 3241, 85: 9849, 167: 121, 170: 5053}},
        "pixel": {"total": 30627322816, "entries": {0: 2760885855, 1: 48359390, 78: 1056718, 85: 183739178,
                                                    170: 78267977}},
    },
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_names(name):
    known = RELEASED[name]
    counts = ClassCounts.load(name, known["num_classes"])
    for kind, values in (("image", counts.image_counts), ("pixel", counts.pixel_counts)):
        assert values is not None and len(values) == known["num_classes"], kind
        assert int(values.sum()) == known[kind]["total"], kind
        assert {i: int(values[i]) for i in known[kind]["entries"]} == known[kind]["entries"], kind
    with pytest.raises(CountsError):
        ClassCounts.load(name, known["num_classes"] + 1)


RELEASED_FILES = {"ade20k": "ade20k", "cityscapes": "cityscapes", "coco_stuff164k": "cocostuff164k"}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_files_by_their_file_name(name, tmp_path, monkeypatch):
    """The authors' configs name the files (``ade20k_image_label_stats.txt``): a bare file name that does not
    exist where it points is the packaged file, its pixel sibling read too; a local file of that name wins, and
    a path with a folder is always read as given."""
    monkeypatch.chdir(tmp_path)
    image_file = f"{RELEASED_FILES[name]}_image_label_stats.txt"
    by_file, by_name = ClassCounts.load(image_file, RELEASED[name]["num_classes"]), ClassCounts.load(name)
    assert by_file.image_counts.tolist() == by_name.image_counts.tolist()
    assert by_file.pixel_counts.tolist() == by_name.pixel_counts.tolist()
    pix_only = ClassCounts.load(f"{RELEASED_FILES[name]}_pix_label_stats.txt")
    assert pix_only.image_counts.tolist() == by_name.pixel_counts.tolist()
    with pytest.raises(CountsError, match=rf"released {image_file}: class counts have"):
        ClassCounts.load(image_file, 7)
    (tmp_path / image_file).write_text("1\n2\n")  # the user's own file of that name
    assert ClassCounts.load(image_file).image_counts.tolist() == [1, 2]
    with pytest.raises(CountsError, match=r"elsewhere/.*: counts file not found \(released counts are named "
                                          r"ade20k, coco_stuff164k, cityscapes or by their file name"):
        ClassCounts.load(f"elsewhere/{image_file}")


def test_ade20k_figures_from_the_paper():
    counts = ClassCounts.load("ade20k", 150)
    assert counts.image_counts.max() == 11588 and counts.image_counts.min() == 41  # as stated in RR-SPEC


def test_log_prior_with_zero_counts():
    counts = ClassCounts(np.array([100, 0, 3, 0]), np.array([10**9, 0, 7, 0]))
    for kind in ("region", "image", "pixel"):
        prior = counts.log_prior(kind)
        assert prior.dtype == torch.float32 and prior.shape == (4,)
        assert torch.isfinite(prior).all()
        n = np.maximum(counts.frequencies(kind), 1).astype(np.float64)
        expected = [math.log(v / n.sum()) for v in n]
        np.testing.assert_allclose(prior.numpy(), expected, rtol=1e-6)
    assert counts.log_prior("region").exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    all_zero = ClassCounts(np.zeros(5, np.int64))
    np.testing.assert_allclose(all_zero.log_prior().numpy(), [math.log(1 / 5)] * 5, rtol=1e-6)


def test_frequencies_and_kinds():
    counts = ClassCounts(np.array([2, 1]))
    assert counts.frequencies("region").tolist() == [2, 1]
    with pytest.raises(CountsError, match="pixel counts"):
        counts.frequencies("pixel")
    with pytest.raises(ValueError, match="kind"):
        counts.log_prior("pixels")
    assert counts.check(2) is counts
    with pytest.raises(CountsError, match="num_classes is 3"):
        counts.check(3)
