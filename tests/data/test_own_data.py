"""One's own data in the folder layouts, with real JPEG/PNG files on disk: images/ + masks/ (or labels/,
annotations/) with or without split folders, split list files, the automatic split, dataset.yaml optional,
and messages that name the paths looked at and the key that changes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrseg.data import DataError, build_dataset, check_dataset, detect_layout
from rrseg.data import folder as folder_mod
from rrseg.data.folder import FolderDataset, inspect_folder, split_keys
from rrseg.errors import RRSegError

from .conftest import random_pair, save_image, save_label

H, W = 24, 32


def write_own(root: Path, names: list[str], label_dir: str | None = "masks", split: str = "",
              values: tuple[int, ...] = (0, 1, 2, 255), image_suffix: str = ".jpg", seed: int = 0) -> None:
    """``images/[split/]NAME.jpg`` and ``<label_dir>/[split/]NAME.png`` for each name (labels with ``values``;
    each label holds the largest value at least once)."""
    rng = np.random.default_rng(seed)
    for name in names:
        image, label = random_pair(rng, H, W, list(values))
        label[0, 0] = max(v for v in values if v != 255)
        save_image(root / "images" / split / f"{name}{image_suffix}", image)
        if label_dir is not None:
            save_label(root / label_dir / split / f"{name}.png", label)


def keys(ds) -> list[str]:
    return [s.key for s in ds.samples]


# ---------------------------------------------------------------------------------------- the split rule


def test_split_keys_is_deterministic_disjoint_covering_and_stable_when_files_are_added() -> None:
    names = [f"img_{i:04d}" for i in range(100)]
    parts = split_keys(names, 0.1, seed=0)
    assert len(parts["val"]) == 10 and len(parts["train"]) == 90
    assert not set(parts["train"]) & set(parts["val"]) and set(parts["train"]) | set(parts["val"]) == set(names)
    assert split_keys(reversed(names), 0.1, seed=0) == parts  # no dependence on file order
    assert split_keys(names, 0.1, seed=1)["val"] != parts["val"]  # the seed picks another split
    grown = split_keys([*names, "img_new"], 0.1, seed=0)
    assert len(set(parts["val"]) - set(grown["val"])) <= 1  # an added file moves at most one other file
    assert set(grown["val"]) <= set(parts["val"]) | {"img_new"}
    # small sets: val and train get at least one each; one image cannot be split
    assert [len(split_keys(names[:n], 0.1)["val"]) for n in (1, 2, 3, 10, 14, 15)] == [0, 1, 1, 1, 1, 2]
    assert len(split_keys(names[:4], 0.9)["train"]) == 1


# ------------------------------------------------------------------------------------------------ layouts


def test_masks_without_splits_and_without_yaml_split_automatically(tmp_path: Path) -> None:
    root = tmp_path / "own"
    names = [f"photo_{i:02d}" for i in range(20)]
    write_own(root, names, "masks", values=(0, 1, 2, 5, 255))
    assert not (root / "dataset.yaml").exists()
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert len(val) == 2 and len(train) == 18  # val_fraction 0.1 by default
    assert not set(keys(train)) & set(keys(val)) and sorted(keys(train) + keys(val)) == names
    assert keys(val) == split_keys(names)["val"]
    # classes: largest label value + 1, 255 (the default ignore index) left out, named by id
    assert train.num_classes == val.num_classes == 6 and train.class_names == ["0", "1", "2", "3", "4", "5"]
    assert train.ignore_index == 255 and train.root == root
    assert train.samples[0].label.parent == root / "masks"
    item = train[0]
    assert item["image"].shape == (3, H, W) and set(np.unique(item["label"].numpy())) <= {0, 1, 2, 5, 255}
    # the same split every time; options change the fraction and the seed
    assert keys(FolderDataset(root, "val")) == keys(val)
    assert len(FolderDataset(root, "val", val_fraction=0.25)) == 5
    assert keys(FolderDataset(root, "val", split_seed=3)) == split_keys(names, 0.1, 3)["val"]
    assert FolderDataset.available_splits(root) == ["train", "val"]


def test_labels_with_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "own"
    write_own(root, ["a", "b", "c"], "labels", split="train", values=(0, 1, 2, 255))
    write_own(root, ["d", "e"], "labels", split="val", values=(0, 3, 255), seed=1)
    assert FolderDataset.available_splits(root) == ["train", "val"]
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert keys(train) == ["a", "b", "c"] and keys(val) == ["d", "e"]
    # the classes are counted over every split: value 3 is only in val, both have 4 classes
    assert train.num_classes == val.num_classes == 4
    with pytest.raises(DataError, match="image directory of split 'test' not found") as e:
        FolderDataset(root, "test", config_key="data.val")
    msg = str(e.value)
    assert "\n" not in msg and e.value.kind == "missing_dir"
    assert str(root / "images" / "test") in msg and "splits found: train, val" in msg
    assert str(root / "images") in msg and "data.val.split" in msg


def test_split_list_files(tmp_path: Path) -> None:
    root = tmp_path / "lists"
    names = [f"s{i}" for i in range(6)]
    write_own(root, names[:4], "masks")
    write_own(root, names[4:], "masks", image_suffix=".png", seed=2)
    (root / "splits").mkdir()
    # mmseg's ann_file: one name a line, no suffix; comments, blank lines and a suffix are forgiven
    (root / "splits" / "train.txt").write_text("# training images\ns3\ns0\n\ns1.jpg\ns0\n")
    (root / "splits" / "val.txt").write_text("s4\ns5\n")
    assert FolderDataset.available_splits(root) == ["train", "val"]
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert keys(train) == ["s3", "s0", "s1"] and keys(val) == ["s4", "s5"]  # list order, once each
    assert train.samples[2].image == root / "images" / "s1.jpg" and val.samples[0].image.suffix == ".png"
    # an explicit list (option split_file, relative to the root) wins
    (root / "mine.txt").write_text("s2\n")
    assert keys(FolderDataset(root, "train", split_file="mine.txt")) == ["s2"]
    # a split without a list: the paths looked at and the keys
    with pytest.raises(DataError, match="no split list or folder for split 'test'") as e:
        FolderDataset(root, "test", config_key="data.val")
    msg = str(e.value)
    for part in (str(root / "splits" / "test.txt"), str(root / "test.txt"), "lists found: train, val",
                 "data.val.split", "data.val.options.split_file"):
        assert part in msg
    # a name without an image: the list file and line, the path looked for
    (root / "splits" / "val.txt").write_text("s4\nmissing_one\n")
    with pytest.raises(DataError, match=r"val\.txt:2: 'missing_one' names no image") as e:
        build_dataset("folder", root, "val", config_key="data.val")
    assert e.value.kind == "missing_image" and str(root / "images" / "missing_one") in str(e.value)
    assert "data.val.options.images_dir" in str(e.value)


def test_split_lists_next_to_images(tmp_path: Path) -> None:
    root = tmp_path / "lists"
    write_own(root, ["x", "y", "z"], "masks")
    (root / "train.txt").write_text("x\ny\n")
    (root / "val.txt").write_text("images/z\n")  # a path from the root works too
    assert FolderDataset.available_splits(root) == ["train", "val"]
    assert keys(FolderDataset(root, "train")) == ["x", "y"] and keys(FolderDataset(root, "val")) == ["z"]
    # a name with a space; a line pairing the image with its label (the first word is the image)
    write_own(root, ["my photo"], "masks")
    (root / "train.txt").write_text("my photo\n./x.jpg masks/x.png\n")
    assert keys(FolderDataset(root, "train")) == ["my photo", "x"]
    assert inspect_folder(root).list_files == {"train": root / "train.txt", "val": root / "val.txt"}


def test_annotations_with_dataset_yaml(tmp_path: Path) -> None:
    root = tmp_path / "ann"
    names = [f"n{i}" for i in range(8)]
    write_own(root, names, "annotations", values=(0, 1, 2, 255))
    (root / "dataset.yaml").write_text("classes: [background, road, car, sky]\nval_fraction: 0.5\nsplit_seed: 7\n")
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert train.class_names == ["background", "road", "car", "sky"]  # the YAML's, not counted (3 in the labels)
    assert keys(val) == split_keys(names, 0.5, 7)["val"] and len(val) == 4
    assert train.samples[0].label.parent == root / "annotations"
    # the YAML path itself works as the root, as before
    assert keys(FolderDataset(root / "dataset.yaml", "val")) == keys(val)
    # an option wins over the YAML
    assert len(FolderDataset(root, "val", val_fraction=0.25)) == 2


def test_ambiguous_label_folders(tmp_path: Path) -> None:
    root = tmp_path / "amb"
    write_own(root, ["a", "b"], "masks")
    write_own(root, ["a", "b"], "labels")
    with pytest.raises(DataError, match="ambiguous label folders: masks/ and labels/") as e:
        build_dataset("folder", root, "train", config_key="data.train")
    msg = str(e.value)
    assert str(root / "masks") in msg and str(root / "labels") in msg and "data.train.options.labels_dir" in msg
    assert "\n" not in msg and e.value.kind == "config"
    # labels_dir settles it; check-data reports the ambiguity instead of raising
    assert FolderDataset(root, "train", labels_dir="labels").samples[0].label.parent == root / "labels"
    report = check_dataset(root)
    assert not report.ok and report.counts() == {"config": 1}
    assert check_dataset(root, options={"labels_dir": "labels"}).ok
    # an empty candidate is no rival: the one holding labels is taken, whatever the order of preference
    for p in (root / "masks").iterdir():
        p.unlink()
    assert FolderDataset(root, "train").samples[0].label.parent == root / "labels"


def test_missing_label_names_the_resolved_paths_and_the_key(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    names = [f"m{i}" for i in range(10)]
    write_own(root, names, "masks")
    victim = split_keys(names)["train"][0]
    (root / "masks" / f"{victim}.png").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        build_dataset("folder", "data", "train", config_key="data.train")  # a relative root
    msg = str(e.value)
    assert e.value.kind == "missing_label" and "\n" not in msg
    assert msg.startswith(f"{root / 'images' / victim}.jpg: no label found (expected {root / 'masks' / victim}.png)")
    assert f"labels are looked for in {root / 'masks'}" in msg and "masks/, labels/, annotations/" in msg
    assert "data.train.options.labels_dir" in msg and "labels_dir in dataset.yaml" in msg
    # the root not found: its absolute path, the key, and the directory a relative root was taken from
    with pytest.raises(DataError) as e:
        build_dataset("folder", "nowhere", "train", config_key="data.train")
    assert str(e.value) == (f"{tmp_path / 'nowhere'}: dataset folder or YAML file not found (data.train.root "
                            f"'nowhere' is taken from the current directory {tmp_path})")
    # no label folder at all: the three folders looked for
    save_label(root / "masks" / f"{victim}.png", np.zeros((H, W), np.uint8))
    (root / "masks").rename(root / "segmentation")
    with pytest.raises(DataError, match="no label folder") as e:
        build_dataset("folder", "data", "train", config_key="data.train")
    for d in ("masks", "labels", "annotations"):
        assert str(root / d) in str(e.value)
    assert "data.train.options.labels_dir" in str(e.value)
    assert len(FolderDataset(root, "train", labels_dir="segmentation")) == 9
    # no images/ folder (a dataset.yaml present): the path looked at and the key
    (root / "dataset.yaml").write_text("labels_dir: segmentation\n")
    (root / "images").rename(root / "photos")
    with pytest.raises(DataError, match="image folder not found") as e:
        build_dataset("folder", root, "train", config_key="data.val")
    assert str(root / "images") in str(e.value) and "data.val.options.images_dir" in str(e.value)
    assert len(FolderDataset(root, "train", images_dir="photos")) == 9


def test_class_count_rules(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_own(root, ["a", "b", "c"], "masks", values=(0, 1, 4, 255))
    assert FolderDataset(root, "train").num_classes == 5
    # reduce_zero_label: 0 is ignored, 1..4 become 0..3
    assert FolderDataset(root, "train", reduce_zero_label=True).num_classes == 4
    # another ignore index: 255 becomes a class value, 4 is left out
    with pytest.raises(DataError, match="past the ignore index 4") as e:
        FolderDataset(root, "train", ignore_index=4, config_key="data.train")
    assert "data.train.options.classes" in str(e.value)
    # classes given as an option: no counting, and the labels are checked against them at load
    ds = FolderDataset(root, "train", classes=["a", "b", "c", "d", "e", "f"])
    assert ds.class_names == ["a", "b", "c", "d", "e", "f"]


def test_labels_are_read_once_for_train_val_and_inspection(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "once"
    write_own(root, [f"r{i}" for i in range(12)], "masks")
    reads: list[str] = []
    real = folder_mod._label_values

    def counting(path: str):
        reads.append(path)
        return real(path)

    monkeypatch.setattr(folder_mod, "_label_values", counting)
    monkeypatch.setattr(folder_mod, "_VALUES_CACHE", {})
    FolderDataset(root, "train"), FolderDataset(root, "val")
    inspect_folder(root)
    assert sorted(reads) == sorted(str(p) for p in (root / "masks").iterdir())
    # a changed label file is read again
    save_label(root / "masks" / "r0.png", np.full((H, W), 7, np.uint8))
    assert FolderDataset(root, "train").num_classes == 8 and len(reads) == 13


def test_inspect_folder(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write_own(flat, [f"f{i}" for i in range(10)], "masks", values=(0, 1, 2, 255))
    s = inspect_folder(flat)
    assert s.mode == "auto" and not s.has_split and s.splits == {"train": 9, "val": 1} and s.num_samples == 10
    assert s.num_classes == 3 and s.class_names == ("0", "1", "2") and s.classes_from == "labels"
    assert s.ignore_index == 255 and not s.reduce_zero_label and s.val_fraction == 0.1 and s.split_seed == 0
    assert s.images_dir == flat / "images" and s.labels_dir == flat / "masks" and s.labels_detected
    assert s.image_sizes and set(s.image_sizes) == {(H, W)} and len(inspect_folder(flat, sample=3).image_sizes) == 3
    assert s.layout.startswith("images/ + masks/ (detected), no split") and s.num_problems == 0
    split = tmp_path / "split"
    write_own(split, ["a", "b"], "labels", split="train")
    write_own(split, ["c"], "labels", split="val")
    (split / "labels" / "val" / "c.png").unlink()
    s = inspect_folder(split)
    assert s.mode == "folders" and s.has_split and s.splits == {"train": 2, "val": 0}
    assert s.num_problems == 1 and "no label found" in s.problems[0]
    (split / "dataset.yaml").write_text("classes: [x, y, z]\n")
    assert inspect_folder(split).classes_from == "dataset.yaml"
    assert inspect_folder(split, classes=["p", "q", "r", "s"]).classes_from == "options"


# ------------------------------------------------------------------- the commands and the training config


def test_detect_layout_check_data_and_stats(tmp_path: Path, capsys) -> None:
    from rrseg.cli.main import main

    root = tmp_path / "own"
    names = [f"p{i}" for i in range(10)]
    write_own(root, names, "masks", values=(0, 1, 2, 255))
    assert detect_layout(root) == ("folder", root)
    report = check_dataset(root)
    assert report.ok and [(s.split, s.images) for s in report.splits] == [("train", 9), ("val", 1)]
    assert report.num_classes == 3
    capsys.readouterr()
    assert main(["check-data", str(root)]) == 0
    assert "split 'train': 9 images" in capsys.readouterr().out
    out = tmp_path / "counts.json"
    assert main(["stats", str(root), "-o", str(out), "--workers", "1"]) == 0
    counts = json.loads(out.read_text())
    assert counts["num_images"] == 9 and counts["class_names"] == ["0", "1", "2"] and counts["split"] == "train"
    # a folder that holds only label files is still a folder of labels, not a dataset
    with pytest.raises(RRSegError, match="not a known dataset layout"):
        detect_layout(root / "masks")


def test_training_config_with_type_folder_builds_own_data(tmp_path: Path) -> None:
    from rrseg.engine.components import build_datasets
    from rrseg.engine.config import parse_config

    root = tmp_path / "own"
    names = [f"t{i:02d}" for i in range(12)]
    write_own(root, names, "masks", values=(0, 1, 2, 3, 255))

    def config(**options) -> object:
        return parse_config({"data": {
            "train": {"type": "folder", "root": str(root), "split": "train", "options": dict(options)},
            "val": {"type": "folder", "root": str(root), "split": "val", "options": dict(options)},
            "crop_size": [16, 16], "scale": [32, 24]}})

    train, val, train_tf, _ = build_datasets(config())
    assert isinstance(train, FolderDataset) and len(train) == 11 and len(val) == 1
    assert train.num_classes == val.num_classes == 4 and not set(keys(train)) & set(keys(val))
    assert val[0]["image"].dtype.is_floating_point  # the test transforms are on
    image, label = train_tf(*train.load(0)[:2])
    assert tuple(image.shape[-2:]) == (16, 16) and tuple(label.shape[-2:]) == (16, 16)
    train, val, _, _ = build_datasets(config(val_fraction=0.25))
    assert (len(train), len(val)) == (9, 3)
    # a message from the val dataset names the val section's key
    (root / "masks" / f"{keys(val)[0]}.png").unlink()
    with pytest.raises(DataError, match="no label found") as e:
        build_datasets(config(val_fraction=0.25))
    assert "data.val.options.labels_dir" in str(e.value)
    with pytest.raises(DataError, match=r"unknown config key 'data\.train\.options\.lables_dir'; did you mean "
                                        r"'data\.train\.options\.labels_dir'\?"):
        build_datasets(config(lables_dir="masks"))
