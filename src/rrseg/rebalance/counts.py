"""Per-class region (image) and pixel counts: loading, validation, priors and weights.

Accepted sources: a released dataset name ("ade20k", "coco_stuff164k", "cityscapes"); a sequence /
tensor / array of image counts; a JSON file written by ``rrseg stats``;
the released text format (one integer per line, class order), e.g. ``ade20k_image_label_stats.txt``. For a
released ``*_image_label_stats.txt`` the sibling ``*_pix_label_stats.txt`` is read too when present.

The released files ship with the package and are found by their bare file name as well (the authors' configs
name them so): ``"ade20k_image_label_stats.txt"`` is the packaged file unless a file of that name exists
where it points (a path with a folder is always read as given).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rrseg.errors import RRSegError

__all__ = ["ClassCounts", "CountsError", "CountsLike"]

CountsLike = Sequence[int] | Tensor | np.ndarray | str | os.PathLike


# Counts released with the paper, shipped in rrseg/rebalance/resources: usable by name, e.g. counts="ade20k".
RELEASED = {"ade20k": "ade20k", "coco_stuff164k": "cocostuff164k", "cityscapes": "cityscapes"}


def _released_dir() -> Path:
    """The packaged folder of the released counts files (``resources`` of this package)."""
    return Path(str(resources.files(__package__ or "rrseg.rebalance").joinpath("resources")))


def released_stats_path(name: str, kind: str = "image") -> Path:
    """Path of a released counts file: ``name`` in RELEASED, ``kind`` "image" or "pix"."""
    return _released_dir() / f"{RELEASED[name]}_{kind}_label_stats.txt"


def released_file(path: str | os.PathLike) -> Path | None:
    """The packaged released counts file that ``path`` names by its bare file name (e.g.
    ``ade20k_image_label_stats.txt``, ``cocostuff164k_pix_label_stats.txt``) when no such file exists there;
    else None."""
    path = Path(path)
    if path.exists() or path.parent != Path(".") or not path.name.endswith("_label_stats.txt"):
        return None
    packaged = _released_dir() / path.name
    return packaged if packaged.is_file() else None


def released_files() -> list[str]:
    """The file names of the packaged released counts."""
    return sorted(p.name for p in _released_dir().glob("*_label_stats.txt"))


class CountsError(RRSegError, ValueError):
    """Class counts that cannot be used: wrong length, negative, unreadable."""


def _as_counts(values: object, what: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise CountsError(f"{what}: expected a flat list of per-class counts, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.all(np.isfinite(arr))):
        raise CountsError(f"{what}: counts must be finite numbers")
    if arr.size and arr.min() < 0:
        c = int(np.argmin(arr))
        raise CountsError(f"{what}: count of class {c} is negative ({arr[c]})")
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        raise CountsError(f"{what}: counts must be whole numbers")
    return arr.astype(np.int64)


def _read_txt(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CountsError(f"{path}: not a text file of per-class counts (one integer per line)") from None
    except OSError as e:
        raise CountsError(f"{path}: cannot read counts ({e.strerror})") from None
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            values.append(int(line))
        except ValueError:
            raise CountsError(f"{path}: line {lineno} is not an integer: {line[:40]!r}") from None
    return _as_counts(values, str(path))


@dataclass(frozen=True)
class ClassCounts:
    """Per-class statistics of a training set, in class order."""

    image_counts: np.ndarray  # number of training images that contain the class (region counts)
    pixel_counts: np.ndarray | None = None  # number of training pixels of the class
    num_images: int | None = None

    @property
    def num_classes(self) -> int:
        return int(self.image_counts.shape[0])

    @classmethod
    def load(cls, source: CountsLike | ClassCounts, num_classes: int | None = None) -> ClassCounts:
        """Counts from a sequence/tensor/array (image counts), a stats JSON or a released text file."""
        where = ""
        if isinstance(source, ClassCounts):
            counts = source
        elif isinstance(source, str) and source in RELEASED:
            counts = cls._load_file(released_stats_path(source))
            where = f"released {source} counts: "
        elif isinstance(source, (str, os.PathLike)) and released_file(source) is not None:
            counts = cls._load_file(released_file(source))
            where = f"released {Path(source).name}: "
        elif isinstance(source, (str, os.PathLike)):
            counts = cls._load_file(Path(source))
            where = f"{source}: "
        else:
            counts = cls(_as_counts(source, "class counts"))
        if num_classes is not None:
            try:
                counts.check(num_classes)
            except CountsError as e:  # name the file the counts came from
                raise CountsError(f"{where}{e}") from None
        return counts

    @classmethod
    def _load_file(cls, path: Path) -> ClassCounts:
        if not path.is_file():
            raise CountsError(f"{path}: counts file not found (released counts are named {', '.join(RELEASED)} "
                              f"or by their file name, e.g. {released_files()[0]})")
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CountsError(f"{path}: not valid JSON ({e.__class__.__name__})") from None
            if not isinstance(data, dict) or "image_counts" not in data:
                raise CountsError(f"{path}: JSON needs an 'image_counts' list (as written by `rrseg stats`)")
            image = _as_counts(data["image_counts"], f"{path}: image_counts")
            pixel = data.get("pixel_counts")
            pixel = None if pixel is None else _as_counts(pixel, f"{path}: pixel_counts")
            if pixel is not None and pixel.shape != image.shape:
                raise CountsError(f"{path}: pixel_counts has {pixel.size} classes, image_counts {image.size}")
            return cls(image, pixel, data.get("num_images"))
        image = _read_txt(path)
        pixel = None
        if "image_label_stats" in path.name:
            sibling = path.with_name(path.name.replace("image_label_stats", "pix_label_stats"))
            if sibling.is_file():
                pixel = _read_txt(sibling)
                if pixel.shape != image.shape:
                    raise CountsError(f"{sibling}: {pixel.size} classes, but {path} has {image.size}")
        return cls(image, pixel)

    def check(self, num_classes: int) -> ClassCounts:
        if self.num_classes != num_classes:
            raise CountsError(f"class counts have {self.num_classes} entries but num_classes is {num_classes}")
        return self

    def frequencies(self, kind: str = "region") -> np.ndarray:
        """Counts of the given kind ("region"/"image" or "pixel") as int64."""
        if kind in ("region", "image"):
            return self.image_counts
        if kind == "pixel":
            if self.pixel_counts is None:
                raise CountsError("pixel counts are needed but these class counts hold image counts only")
            return self.pixel_counts
        raise ValueError(f"counts kind must be 'region' or 'pixel', got {kind!r}")

    def log_prior(self, kind: str = "region", eps: float | None = None) -> Tensor:
        """log(n_c / sum n); a zero count is taken as 1 so that nothing is ever -inf or NaN. With ``eps`` the
        release's DeepLabV3+ / OCRNet rule instead: log(n_c / sum n + eps), zero counts as they are."""
        n = self.frequencies(kind).astype(np.float64)
        if eps is not None:
            return torch.from_numpy(np.log(n / n.sum() + eps)).float()
        n = np.maximum(n, 1.0)
        return torch.from_numpy(np.log(n / n.sum())).float()

    def to_json(self) -> dict:
        out: dict = {"num_classes": self.num_classes, "image_counts": self.image_counts.tolist()}
        if self.pixel_counts is not None:
            out["pixel_counts"] = self.pixel_counts.tolist()
        if self.num_images is not None:
            out["num_images"] = int(self.num_images)
        return out
