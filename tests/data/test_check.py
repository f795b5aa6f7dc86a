"""check_dataset finds every problem at once and words it as the dataset classes do during training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrseg.data import FolderDataset, check_dataset
from rrseg.errors import RRSegError

from .conftest import save_label


def break_dataset(root: Path) -> None:
    """One problem of each kind in the train split of a ``folder_dataset(n_train=8)``."""
    imgs, lbls = root / "images" / "train", root / "labels" / "train"
    (imgs / "s0.png").write_bytes((imgs / "s0.png").read_bytes()[:100])  # truncated image
    (lbls / "s1.png").unlink()  # missing label
    save_label(lbls / "s2.png", np.zeros((10, 10), np.uint8))  # size mismatch
    arr = np.zeros((24, 32), np.uint8)
    arr[3, 3] = 9
    save_label(lbls / "s3.png", arr)  # out of range (4 classes)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(lbls / "s4.png")  # RGB label
    save_label(lbls / "orphan.png", np.zeros((24, 32), np.uint8))  # label without image (warning)
    (root / "images" / "empty").mkdir()  # a split without images


def test_every_problem_reported_at_once(folder_dataset) -> None:
    root = folder_dataset(n_train=8)
    break_dataset(root)
    report = check_dataset(root, workers=1)
    assert not report.ok
    assert report.counts() == {
        "corrupt_image": 1, "missing_label": 1, "size_mismatch": 1, "label_range": 1, "rgb_label": 1,
        "orphan_label": 1, "empty_split": 1,
    }
    train = next(s for s in report.splits if s.split == "train")
    assert train.images == 8 and train.checked == 7
    assert [s.split for s in report.splits] == ["empty", "train", "val"]
    assert not any(p.kind != "orphan_label" for s in report.splits if s.split == "val" for p in s.problems)
    text = report.format()
    assert "label values outside the class range (label_range, error): 1" in text
    assert "label without image (orphan_label, warning): 1" in text
    assert text.splitlines()[-1] == "FAILED: 6 problems, 1 warnings in 3 splits"


def test_messages_are_those_training_raises(folder_dataset) -> None:
    root = folder_dataset(n_train=8)
    break_dataset(root)
    report = check_dataset(root, splits=["train"], workers=2)  # worker processes too
    messages = {p.kind: p.message for p in report.problems}
    ds = FolderDataset(root, "train", strict=False)
    # the samples break_dataset broke one way each (s1, without a label, is not listed); the others load
    broken = {"s0": "corrupt_image", "s2": "size_mismatch", "s3": "label_range", "s4": "rgb_label"}
    keys = [sample.key for sample in ds.samples]
    assert set(broken) < set(keys)
    for i, key in enumerate(keys):
        if key not in broken:
            ds[i]
            continue
        with pytest.raises(RRSegError) as raised:
            ds[i]
        assert raised.value.kind == broken[key]
        assert str(raised.value) == messages[broken[key]]
    with pytest.raises(RRSegError) as e:
        FolderDataset(root, "train")  # strict: the listing problem comes first
    assert str(e.value).startswith(messages["missing_label"])


def test_clean_dataset_and_warnings_only(folder_dataset) -> None:
    root = folder_dataset()
    assert check_dataset(root).ok
    save_label(root / "labels" / "val" / "extra.png", np.zeros((24, 32), np.uint8))
    report = check_dataset(root / "dataset.yaml", splits=["val"])
    assert report.ok and report.counts() == {"orphan_label": 1}
    assert report.format().splitlines()[-1] == "OK: 0 problems, 1 warnings in 1 splits"


def test_broken_yaml_and_unknown_split(folder_dataset, tmp_path: Path) -> None:
    root = folder_dataset()
    report = check_dataset(root, splits=["test"])
    assert report.counts() == {"missing_dir": 1}
    (root / "dataset.yaml").write_text("classes: 0\n")
    report = check_dataset(root)
    assert not report.ok and report.counts() == {"config": 1}
    with pytest.raises(RRSegError, match="not a known dataset layout"):
        check_dataset(tmp_path / "folder" / "images")
