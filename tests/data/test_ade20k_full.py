"""ADE20K-Full (847 classes, uint16 TIFF labels, 65535 not labelled) on real TIFF files in MaskFormer's layout:
reading, the ignore index through the transforms, check_dataset, counting, and bad labels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from rrseg.data import build_dataset, check_dataset, dataset_class, detect_layout
from rrseg.data.ade20k_full import ADE20K_FULL_IGNORE_INDEX, ADE20KFullDataset, ade20k_full_classes
from rrseg.data.errors import DataError
from rrseg.data.stats import compute_stats
from rrseg.data.transforms import RandomCropCatMax, train_transforms
from tests.conftest import ADE20K_FULL_IDS, ADE20K_FULL_IGNORE


def tif_values(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "I;16"
        return np.array(im).astype(np.int64)


def test_the_847_class_names_of_the_maskformer_script():
    names = ade20k_full_classes()
    assert len(names) == 847 and len(set(names)) == 847
    # spot checks against ADE20K_SEM_SEG_FULL_CATEGORIES (trainId -> name)
    assert names[0] == "wall"
    assert names[1] == "building, edifice"
    assert names[150] == "blanket, cover"
    assert names[255] == "pier"
    assert names[256] == "shanties"
    assert names[561] == "wine rack"
    assert names[846] == "adding machine, totalizer, totaliser"


def test_reads_the_maskformer_layout_keeping_ids_above_255(ade20k_full):
    assert ade20k_full.name == "ADE20K_2021_17_01"
    for root in (ade20k_full, ade20k_full.parent):  # the folder itself or the one holding it
        ds = build_dataset("ade20k_full", root, "train")
        assert isinstance(ds, ADE20KFullDataset) and ds.root == ade20k_full
        assert len(ds) == 4 and ds.num_classes == 847 and len(ds.palette) == 847
        assert ds.ignore_index == ADE20K_FULL_IGNORE_INDEX == 65535
    assert len(build_dataset("ade20k_full", ade20k_full, "val")) == 2
    assert len(build_dataset("ade20k_full", ade20k_full, "validation")) == 2
    seen: set[int] = set()
    for i in range(len(ds)):
        item = ds[i]
        label = item["label"]
        assert isinstance(label, tv_tensors.Mask) and label.dtype == torch.int64
        expected = tif_values(ds.samples[i].label)
        assert np.array_equal(label.numpy(), expected)  # no id remapped: 255 stays 255, 846 stays 846
        assert item["image"].shape == (3, 48, 64)
        seen |= set(np.unique(expected).tolist())
    assert {255, 256, 300, 846, 65535} <= seen
    assert seen <= {*ADE20K_FULL_IDS, ADE20K_FULL_IGNORE}


def test_layout_is_recognised_and_named(ade20k_full):
    assert detect_layout(ade20k_full) == ("ade20k_full", ade20k_full)
    assert detect_layout(ade20k_full.parent) == ("ade20k_full", ade20k_full)
    for name in ("ade20k_full", "ADE20K-Full", "ade_full", "ADE20K_2021_17_01"):
        assert dataset_class(name) is ADE20KFullDataset
    assert ADE20KFullDataset.available_splits(ade20k_full.parent) == ["train", "val"]


def test_training_transforms_keep_ids_and_pad_with_the_ignore_value(ade20k_full):
    ds = build_dataset("ade20k_full", ade20k_full, "train")
    _, mask, _ = ds.load(0)
    original = mask.numpy().copy()
    # crop larger than the image: everything is kept, the rest is padding
    pipe = train_transforms(crop_size=(80, 96), scale=(64, 48), ratio_range=(1.0, 1.0), flip_prob=0.0,
                            photometric=False, ignore_index=ds.ignore_index)
    image, out = pipe(*ds.load(0)[:2])
    out = out.numpy()
    assert out.shape == (80, 96) and out.dtype == np.int64
    assert np.array_equal(out[:48, :64], original)
    assert (out[48:, :] == 65535).all() and (out[:, 64:] == 65535).all()
    assert image.shape == (3, 80, 96)
    # random rescale and crop: nothing but the file's own values (nearest) and the ignore value
    torch.manual_seed(0)
    pipe = train_transforms(crop_size=(40, 40), scale=(64, 48), ratio_range=(0.5, 2.0), ignore_index=65535)
    above_255 = False
    for _ in range(12):
        _, out = pipe(*ds.load(1)[:2])
        values = set(torch.unique(out).tolist())
        assert values <= {*ADE20K_FULL_IDS, 65535}, values
        above_255 |= any(256 <= v <= 846 for v in values)
    assert above_255


def test_cat_max_ratio_leaves_out_the_datasets_ignore_value():
    # a window that is 90% unlabelled and otherwise two classes in equal parts: acceptable, unless 65535 is
    # taken for a class (the old hard-coded 255 would count it as one covering 90% of the crop)
    mask = torch.full((1, 20, 20), 65535, dtype=torch.int64)
    mask[0, :2, :10] = 300
    mask[0, :2, 10:] = 846
    window = (0, 0, 20, 20)
    assert RandomCropCatMax(20, 0.75, ignore_index=65535)._accept(mask, window)
    assert not RandomCropCatMax(20, 0.75, ignore_index=255)._accept(mask, window)


def test_check_dataset_passes_the_fixture(ade20k_full):
    report = check_dataset(ade20k_full.parent, workers=1)
    assert report.ok, report.format()
    assert report.dataset == "ade20k_full" and report.num_classes == 847
    assert [(s.split, s.checked) for s in report.splits] == [("train", 4), ("val", 2)]


def write_tif(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path)


@pytest.mark.parametrize(
    ("array", "kind", "message"),
    [
        (lambda a: (a % 200).astype(np.uint8), "label_dtype",
         r"ADE_train_00000002\.tif: label pixels are uint8 \(8-bit\), expected uint16 \(16-bit\); ADE20K-Full"),
        (lambda a: a.astype(np.int32), "label_dtype",
         r"ADE_train_00000002\.tif: label pixels are int32 \(32-bit\), expected uint16 \(16-bit\)"),
        (lambda a: a.astype(np.float32), "label_dtype", r"ADE_train_00000002\.tif: label is a mode F image"),
        (lambda a: np.where(a == 300, 900, a).astype(np.uint16), "label_range",
         r"ADE_train_00000002\.tif: label values 900 outside the class range 0\.\.846 \(ignore index 65535\)"),
        (lambda a: np.where(a == 65535, 847, a).astype(np.uint16), "label_range",
         r"label values 847 outside the class range 0\.\.846"),
    ],
    ids=["uint8", "int32", "float", "900", "847"],
)
def test_bad_labels_are_one_line_errors(ade20k_full, array, kind, message):
    label = ade20k_full / "annotations_detectron2" / "training" / "ADE_train_00000002.tif"
    write_tif(label, array(tif_values(label)))
    ds = build_dataset("ade20k_full", ade20k_full, "train")
    err = ds.check_sample(1)
    assert err is not None and err.kind == kind
    assert "\n" not in str(err)
    assert re.search(message, str(err)), str(err)
    with pytest.raises(DataError, match=message):
        ds[1]
    assert ds.check_sample(0) is None
    report = check_dataset(ade20k_full, workers=1)
    assert not report.ok and [p.kind for p in report.errors] == [kind]


def test_counts_over_the_tiffs_equal_naive_counts(ade20k_full):
    ds = build_dataset("ade20k_full", ade20k_full, "train")
    counts, info = compute_stats(ds.label_files, 847, ignore_index=65535, workers=1, label_dtype=np.uint16)
    image = np.zeros(847, np.int64)
    pixel = np.zeros(847, np.int64)
    for f in ds.label_files:
        arr = tif_values(f)
        for c in ADE20K_FULL_IDS:
            image[c] += (arr == c).any()
            pixel[c] += (arr == c).sum()
    assert np.array_equal(counts.image_counts, image) and np.array_equal(counts.pixel_counts, pixel)
    assert counts.image_counts[255] == counts.image_counts[300] == counts.image_counts[846] == 4
    assert info["num_images"] == 4
    # an 8-bit TIFF is refused when the dataset's pixel type is asked for
    write_tif(Path(ds.label_files[0]), (tif_values(ds.label_files[0]) % 200).astype(np.uint8))
    with pytest.raises(Exception, match=r"ADE_train_00000001\.tif: label pixels are uint8"):
        compute_stats(ds.label_files, 847, ignore_index=65535, workers=1, label_dtype=np.uint16)
