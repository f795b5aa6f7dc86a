"""frequency_groups and group_summary against rankings and means computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rrseg.metrics import GROUP_NAMES, SegMetrics, frequency_groups, group_summary


def naive_ranking(counts) -> list[int]:
    """Most frequent first; equal counts keep class order."""
    return sorted(range(len(counts)), key=lambda i: (-counts[i], i))


def tied_counts(num_classes: int, seed: int = 0) -> list[int]:
    # few distinct values, so that many classes tie, including across the group borders
    return np.random.default_rng(seed).integers(0, 12, num_classes).tolist()


def test_ade20k_default_split_20_55_75():
    counts = tied_counts(150)
    groups = frequency_groups(counts)
    assert tuple(groups) == GROUP_NAMES
    assert [len(groups[g]) for g in GROUP_NAMES] == [20, 55, 75]
    ranking = naive_ranking(counts)
    assert groups["frequent"].tolist() == ranking[:20]
    assert groups["common"].tolist() == ranking[20:75]
    assert groups["rare"].tolist() == ranking[75:]
    # the border falls inside a run of ties, so stability really is exercised
    assert counts[ranking[19]] == counts[ranking[20]]


def test_released_ade20k_counts_split():
    from rrseg.rebalance import ClassCounts

    counts = ClassCounts.load("ade20k").image_counts
    groups = frequency_groups(counts)
    assert min(counts[groups["frequent"]]) >= max(counts[groups["common"]])
    assert min(counts[groups["common"]]) >= max(counts[groups["rare"]])
    assert int(np.argmax(counts)) == groups["frequent"][0]


@pytest.mark.parametrize(("num_classes", "sizes"), [(19, (3, 7, 9)), (171, (23, 63, 85)), (150, (20, 55, 75))])
def test_same_fractions_for_other_class_counts(num_classes, sizes):
    assert sizes[:2] == (round(num_classes * 20 / 150), round(num_classes * 55 / 150))
    counts = tied_counts(num_classes, seed=num_classes)
    groups = frequency_groups(counts)
    assert tuple(len(groups[g]) for g in GROUP_NAMES) == sizes
    ranking = naive_ranking(counts)
    assert np.concatenate([groups[g] for g in GROUP_NAMES]).tolist() == ranking


def test_sizes_override():
    counts = [5, 9, 9, 1, 0, 7]
    groups = frequency_groups(counts, sizes=(2, 1))
    assert groups["frequent"].tolist() == [1, 2]
    assert groups["common"].tolist() == [5]
    assert groups["rare"].tolist() == [0, 3, 4]
    assert frequency_groups(counts, sizes=(0, 0))["rare"].tolist() == [1, 2, 5, 0, 3, 4]
    with pytest.raises(ValueError, match="do not fit"):
        frequency_groups(counts, sizes=(4, 3))
    with pytest.raises(ValueError):
        frequency_groups(counts, sizes=(-1, 2))


def test_thresholds_override():
    counts = tied_counts(40, seed=7)
    t_freq, t_common = 8, 3
    groups = frequency_groups(counts, thresholds=(t_freq, t_common))
    ranking = naive_ranking(counts)
    assert groups["frequent"].tolist() == [c for c in ranking if counts[c] >= t_freq]
    assert groups["common"].tolist() == [c for c in ranking if t_common <= counts[c] < t_freq]
    assert groups["rare"].tolist() == [c for c in ranking if counts[c] < t_common]
    with pytest.raises(ValueError, match="thresholds"):
        frequency_groups(counts, thresholds=(2, 5))
    with pytest.raises(ValueError, match="not both"):
        frequency_groups(counts, sizes=(1, 1), thresholds=(5, 2))


def test_group_summary_means_by_hand():
    rng = np.random.default_rng(11)
    num_classes = 12
    mat = rng.integers(0, 40, (num_classes, num_classes))
    mat[3, :] = 0  # class 3: never a label -> accuracy NaN
    mat[7, :] = 0
    mat[:, 7] = 0  # class 7: absent -> IoU NaN
    metrics = SegMetrics(mat)
    counts = rng.integers(0, 100, num_classes)
    groups = frequency_groups(counts, sizes=(3, 4))
    summary = group_summary(metrics, groups)
    assert set(summary) == {"all", *GROUP_NAMES}

    total = int(mat.sum())

    def iou(c):
        union = mat[c, :].sum() + mat[:, c].sum() - mat[c, c]
        return mat[c, c] / union if union else math.nan

    def acc(c):
        return mat[c, c] / mat[c, :].sum() if mat[c, :].sum() else math.nan

    def fpr(c):
        return (mat[:, c].sum() - mat[c, c]) / (total - mat[c, :].sum())

    def mean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    for name, classes in [("all", range(num_classes)), *groups.items()]:
        classes = list(classes)
        assert summary[name]["mIoU"] == pytest.approx(mean([iou(c) for c in classes])), name
        assert summary[name]["mAcc"] == pytest.approx(mean([acc(c) for c in classes])), name
        assert summary[name]["mFPR"] == pytest.approx(mean([fpr(c) for c in classes])), name
    assert 3 in np.concatenate(list(groups.values())) and 7 in np.concatenate(list(groups.values()))


def test_group_of_only_absent_classes_is_nan():
    mat = np.zeros((3, 3), np.int64)
    mat[0, 0] = 10
    summary = group_summary(SegMetrics(mat), frequency_groups([5, 0, 0], sizes=(1, 1)))
    assert summary["frequent"]["mIoU"] == 1.0
    assert math.isnan(summary["common"]["mIoU"]) and math.isnan(summary["rare"]["mIoU"])


# ------------------------------------------------------------------ groups by pixel count (eval.group_by)
def naive_split(counts, sizes=None) -> dict[str, list[int]]:
    """frequent / common / rare by hand: the ranking above, cut at the given sizes or at 20/150 and 55/150."""
    n = len(counts)
    n_freq, n_common = sizes if sizes else (round(n * 20 / 150), round(n * 55 / 150))
    ranking = naive_ranking(counts)
    return {"frequent": ranking[:n_freq], "common": ranking[n_freq : n_freq + n_common],
            "rare": ranking[n_freq + n_common :]}


def test_ranked_groups_by_pixel_and_both_against_a_ranking_by_hand():
    from rrseg.metrics import PIXEL_GROUP_NAMES, group_ranking, ranked_groups

    region = tied_counts(40, seed=1)
    pixel = (np.asarray(tied_counts(40, seed=2)) * 1000).tolist()  # another order than the region counts
    assert naive_ranking(region) != naive_ranking(pixel)
    by_pixel = ranked_groups(region, pixel, "pixel")
    assert tuple(by_pixel) == PIXEL_GROUP_NAMES
    assert {k: v.tolist() for k, v in by_pixel.items()} == {f"pixel_{k}": v for k, v in naive_split(pixel).items()}
    both = ranked_groups(region, pixel, "both", sizes=(7, 13))
    assert tuple(both) == (*GROUP_NAMES, *PIXEL_GROUP_NAMES)
    expected = {**naive_split(region, (7, 13)), **{f"pixel_{k}": v for k, v in naive_split(pixel, (7, 13)).items()}}
    assert {k: v.tolist() for k, v in both.items()} == expected
    assert {k: v.tolist() for k, v in ranked_groups(region, pixel, "region").items()} == naive_split(region)
    assert [group_ranking(k) for k in both] == ["region"] * 3 + ["pixel"] * 3


def test_ranked_groups_errors():
    from rrseg.errors import RRSegError
    from rrseg.metrics import ranked_groups

    with pytest.raises(RRSegError, match=r"group_by 'pixel' ranks classes by pixel count, but these class counts "
                                         r"hold image \(region\) counts only"):
        ranked_groups([3, 2, 1], None, "pixel")
    with pytest.raises(RRSegError, match="group_by 'both' ranks classes by pixel count"):
        ranked_groups([3, 2, 1], None, "both")
    with pytest.raises(RRSegError, match="group_by must be one of region, pixel, both, got 'pixels'"):
        ranked_groups([3, 2, 1], [3, 2, 1], "pixels")
    with pytest.raises(RRSegError, match="thresholds are region counts"):
        ranked_groups([3, 2, 1], [3, 2, 1], "pixel", thresholds=(2, 1))


# ------------------------------------------------------------------ few classes (the default split's rules)
# (frequent, common, rare) sizes of the default split, written out by hand from the rule in the module's
# docstring: ADE20K's fractions rounded, at least one class per group, no rare group below 3 classes
FEW_CLASS_SIZES = {1: (1, 0, 0), 2: (1, 1, 0), 3: (1, 1, 1), 4: (1, 1, 2), 5: (1, 2, 2), 6: (1, 2, 3),
                   7: (1, 3, 3), 8: (1, 3, 4), 9: (1, 3, 5), 10: (1, 4, 5)}


@pytest.mark.parametrize("num_classes", [*FEW_CLASS_SIZES, 150])
def test_default_split_with_few_classes(num_classes):
    """1..10 classes and ADE20K's 150: the sizes above (150: 20 / 55 / 75, unchanged); the most frequent class
    is always "frequent", and from 3 classes on the least frequent always "rare" and no group is empty."""
    from rrseg.metrics.groups import MIN_CLASSES_FOR_RARE, default_group_sizes

    sizes = FEW_CLASS_SIZES.get(num_classes, (20, 55, 75))
    assert default_group_sizes(num_classes) == sizes[:2]
    rng = np.random.default_rng(num_classes)
    counts = rng.permutation(np.arange(10, 10 + 7 * num_classes, 7))  # distinct counts in a shuffled order
    groups = frequency_groups(counts)
    assert tuple(len(groups[g]) for g in GROUP_NAMES) == sizes
    assert np.concatenate([groups[g] for g in GROUP_NAMES]).tolist() == naive_ranking(counts.tolist())
    assert int(np.argmax(counts)) in groups["frequent"]
    if num_classes >= MIN_CLASSES_FOR_RARE:
        assert int(np.argmin(counts)) in groups["rare"] and all(len(groups[g]) for g in GROUP_NAMES)
    else:
        assert len(groups["rare"]) == 0


def test_three_classes_present_in_every_image_are_one_per_group():
    """The case that read badly: 3 classes, one in every training image. It is "frequent" (it used to be
    "common", with "frequent" empty and reading n/a); the report's group table has a row per group with one class."""
    from rrseg.metrics.report import build_report, format_report

    counts = [40, 12, 40]  # classes 0 and 2 in every one of 40 images: a tie, kept in class order
    groups = frequency_groups(counts)
    assert {g: v.tolist() for g, v in groups.items()} == {"frequent": [0], "common": [2], "rare": [1]}
    mat = np.array([[50, 2, 0], [3, 20, 1], [0, 0, 30]])
    report = build_report(SegMetrics(mat), ["bg", "cat", "sky"], counts)
    assert all(not math.isnan(report["groups"][g]["mIoU"]) for g in GROUP_NAMES)
    rows = {line.split()[0]: line for line in format_report(report).splitlines()[1:5]}
    assert all("n/a" not in rows[g].split("region")[0] and " 1 " in rows[g] for g in GROUP_NAMES)


def test_other_class_counts_keep_their_default_sizes():
    """From 4 classes on the rules change nothing: the rounded fractions, as before (demo 4 / 11 / 15, Cityscapes
    3 / 7 / 9, COCO-Stuff 23 / 63 / 85, ADE20K-Full 113 / 311 / 423)."""
    from rrseg.metrics.groups import default_group_sizes

    for c in range(4, 900):
        assert default_group_sizes(c) == (round(c * 20 / 150), round(c * 55 / 150)), c
    assert [default_group_sizes(c) for c in (30, 19, 171, 847)] == [(4, 11), (3, 7), (23, 63), (113, 311)]
