"""The dataset registry: a dataset declared in one file outside the package, registered with the public decorator,
is built by name and alias, recognised on disk and checked like a built-in one; clashes are clear errors."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rrseg.data import (
    DATASETS,
    LayoutDataset,
    SegDataset,
    build_dataset,
    check_dataset,
    dataset_class,
    detect_layout,
    register_dataset,
    seg_collate,
    train_transforms,
)
from rrseg.data import registry as registry_mod
from rrseg.errors import RRSegError

from .conftest import random_pair, save_image, save_label

BUILTINS = ["ade20k", "ade20k_full", "coco_stuff164k", "cityscapes", "folder"]

TOY_MODULE = '''
from rrseg.data import LayoutDataset, register_dataset


@register_dataset("toy_shapes", aliases=("Toy-V1", "shapes"), detect=True)
class ToyShapesDataset(LayoutDataset):
    """photos/{fit,holdout}/**/NAME.png with masks/{fit,holdout}/**/NAME_mask.png; 0 = unlabelled."""

    SPLITS = {"train": "fit", "val": "holdout"}
    IMAGES_DIR = "photos"
    LABELS_DIR = "masks"
    IMAGE_SUFFIX = ".png"
    LABEL_SUFFIX = "_mask.png"
    CLASSES = ("sky", "sea", "boat")
    PALETTE = ((0, 0, 255), (0, 128, 255), (255, 0, 0))
    REDUCE_ZERO_LABEL = True
    LAYOUT = "toy photos/fit"
'''


@pytest.fixture
def clean_registry():
    """The registry as it was before the test (a test's registrations do not leak into the others)."""
    saved = (dict(registry_mod.DATASETS), dict(registry_mod._ALIASES), dict(registry_mod._DETECTORS))
    yield
    for live, old in zip((registry_mod.DATASETS, registry_mod._ALIASES, registry_mod._DETECTORS), saved):
        live.clear()
        live.update(old)


@pytest.fixture
def toy_module(tmp_path, monkeypatch, clean_registry):
    """The toy dataset's file, written to a folder outside the package and imported from there."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    name = "rrseg_test_toy_shapes"
    (folder / f"{name}.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def write_toy(root: Path, rng: np.random.Generator) -> dict[tuple[str, str], np.ndarray]:
    raws = {}
    for folder, keys in (("fit", ("b/two", "a/one", "c")), ("holdout", ("v",))):
        for key in keys:
            image, raw = random_pair(rng, 24, 32, [0, 1, 2, 3])
            save_image(root / "photos" / folder / f"{key}.png", image)
            save_label(root / "masks" / folder / f"{key}_mask.png", raw)
            raws[(folder, key)] = raw
    return raws


def test_a_dataset_registered_from_a_file_outside_the_package(toy_module, tmp_path):
    cls = toy_module.ToyShapesDataset
    assert cls.NAME == "toy_shapes" and DATASETS["toy_shapes"] is cls
    assert list(DATASETS) == [*BUILTINS, "toy_shapes"]  # the built-in ones first, as messages list them
    for name in ("toy_shapes", "TOY-SHAPES", "toy_v1", "Toy-V1", "shapes"):
        assert dataset_class(name) is cls
    root = tmp_path / "toy"
    raws = write_toy(root, np.random.default_rng(5))

    assert detect_layout(root) == ("toy_shapes", root)
    ds = build_dataset("Toy-V1", root, "train")
    assert isinstance(ds, cls) and ds.name == "toy_shapes" and ds.root == root and ds.split == "train"
    assert [s.key for s in ds.samples] == ["a/one", "b/two", "c"]  # sorted by relative path
    assert ds.class_names == ["sky", "sea", "boat"] and ds.palette[2] == (255, 0, 0)
    assert ds.ignore_index == 255 and ds.reduce_zero_label
    for i, sample in enumerate(ds.samples):
        raw = raws[("fit", sample.key)]
        expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)  # reduce_zero_label, written out
        np.testing.assert_array_equal(ds[i]["label"].numpy(), expected)
    assert len(build_dataset("toy_shapes", root, "holdout")) == 1  # a folder name as the split
    assert cls.available_splits(root) == ["train", "val"]

    transformed = build_dataset("toy_shapes", root, "train", transforms=train_transforms(crop_size=(16, 16),
                                                                                            scale=(32, 24)))
    batch = seg_collate([transformed[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 16, 16) and batch["label"].shape == (3, 16, 16)

    report = check_dataset(root, workers=1)
    assert report.ok and report.dataset == "toy_shapes" and [s.split for s in report.splits] == ["train", "val"]
    (root / "masks" / "fit" / "c_mask.png").unlink()
    with pytest.raises(RRSegError, match=r"photos/fit/c\.png: no label found \(expected .*masks/fit/c_mask\.png\)"):
        build_dataset("toy_shapes", root, "train")


def test_detection_order_with_a_registered_detector(toy_module, tmp_path):
    # a built-in layout is still recognised first, dataset.yaml before any detector, images/ after all of them
    both = tmp_path / "both"
    (both / "photos" / "fit").mkdir(parents=True)
    (both / "leftImg8bit").mkdir()
    assert detect_layout(both)[0] == "cityscapes"
    (both / "dataset.yaml").write_text("classes: [a]\n")
    assert detect_layout(both) == ("folder", both)
    plain = tmp_path / "plain"
    (plain / "photos").mkdir(parents=True)  # no split folder: not the toy layout
    (plain / "images").mkdir()
    assert detect_layout(plain) == ("folder", plain)
    (plain / "images").rmdir()
    with pytest.raises(RRSegError, match=r"not a known dataset layout \(.* or toy photos/fit\); pass --dataset"):
        detect_layout(plain)


def test_a_detector_function_and_its_priority(clean_registry, tmp_path):
    marked = tmp_path / "marked"
    (marked / "leftImg8bit").mkdir(parents=True)
    (marked / "MARKER").write_text("")

    @register_dataset("marked_low", detect=lambda p: p if (p / "MARKER").is_file() else None)
    class MarkedLow(LayoutDataset):
        CLASSES = ("a",)

    assert detect_layout(marked)[0] == "cityscapes"  # equal priority: the built-in one, listed first, wins

    @register_dataset("marked_high", detect=lambda p: p if (p / "MARKER").is_file() else None, priority=5)
    class MarkedHigh(LayoutDataset):
        CLASSES = ("a",)

    assert detect_layout(marked) == ("marked_high", marked)


@pytest.mark.parametrize(
    ("name", "aliases", "pattern"),
    [
        ("toy_shapes", (), r"name 'toy_shapes' of .*\.Other is already taken by dataset 'toy_shapes' "
                          r"\(rrseg_test_toy_shapes\.ToyShapesDataset\); choose another"),
        ("Toy-V1", (), r"name 'toy_v1' .* already taken by dataset 'toy_shapes'"),
        ("other", ("ade",), r"alias 'ade' of .*\.Other is already taken by dataset 'ade20k' "
                            r"\(rrseg\.data\.ade20k\.ADE20KDataset\)"),
        ("COCO-Stuff", (), r"name 'coco_stuff' .* already taken by dataset 'coco_stuff164k'"),
        ("folder", (), r"name 'folder' .* already taken by dataset 'folder'"),
        ("other", ("SHAPES",), r"alias 'shapes' .* already taken by dataset 'toy_shapes'"),
    ],
)
def test_a_taken_name_or_alias_is_an_error(toy_module, name, aliases, pattern):
    before = (list(DATASETS), dict(registry_mod._ALIASES))
    with pytest.raises(RRSegError, match=pattern):
        @register_dataset(name, aliases=aliases)
        class Other(LayoutDataset):
            CLASSES = ("x",)
    assert (list(DATASETS), dict(registry_mod._ALIASES)) == before  # nothing half-registered


@pytest.mark.parametrize(
    ("attrs", "options", "pattern"),
    [
        ({"CLASSES": ()}, {}, r"dataset 'bad' \(.*Bad\): CLASSES must be the class names"),
        ({"CLASSES": "abc"}, {}, r"CLASSES must be the class names"),
        ({"CLASSES": ("a", "b"), "PALETTE": ((1, 2, 3),)}, {}, r"PALETTE has 1 colours but CLASSES 2 names"),
        ({"CLASSES": ("a", "b"), "IGNORE_INDEX": 1}, {}, r"IGNORE_INDEX 1 is also a class id \(0\.\.1\)"),
        ({"CLASSES": ("a",), "SPLITS": {}}, {}, r"SPLITS must map split names to folder names"),
        ({"CLASSES": ("a",)}, {"detect": "yes"}, r"detect must be a function, True or None, got 'yes'"),
    ],
)
def test_a_bad_declaration_is_named(clean_registry, attrs, options, pattern):
    with pytest.raises(RRSegError, match=pattern):
        register_dataset("bad", **options)(type("Bad", (LayoutDataset,), attrs))
    assert "bad" not in DATASETS


def test_what_cannot_be_registered(clean_registry):
    with pytest.raises(RRSegError, match=r"register_dataset\('x'\): .* is not a subclass of rrseg.data.SegDataset"):
        register_dataset("x")(dict)
    with pytest.raises(RRSegError, match=r"register_dataset: a dataset needs a name"):
        register_dataset(" ")
    with pytest.raises(RRSegError, match=r"detect=True\): .*NoDetect has no detect\(folder\) method"):
        register_dataset("x", detect=True)(type("NoDetect", (SegDataset,), {}))
    assert "x" not in DATASETS


def test_the_order_of_the_registry_does_not_depend_on_what_was_imported_first():
    code = ("import rrseg.data.cityscapes, rrseg.data.ade20k_full\n"
            "from rrseg.data import DATASETS\n"
            "from rrseg.data.registry import detectors\n"
            "print(','.join(DATASETS)); print(','.join(name for name, _ in detectors()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [",".join(BUILTINS), "ade20k_full,ade20k,coco_stuff164k,cityscapes"]


def test_the_former_class_tables_are_the_datasets_own():
    from rrseg.data import ade20k, ade20k_full, base, cityscapes, classes, coco_stuff

    assert classes.ADE20K_CLASSES is ade20k.ADE20KDataset.CLASSES is ade20k.ADE20K_CLASSES
    assert classes.COCO_STUFF_PALETTE is coco_stuff.COCOStuff164kDataset.PALETTE
    assert classes.CITYSCAPES_CLASSES is cityscapes.CityscapesDataset.CLASSES
    assert classes.ade20k_full_classes() == ade20k_full.ADE20KFullDataset.CLASSES
    assert classes.default_palette is base.default_palette
    assert (len(ade20k.ADE20K_CLASSES), len(coco_stuff.COCO_STUFF_CLASSES), len(cityscapes.CITYSCAPES_CLASSES)) == \
        (150, 171, 19)


def test_the_example_in_the_docstring_registers(clean_registry):
    example = textwrap.dedent(register_dataset.__doc__.split("::\n", 1)[1].split("\n\n    Names", 1)[0])
    namespace: dict = {}
    exec(compile(example, "<register_dataset example>", "exec"), namespace)
    assert dataset_class("Toy-V1") is namespace["ToyDataset"] is DATASETS["toy"]
    assert namespace["ToyDataset"].CLASSES == ("background", "cat", "dog")
