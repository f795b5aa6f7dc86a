"""A generic dataset folder described by a small YAML file.

Layout::

    ROOT/dataset.yaml
    ROOT/images/<split>/**/NAME.jpg|png     (any split names, sub-folders allowed)
    ROOT/labels/<split>/**/NAME.png         (index PNG, matched to the image by relative path and stem)

``dataset.yaml``::

    name: my-dataset                 # optional
    classes: [road, building, sky]   # required: names in label-value order (or a count)
    palette: [[128, 64, 128], ...]   # optional, one RGB triple per class
    ignore_index: 255                # optional (default 255)
    reduce_zero_label: false         # optional: 0 = "other" -> ignore, 1..K -> 0..K-1
    image_suffix: .jpg               # optional (default: any of .jpg .jpeg .png .bmp .webp .tif .tiff)
    label_suffix: .png               # optional (default .png; e.g. _labelTrainIds.png)
    images_dir: images               # optional folder names
    labels_dir: labels
    info: {...}                      # optional, free-form (e.g. how the data was made)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rrseg.data.base import IMAGE_SUFFIXES, SegDataset, scan_pairs
from rrseg.data.errors import DataError

__all__ = ["FolderDataset", "FolderSpec", "load_folder_spec"]

SPEC_NAME = "dataset.yaml"
_KEYS = {
    "name", "classes", "palette", "ignore_index", "reduce_zero_label", "image_suffix", "label_suffix",
    "images_dir", "labels_dir", "info",
}


@dataclass(frozen=True)
class FolderSpec:
    """A parsed ``dataset.yaml``; ``root`` is the folder that holds it."""

    root: Path
    yaml_path: Path
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int = 255
    reduce_zero_label: bool = False
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    label_suffix: str = ".png"
    images_dir: str = "images"
    labels_dir: str = "labels"
    name: str = ""
    info: dict | None = None

    def splits(self) -> list[str]:
        """Split names: the sub-folders of ``images/``."""
        d = self.root / self.images_dir
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_byte(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255


def _bad(path: Path, msg: str) -> DataError:
    return DataError("config", f"{path}: {msg}")


def load_folder_spec(root_or_yaml: str | os.PathLike) -> FolderSpec:
    """Read and validate ``ROOT/dataset.yaml`` (or the YAML file given)."""
    p = Path(root_or_yaml)
    yaml_path = p / SPEC_NAME if p.is_dir() else p
    if not yaml_path.is_file():
        if p.is_dir():
            raise _bad(p, f"no {SPEC_NAME} here; a folder dataset needs one (class names, ignore index)")
        raise _bad(p, "dataset folder or YAML file not found")
    try:
        data = yaml.safe_load(yaml_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _bad(yaml_path, f"not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise _bad(yaml_path, "expected a mapping with at least 'classes'")
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise _bad(yaml_path, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    classes = data.get("classes")
    if isinstance(classes, int) and not isinstance(classes, bool) and classes > 0:
        names = tuple(f"class_{i}" for i in range(classes))
    elif isinstance(classes, list) and classes and all(isinstance(c, (str, int)) for c in classes):
        names = tuple(str(c) for c in classes)
    else:
        raise _bad(yaml_path, "'classes' must be a non-empty list of class names (or a class count)")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _bad(yaml_path, f"class name {dup!r} appears twice in 'classes'")
    palette = data.get("palette")
    if palette is not None:
        ok = isinstance(palette, list) and all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(_is_byte(v) for v in c) for c in palette
        )
        if not ok:
            raise _bad(yaml_path, "'palette' must be a list of [R, G, B] triples of integers 0..255")
        if len(palette) != len(names):
            raise _bad(yaml_path, f"'palette' has {len(palette)} colours, 'classes' has {len(names)} names")
        palette = tuple(tuple(int(v) for v in c) for c in palette)
    ignore_index = data.get("ignore_index", 255)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool) or ignore_index < 0:
        raise _bad(yaml_path, f"'ignore_index' must be a non-negative integer, got {ignore_index!r}")
    if 0 <= ignore_index < len(names):
        raise _bad(yaml_path, f"'ignore_index' {ignore_index} is also a class id (0..{len(names) - 1})")
    reduce_zero = data.get("reduce_zero_label", False)
    if not isinstance(reduce_zero, bool):
        raise _bad(yaml_path, f"'reduce_zero_label' must be true or false, got {reduce_zero!r}")
    strings = {}
    for key, default in (("image_suffix", None), ("label_suffix", ".png"), ("images_dir", "images"),
                         ("labels_dir", "labels"), ("name", "")):
        value = data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise _bad(yaml_path, f"{key!r} must be a string, got {value!r}")
        strings[key] = value
    for key in ("image_suffix", "label_suffix"):
        if strings[key] is not None and not strings[key]:
            raise _bad(yaml_path, f"{key!r} must not be empty")
    info = data.get("info")
    if info is not None and not isinstance(info, dict):
        raise _bad(yaml_path, "'info' must be a mapping")
    return FolderSpec(
        root=yaml_path.parent,
        yaml_path=yaml_path,
        class_names=names,
        palette=palette,
        ignore_index=ignore_index,
        reduce_zero_label=reduce_zero,
        image_suffixes=(strings["image_suffix"],) if strings["image_suffix"] else IMAGE_SUFFIXES,
        label_suffix=strings["label_suffix"],
        images_dir=strings["images_dir"],
        labels_dir=strings["labels_dir"],
        name=strings["name"] or yaml_path.parent.name,
        info=info,
    )


class FolderDataset(SegDataset):
    """A dataset in the generic folder layout (see the module docstring); ``split`` is any sub-folder name."""

    def __init__(
        self,
        root_or_yaml: str | os.PathLike,
        split: str = "train",
        transforms: Callable[..., Any] | None = None,
        strict: bool = True,
    ) -> None:
        self.spec = spec = load_folder_spec(root_or_yaml)
        self.scan = scan_pairs(
            spec.root / spec.images_dir / split,
            spec.root / spec.labels_dir / split,
            spec.image_suffixes,
            spec.label_suffix,
            split,
        )
        if strict:
            if self.scan.problems and self.scan.problems[0].kind == "missing_dir":
                found = ", ".join(spec.splits()) or "none"
                raise DataError("missing_dir", f"{self.scan.problems[0]} (splits found: {found})")
            self.scan.raise_first()
        super().__init__(
            self.scan.samples,
            spec.class_names,
            spec.palette,
            ignore_index=spec.ignore_index,
            reduce_zero_label=spec.reduce_zero_label,
            transforms=transforms,
            root=spec.root,
            split=split,
            name=spec.name,
        )

    @staticmethod
    def available_splits(root_or_yaml: str | os.PathLike) -> list[str]:
        return load_folder_spec(root_or_yaml).splits()
