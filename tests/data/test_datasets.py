"""Datasets read back tiny fixture folders in each exact layout, with real JPEG/PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from rrseg.data import (
    ADE20KDataset,
    CityscapesDataset,
    COCOStuff164kDataset,
    DataError,
    FolderDataset,
    build_dataset,
    detect_layout,
    seg_collate,
)
from rrseg.data.ade20k import ADE20K_CLASSES, ADE20K_PALETTE
from rrseg.data.cityscapes import CITYSCAPES_CLASSES
from rrseg.data.coco_stuff import COCO_STUFF_CLASSES
from rrseg.errors import RRSegError

from .conftest import random_pair, save_image, save_label


def pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_ade20k_layout_reduce_zero_label(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    rng = np.random.default_rng(1)
    raws = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        for i in range(2):
            image, raw = random_pair(rng, 40, 56, [0, 1, 2, 75, 150])
            name = f"ADE_{folder[:5]}_{i:08d}"
            save_image(root / "images" / folder / f"{name}.jpg", image)
            save_label(root / "annotations" / folder / f"{name}.png", raw)
            raws[(split, i)] = raw
    # the parent folder works as root too, and the layout is recognised
    assert detect_layout(tmp_path) == ("ade20k", root)
    ds = build_dataset("ade20k", tmp_path, "val")
    assert isinstance(ds, ADE20KDataset) and len(ds) == 2
    assert ds.num_classes == 150 and ds.class_names == list(ADE20K_CLASSES) and ds.palette[0] == ADE20K_PALETTE[0]
    assert ds.ignore_index == 255 and ds.reduce_zero_label
    item = ds[1]
    raw = raws[("val", 1)]
    expected = raw.astype(np.int64) - 1
    expected[raw == 0] = 255
    assert isinstance(item["label"], tv_tensors.Mask) and item["label"].dtype == torch.int64
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    assert isinstance(item["image"], tv_tensors.Image) and item["image"].dtype == torch.uint8
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), pil_rgb(Path(item["meta"]["path"])))
    assert item["meta"]["ori_size"] == (40, 56)
    assert item["meta"]["label_path"].endswith("ADE_valid_00000001.png")
    assert ds.label_files == [str(root / "annotations/validation" / f"ADE_valid_{i:08d}.png") for i in range(2)]
    # the folder names work as split names as well
    assert len(ADE20KDataset(root, "training")) == 2


def test_coco_stuff_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for split in ("train2017", "val2017"):
        for i in (9, 25):
            image, label = random_pair(rng, 32, 40, [0, 90, 170, 255])
            save_image(tmp_path / "images" / split / f"{i:012d}.jpg", image)
            save_label(tmp_path / "annotations" / split / f"{i:012d}_labelTrainIds.png", label)
            # raw stuffthingmaps beside the converted files must not be taken for labels
            save_label(tmp_path / "annotations" / split / f"{i:012d}.png", label)
    assert detect_layout(tmp_path)[0] == "coco_stuff164k"
    ds = build_dataset("coco-stuff", tmp_path, "train")
    assert isinstance(ds, COCOStuff164kDataset) and len(ds) == 2 and ds.num_classes == 171
    assert ds.class_names == list(COCO_STUFF_CLASSES) and len(ds.palette) == 171
    item = ds[0]
    assert set(np.unique(item["label"].numpy())) <= {0, 90, 170, 255}
    assert all(p.endswith("_labelTrainIds.png") for p in ds.label_files)


def test_cityscapes_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for city in cities:
            stem = f"{city}_000000_000019"
            image, label = random_pair(rng, 32, 64, [0, 10, 18, 255])
            save_image(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            save_label(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", label)
            save_label(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label + 7)
    assert detect_layout(tmp_path)[0] == "cityscapes"
    ds = CityscapesDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.class_names == list(CITYSCAPES_CLASSES)
    assert [s.key for s in ds.samples] == ["aachen/aachen_000000_000019", "bochum/bochum_000000_000019"]
    item = ds[1]
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), pil_rgb(ds.samples[1].image))
    assert CityscapesDataset.available_splits(tmp_path) == ["train", "val"]


def test_folder_dataset_yaml_options(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root).mkdir()
    (root / "dataset.yaml").write_text(
        "classes: [sky, road, car]\npalette: [[0, 0, 255], [128, 64, 128], [255, 0, 0]]\n"
        "ignore_index: 255\nreduce_zero_label: true\nimage_suffix: .jpg\nlabel_suffix: _mask.png\n"
    )
    rng = np.random.default_rng(4)
    image, raw = random_pair(rng, 20, 30, [0, 1, 2, 3])
    save_image(root / "images" / "fold_a" / "sub" / "x1.jpg", image)
    save_label(root / "labels" / "fold_a" / "sub" / "x1_mask.png", raw)
    save_image(root / "images" / "fold_a" / "sub" / "x1.png", image)  # wrong suffix: not an image here
    ds = FolderDataset(root / "dataset.yaml", split="fold_a")
    assert len(ds) == 1 and ds.class_names == ["sky", "road", "car"] and ds.palette[1] == (128, 64, 128)
    assert ds.samples[0].key == "sub/x1"
    np.testing.assert_array_equal(ds[0]["label"].numpy(), np.where(raw == 0, 255, raw.astype(np.int64) - 1))
    assert FolderDataset.available_splits(root) == ["fold_a"]


def test_folder_dataset_collates_and_transforms(folder_dataset) -> None:
    from rrseg.data import train_transforms

    root = folder_dataset(n_train=4)
    ds = build_dataset("folder", root, "train", transforms=train_transforms(crop_size=(16, 16), scale=(32, 24)))
    batch = seg_collate([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 16, 16) and batch["label"].dtype == torch.int64
    assert [m["index"] for m in batch["meta"]] == [0, 1, 2, 3]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=seg_collate)
    assert next(iter(loader))["image"].shape == (2, 3, 16, 16)


def test_build_dataset_unknown_name(folder_dataset) -> None:
    with pytest.raises(RRSegError, match=r"unknown dataset 'pascal'.*ade20k"):
        build_dataset("pascal", folder_dataset(), "train")


# ---- the errors training meets --------------------------------------------------------------------------
def test_missing_label_is_named(folder_dataset) -> None:
    root = folder_dataset()
    (root / "labels/train/s1.png").unlink()
    with pytest.raises(DataError, match=r"s1\.png: no label found \(expected .*labels/train/s1\.png\)") as e:
        FolderDataset(root, "train")
    assert e.value.kind == "missing_label"


def test_missing_and_empty_split(folder_dataset) -> None:
    root = folder_dataset()
    with pytest.raises(DataError, match=r"images/test: image directory of split 'test' not found.*splits found: "
                                        r"train, val"):
        FolderDataset(root, "test")
    (root / "images" / "empty").mkdir()
    with pytest.raises(DataError, match="split 'empty' has no images") as e:
        FolderDataset(root, "empty")
    assert e.value.kind == "empty_split"


@pytest.mark.parametrize(
    ("damage", "kind", "pattern"),
    [
        ("truncate_image", "corrupt_image", r"s0\.png: unreadable or corrupt image"),
        ("garbage_image", "corrupt_image", r"s0\.png: unreadable or corrupt image"),
        ("rgb_label", "rgb_label", r"s0\.png: label is a RGB image; expected a single-channel index PNG"),
        ("size", "size_mismatch", r"s0\.png: label is 30x20 but its image .*s0\.png is 32x24"),
        ("range", "label_range", r"s0\.png: label values 4, 7 outside the class range 0\.\.3 \(ignore index 255\)"),
        ("corrupt_label", "corrupt_label", r"s0\.png: unreadable or corrupt label image"),
    ],
)
def test_bad_files_raise_clear_errors(folder_dataset, damage: str, kind: str, pattern: str) -> None:
    root = folder_dataset()
    img, lbl = root / "images/train/s0.png", root / "labels/train/s0.png"
    if damage == "truncate_image":
        img.write_bytes(img.read_bytes()[:200])
    elif damage == "garbage_image":
        img.write_bytes(b"not an image at all" * 10)
    elif damage == "rgb_label":
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(lbl)
    elif damage == "size":
        save_label(lbl, np.zeros((20, 30), np.uint8))
    elif damage == "range":
        arr = np.zeros((24, 32), np.uint8)
        arr[0, :3] = (4, 7, 255)
        save_label(lbl, arr)
    elif damage == "corrupt_label":
        lbl.write_bytes(lbl.read_bytes()[:60])
    ds = FolderDataset(root, "train")  # listing succeeds; the file is only read when the sample is
    with pytest.raises(DataError, match=pattern) as e:
        ds[0]
    assert e.value.kind == kind
    assert ds.check_sample(0).kind == kind and str(ds.check_sample(0)) == str(e.value)
    ds[1]  # the other samples still load


@pytest.mark.parametrize(
    ("yaml_text", "pattern"),
    [
        ("classes: []\n", "'classes' must be a non-empty list"),
        ("classes: [a, a]\n", "class name 'a' appears twice"),
        ("classes: [a, b]\npalette: [[1, 2, 3]]\n", "'palette' has 1 colours, 'classes' has 2 names"),
        ("classes: [a, b]\nignore_index: 1\n", "'ignore_index' 1 is also a class id"),
        ("classes: [a]\nreduce_zero_labels: true\n",
         r"unknown key 'reduce_zero_labels'; did you mean 'reduce_zero_label'\? \(valid here: classes, "),
        ("classes: [a\n", r"invalid YAML at line 2 \("),
        # read and checked as a config is (rrseg.schema): duplicate keys, types, ranges, plain data
        ("classes: [a, b]\nname: x\nclasses: [c]\n", r"dataset\.yaml: duplicate key 'classes' \(line 3\)$"),
        ("info:\n  made_by: me\n  made_by: you\n", r"dataset\.yaml: duplicate key 'made_by' \(line 3\)$"),
        ("- a\n", r"dataset\.yaml: a dataset description must be a mapping of keys, got list$"),
        ("name: !!python/object/apply:os.system [echo]\n", r"refused a YAML tag .*descriptions are plain data$"),
        ("classes: 0\n", "'classes' must be a non-empty list"),
        ("classes: {a: 1}\n", r"key 'classes': \{'a': 1\} is not a int or list of str or int$"),
        ("classes: [a, 1.5]\n", r"key 'classes': \['a', 1\.5\] is not a int or list of str or int$"),
        ("val_fraction: 1.5\n", r"dataset\.yaml: key 'val_fraction': 1\.5 is not in \(0, 1\)$"),
        ("ignore_index: -1\n", r"key 'ignore_index': -1 is not >= 0$"),
        ("split_seed: 1.5\n", r"key 'split_seed': expected int, got 1\.5$"),
        ("reduce_zero_label: 1\n", r"key 'reduce_zero_label': expected bool, got 1$"),
        ("classes: [a]\npalette: [[1, 2, 300]]\n", r"key 'palette\[0\]\[2\]': 300 is not in \[0, 255\]$"),
        ("classes: [a]\npalette: [[1, 2]]\n", r"'palette' must be a list of \[R, G, B\] triples"),
        ("labels_dir: ''\n", "'labels_dir' must not be empty"),
        ("info: [1]\n", r"key 'info': \[1\] is not a mapping or null$"),
    ],
)
def test_bad_dataset_yaml(tmp_path: Path, yaml_text: str, pattern: str) -> None:
    (tmp_path / "dataset.yaml").write_text(yaml_text)
    with pytest.raises(DataError, match=pattern) as e:
        FolderDataset(tmp_path, "train")
    assert e.value.kind == "config" and str(tmp_path / "dataset.yaml") in str(e.value)


def test_bad_dataset_options(tmp_path: Path) -> None:
    # options given in Python are checked as dataset.yaml is, and named as options
    (tmp_path / "dataset.yaml").write_text("classes: [a, b]\n")
    with pytest.raises(DataError, match=r"\(dataset options\): option 'val_fraction': 2\.0 is not in \(0, 1\)$") as e:
        FolderDataset(tmp_path, "train", val_fraction=2.0)
    assert e.value.kind == "config"
    with pytest.raises(DataError, match=r"unknown option 'lables_dir'; did you mean 'labels_dir'\?"):
        FolderDataset(tmp_path, "train", lables_dir="masks")
    with pytest.raises(DataError, match=r"unknown option 'info'"):  # dataset.yaml only
        FolderDataset(tmp_path, "train", info={})


def test_folder_without_yaml(tmp_path: Path) -> None:
    # a folder with neither dataset.yaml nor images/: both paths looked at, and the keys to set
    with pytest.raises(RRSegError, match=r"no dataset\.yaml and no images/ folder \(looked for .*/dataset\.yaml and "
                                         r".*/images\);.*options\.images_dir.*\.root"):
        FolderDataset(tmp_path)


def test_error_in_a_dataloader_worker_keeps_its_one_line_message(folder_dataset) -> None:
    root = folder_dataset(n_train=1)
    save_label(root / "labels/train/s0.png", np.full((24, 32), 9, np.uint8))
    loader = torch.utils.data.DataLoader(FolderDataset(root, "train"), num_workers=1)
    batches = iter(loader)
    try:
        with pytest.raises(DataError) as e:
            next(batches)
    finally:  # now: the error's traceback keeps the iterator alive, and its clean-up at exit waits 5 s
        batches._shutdown_workers()
    assert str(e.value) == f"{root}/labels/train/s0.png: label values 9 outside the class range 0..3 (ignore index 255)"
