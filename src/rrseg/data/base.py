"""The dataset base class: (image, label) file pairs, checked loading, class names and palette.

Every problem with a file raises :class:`~rrseg.data.errors.DataError` (an ``RRSegError``) whose ``kind``
names the problem and whose one-line message names the file, so that training and ``rrseg check-data`` report
the same thing in the same words.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from rrseg.data.errors import PROBLEM_KINDS, WARNING_KINDS, DataError
from rrseg.data.labels import check_label_dtype, read_label, reduce_zero_label
from rrseg.errors import RRSegError

__all__ = [
    "IMAGE_SUFFIXES",
    "PROBLEM_KINDS",
    "DataError",
    "LayoutDataset",
    "Sample",
    "ScanResult",
    "SegDataset",
    "default_palette",
    "image_sizes",
    "read_image",
    "scan_pairs",
    "seg_collate",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One (image, label) pair; ``key`` is the shared relative path without suffixes."""

    key: str
    image: Path
    label: Path | None


@dataclass
class ScanResult:
    """The pairs found in one split, plus what did not pair up."""

    image_dir: Path
    label_dir: Path
    samples: list[Sample] = field(default_factory=list)
    problems: list[DataError] = field(default_factory=list)  # missing dir, empty split, missing labels, ...

    def raise_first(self) -> None:
        """Raise the first error (not warning), mentioning how many more there are."""
        errors = [p for p in self.problems if p.kind not in WARNING_KINDS]
        if errors:
            first = errors[0]
            more = ""
            if len(errors) > 1:
                more = f" (and {len(errors) - 1} more problems; `rrseg check-data` lists them all)"
            raise DataError(first.kind, f"{first}{more}")


def _strip_suffix(name: str, suffixes: Sequence[str]) -> str | None:
    low = name.lower()
    for s in suffixes:
        if low.endswith(s.lower()):
            return name[: len(name) - len(s)]
    return None


def _walk(root: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Files under ``root`` ending with one of ``suffixes``, keyed by relative path without the suffix."""
    found: dict[str, Path] = {}
    dups: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            stem = _strip_suffix(name, suffixes)
            if stem is None:
                continue
            key = stem if rel == "." else f"{rel}/{stem}".replace(os.sep, "/")
            path = Path(dirpath) / name
            if key in found:
                dups.append((found[key], path))
            else:
                found[key] = path
    if dups:
        a, b = dups[0]
        raise DataError("duplicate", f"{b}: same sample name as {a}; keep one of them")
    return found


def scan_pairs(
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
    label_suffix: str = ".png",
    split: str = "",
) -> ScanResult:
    """Pair images and labels by relative path and stem (recursively), collecting every problem found."""
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    result = ScanResult(image_dir, label_dir)
    what = f"split {split!r}" if split else "split"
    if not image_dir.is_dir():
        result.problems.append(DataError("missing_dir", f"{image_dir}: image directory of {what} not found"))
        return result
    try:
        images = _walk(image_dir, image_suffixes)
    except DataError as e:
        result.problems.append(e)
        return result
    if not images:
        pattern = ", ".join(f"*{s}" for s in image_suffixes)
        result.problems.append(DataError("empty_split", f"{image_dir}: {what} has no images ({pattern})"))
        return result
    labels: dict[str, Path] = {}
    if label_dir.is_dir():
        try:
            labels = _walk(label_dir, [label_suffix])
        except DataError as e:
            result.problems.append(e)
    for key in sorted(images):
        label = labels.get(key)
        if label is None:
            expected = label_dir / f"{key}{label_suffix}"
            result.problems.append(
                DataError("missing_label", f"{images[key]}: no label found (expected {expected})")
            )
            continue
        result.samples.append(Sample(key, images[key], label))
    for key in sorted(set(labels) - set(images)):
        result.problems.append(DataError("orphan_label", f"{labels[key]}: label without a matching image"))
    return result


def _image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return int(h), int(w)


def image_sizes(paths: Sequence[str | os.PathLike], limit: int = 32) -> tuple[tuple[int, int], ...]:
    """(height, width) of up to ``limit`` of ``paths``, spread evenly over them, read from the file headers only;
    unreadable files are left out."""
    step = max(1, len(paths) / max(1, limit))
    picked = [paths[int(i * step)] for i in range(min(limit, len(paths)))]
    return tuple(size for size in map(_image_size, picked) if size is not None)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A deterministic palette of distinct colours for ``num_classes`` classes (PASCAL VOC bit scheme)."""
    palette = []
    for c in range(num_classes):
        r = g = b = 0
        cid = c + 1  # skip black, which renders like the ignore colour
        for shift in range(8):
            r |= ((cid >> 0) & 1) << (7 - shift)
            g |= ((cid >> 1) & 1) << (7 - shift)
            b |= ((cid >> 2) & 1) << (7 - shift)
            cid >>= 3
        palette.append((r, g, b))
    return palette


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an RGB uint8 array [H, W, 3] (grey, palette and CMYK images are converted)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            rgb = np.array(im.convert("RGB"))  # forces the full decode, so a truncated file fails here
    except FileNotFoundError:
        raise DataError("corrupt_image", f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            "corrupt_image", f"{path}: unreadable or corrupt image ({e.__class__.__name__}: {e})"
        ) from None
    return rgb


class SegDataset(Dataset):
    """Image/label pairs with class names and a palette; items are ``{"image", "label", "meta"}`` dicts.

    Without transforms ``image`` is a ``tv_tensors.Image`` (uint8, [3, H, W]) and ``label`` a
    ``tv_tensors.Mask`` (int64, [H, W], ``ignore_index`` where unlabelled). ``transforms`` is called as
    ``transforms(image, mask)`` and must return the pair (see :mod:`rrseg.data.transforms`); the label comes
    back as int64 either way. ``ignore_index`` may be any value outside ``0..num_classes-1``, also one above
    255 (ADE20K-Full: 65535); the transforms, losses, RR and metrics take it from the dataset.

    A subclass whose label files have one pixel type sets ``LABEL_DTYPE`` (and ``LABEL_DTYPE_HINT``, the end
    of the message): a label of another type is a ``label_dtype`` problem. ``NAME`` is the name the class is
    registered under (:func:`rrseg.data.register_dataset` sets it).
    """

    NAME: ClassVar[str] = ""
    LABEL_DTYPE: ClassVar[np.dtype | None] = None
    LABEL_DTYPE_HINT: ClassVar[str] = ""

    def __init__(
        self,
        samples: Sequence[Sample],
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        reduce_zero_label: bool = False,
        transforms: Callable[..., Any] | None = None,
        root: str | os.PathLike | None = None,
        split: str = "",
        name: str = "",
    ) -> None:
        self.samples = list(samples)
        self.class_names = [str(c) for c in class_names]
        if palette is None:
            palette = default_palette(len(self.class_names))
        self.palette = [tuple(int(v) for v in rgb) for rgb in palette]
        if len(self.palette) != len(self.class_names):
            raise RRSegError(
                f"palette has {len(self.palette)} colours but there are {len(self.class_names)} classes"
            )
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        self.transforms = transforms
        self.root = Path(root) if root is not None else None
        self.split = split
        self.name = name or type(self).__name__

    # ---- what other parts read -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_files(self) -> list[str]:
        return [str(s.label) for s in self.samples]

    @property
    def image_files(self) -> list[str]:
        return [str(s.image) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}, "
            f"classes={self.num_classes})"
        )

    # ---- loading -----------------------------------------------------------------------------------------
    def convert_label(self, raw: np.ndarray) -> np.ndarray:
        """Raw label values -> train ids (reduce_zero_label); subclasses may add their own id mapping."""
        return reduce_zero_label(raw, self.ignore_index) if self.reduce_zero_label else raw

    def load_label(self, index: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The checked label map of sample ``index`` in train ids (uint8 when it fits, else int64)."""
        sample = self.samples[index]
        if sample.label is None:
            raise DataError("missing_label", f"{sample.image}: no label file")
        raw = read_label(sample.label)
        if self.LABEL_DTYPE is not None:
            check_label_dtype(raw, sample.label, self.LABEL_DTYPE, self.LABEL_DTYPE_HINT)
        if image_size is not None and raw.shape != tuple(image_size):
            (h, w), (ih, iw) = raw.shape, image_size
            raise DataError(
                "size_mismatch", f"{sample.label}: label is {w}x{h} but its image {sample.image} is {iw}x{ih}"
            )
        label = self.convert_label(raw)
        num = self.num_classes
        if label.size and (int(label.max()) >= num or int(label.min()) < 0):
            values = np.unique(label[(label >= num) | (label < 0)])
            bad = values[values != self.ignore_index]
            if bad.size:
                shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
                zero = " after reduce_zero_label" if self.reduce_zero_label else ""
                raise DataError(
                    "label_range",
                    f"{sample.label}: label values {shown}{zero} outside the class range 0..{num - 1} "
                    f"(ignore index {self.ignore_index})",
                )
        if label.dtype != np.uint8 and 0 <= self.ignore_index <= 255 and num <= 255:
            label = label.astype(np.uint8)
        elif label.dtype not in (np.uint8, np.int64):  # uint16 (ADE20K-Full), int32: torch masks are int64
            label = label.astype(np.int64)
        return label

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.samples[index].image)

    def load(self, index: int) -> tuple[Any, Any, dict[str, Any]]:
        """The untransformed (tv_tensors.Image, tv_tensors.Mask, meta) of sample ``index``, checked."""
        from torchvision import tv_tensors  # here: torchvision takes seconds to import, check-data needs none

        sample = self.samples[index]
        image = self.load_image(index)
        label = self.load_label(index, image.shape[:2])
        img_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask_t = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label)))
        meta = {
            "path": str(sample.image),
            "label_path": str(sample.label),
            "ori_size": (int(image.shape[0]), int(image.shape[1])),
            "key": sample.key,
            "index": int(index),
        }
        return img_t, mask_t, meta

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask, meta = self.load(index)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        if mask.dtype != torch.int64:
            mask = mask.to(torch.int64)
        return {"image": image, "label": mask, "meta": meta}

    def check_sample(self, index: int) -> DataError | None:
        """The problem with sample ``index`` (the error training would raise), or None."""
        try:
            image = self.load_image(index)
            self.load_label(index, image.shape[:2])
        except DataError as e:
            return e
        return None


class LayoutDataset(SegDataset):
    """A dataset in a fixed folder layout, declared by class attributes (register it with
    :func:`rrseg.data.register_dataset`; one file per dataset)::

        ROOT[/ROOT_NAME]/IMAGES_DIR/<split folder>/**/NAME<IMAGE_SUFFIX>
        ROOT[/ROOT_NAME]/LABELS_DIR/<split folder>/**/NAME<LABEL_SUFFIX>

    An image and a label pair up by their path below the split folder and their name without the suffix.
    ``root`` may be the folder ``ROOT_NAME`` itself or the one holding it (``ROOT_NAME`` "": ROOT as given).
    ``split`` is a key of ``SPLITS`` (split name -> folder name) or a folder name. Labels hold class ids
    ``0..len(CLASSES)-1`` and ``IGNORE_INDEX``; ``REDUCE_ZERO_LABEL``: 0 ("other") becomes the ignore index and
    1..K become 0..K-1. ``PALETTE`` None: :func:`default_palette`. ``LAYOUT`` names the layout in messages.
    ``strict=False`` collects the problems in ``self.scan`` instead of raising the first (``rrseg check-data``).
    """

    SPLITS: ClassVar[Mapping[str, str]] = {"train": "train", "val": "val"}
    ROOT_NAME: ClassVar[str] = ""
    IMAGES_DIR: ClassVar[str] = "images"
    LABELS_DIR: ClassVar[str] = "annotations"
    IMAGE_SUFFIX: ClassVar[str] = ".jpg"
    LABEL_SUFFIX: ClassVar[str] = ".png"
    CLASSES: ClassVar[Sequence[str]] = ()
    PALETTE: ClassVar[Sequence[Sequence[int]] | None] = None
    IGNORE_INDEX: ClassVar[int] = 255
    REDUCE_ZERO_LABEL: ClassVar[bool] = False
    LAYOUT: ClassVar[str] = ""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transforms: Callable[..., Any] | None = None,
        strict: bool = True,
    ) -> None:
        root = self.resolve_root(root)
        folder = self.SPLITS.get(split, split)
        self.scan = scan_pairs(
            root / self.IMAGES_DIR / folder, root / self.LABELS_DIR / folder, (self.IMAGE_SUFFIX,),
            self.LABEL_SUFFIX, split,
        )
        if strict:
            self.scan.raise_first()
        super().__init__(
            self.scan.samples, self.CLASSES, self.PALETTE, ignore_index=self.IGNORE_INDEX,
            reduce_zero_label=self.REDUCE_ZERO_LABEL, transforms=transforms, root=root, split=split,
            name=self.NAME,
        )

    @classmethod
    def resolve_root(cls, root: str | os.PathLike) -> Path:
        """``root/ROOT_NAME`` when that folder exists, else ``root``."""
        root = Path(root)
        return root / cls.ROOT_NAME if cls.ROOT_NAME and (root / cls.ROOT_NAME).is_dir() else root

    @classmethod
    def available_splits(cls, root: str | os.PathLike) -> list[str]:
        """The names of the splits whose image folder exists."""
        root = cls.resolve_root(root)
        return [s for s, folder in cls.SPLITS.items() if (root / cls.IMAGES_DIR / folder).is_dir()]

    @classmethod
    def detect(cls, path: Path) -> Path | None:
        """The root when ``path`` is (or holds ``ROOT_NAME`` that is) this layout: one of its split folders
        under ``IMAGES_DIR``; else None. The detector ``register_dataset(..., detect=True)`` uses."""
        root = cls.resolve_root(path)
        return root if any((root / cls.IMAGES_DIR / f).is_dir() for f in cls.SPLITS.values()) else None

    @classmethod
    def check_declaration(cls, name: str) -> None:
        """A clear error for class attributes that cannot make a dataset (called on registration)."""
        where = f"dataset {name!r} ({cls.__module__}.{cls.__qualname__})"
        if isinstance(cls.CLASSES, str) or not cls.CLASSES:
            raise RRSegError(f"{where}: CLASSES must be the class names in label-value order, got {cls.CLASSES!r}")
        if cls.PALETTE is not None and len(cls.PALETTE) != len(cls.CLASSES):
            raise RRSegError(f"{where}: PALETTE has {len(cls.PALETTE)} colours but CLASSES {len(cls.CLASSES)} names")
        if not cls.SPLITS:
            raise RRSegError(f"{where}: SPLITS must map split names to folder names, e.g. {{'train': 'training'}}")
        if 0 <= cls.IGNORE_INDEX < len(cls.CLASSES):
            raise RRSegError(f"{where}: IGNORE_INDEX {cls.IGNORE_INDEX} is also a class id "
                             f"(0..{len(cls.CLASSES) - 1})")


def seg_collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images of equal size into [B, 3, H, W] (their dtype) and labels into int64 [B, H, W], as plain
    tensors; metas stay a list of dicts. The one collate function: the trainer's loaders use it too."""
    shapes = {tuple(item["image"].shape) for item in batch}
    if len(shapes) > 1:
        raise RRSegError(
            f"cannot batch images of different sizes {sorted(shapes)}; crop/pad them to one size "
            "(train_transforms does) or use batch size 1"
        )
    # as_subclass: tv_tensors stay out of the batch; reshape: a [1, H, W] mask from a transform is [H, W]
    images = torch.stack([torch.as_tensor(item["image"]).as_subclass(torch.Tensor) for item in batch])
    labels = torch.stack([torch.as_tensor(item["label"]).as_subclass(torch.Tensor).long()
                          .reshape(item["label"].shape[-2:]) for item in batch])
    return {"image": images, "label": labels, "meta": [item.get("meta", {}) for item in batch]}
