"""Label converters against the published id tables (mmseg's clsID_to_trID, cityscapesScripts' labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rrseg.data.label_conversion import (
    COCO_STUFF_UNUSED_IDS,
    cityscapes_lut,
    coco_stuff_lut,
    convert_cityscapes,
    convert_coco_stuff,
)

from .conftest import save_label


def test_coco_stuff_table() -> None:
    lut = coco_stuff_lut()
    # spot checks against mmsegmentation's tools/dataset_converters/coco_stuff164k.py
    for raw, train in {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 27: 25, 30: 26, 43: 39, 45: 40, 64: 59, 66: 60,
                       69: 61, 71: 62, 81: 72, 83: 73, 89: 79, 91: 80, 92: 81, 181: 170, 255: 255}.items():
        assert lut[raw] == train, raw
    assert all(lut[i] == 255 for i in COCO_STUFF_UNUSED_IDS)
    used = lut[:182][lut[:182] != 255]
    assert used.tolist() == list(range(171))  # 171 classes, in order, each once
    assert (lut[182:255] == 255).all()


def test_cityscapes_table() -> None:
    lut = cityscapes_lut()
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for i in range(256):
        assert lut[i] == expected.get(i, 255), i


def test_convert_coco_stuff_folder(tmp_path: Path) -> None:
    raw, out = tmp_path / "stuffthingmaps", tmp_path / "annotations"
    a = np.array([[0, 12, 181], [255, 91, 11]], np.uint8)  # 11 is an unused id
    save_label(raw / "train2017" / "000000000009.png", a)
    save_label(raw / "val2017" / "000000000139.png", np.full((2, 3), 40, np.uint8))
    report = convert_coco_stuff(raw, out, workers=1)
    assert report.converted == 2 and report.ok and report.unexpected == {11: 1}
    got = np.asarray(Image.open(out / "train2017" / "000000000009_labelTrainIds.png"))
    np.testing.assert_array_equal(got, [[0, 11, 170], [255, 80, 255]])
    assert (np.asarray(Image.open(out / "val2017" / "000000000139_labelTrainIds.png")) == 36).all()
    # a second run skips what exists; --overwrite converts again
    assert convert_coco_stuff(raw, out, workers=1).skipped == 2
    assert convert_coco_stuff(raw, out, workers=2, overwrite=True).converted == 2


def test_convert_cityscapes_beside_inputs_and_failures(tmp_path: Path) -> None:
    gt = tmp_path / "gtFine"
    ids = np.array([[7, 8, 0], [26, 33, 4]], np.uint8)
    src = save_label(gt / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", ids)
    bad = gt / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG broken")
    report = convert_cityscapes(gt, workers=1)
    assert report.converted == 1 and len(report.failed) == 1 and "lindau_000000_000019" in report.failed[0]
    out = src.with_name("aachen_000000_000019_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), [[0, 1, 255], [13, 18, 255]])
    assert not bad.with_name("lindau_000000_000019_gtFine_labelTrainIds.png").exists()  # nothing half-written
