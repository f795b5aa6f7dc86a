"""ADE20K-Full: 847 classes, uint16 TIFF labels, 65535 = not labelled (the long-tail benchmark beyond ADE20K-150).

The layout is the one MaskFormer's ``datasets/prepare_ade20k_full_sem_seg.py`` writes from the ADE20K 2021
release (Mask2Former and the long-tail papers use the same files)::

    ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
    ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif   (uint16, mode I;16)

Label values are train ids 0..846 (the order of ``ADE20K_SEM_SEG_FULL_CATEGORIES``; class names in
:func:`ade20k_full_classes`) and 65535 where no class is labelled.

The ignore index is 65535, the value in the file itself: no id is remapped, so ids above 255 (and 255,
a real class here) stay what they are, and ``rrseg stats`` / ``rrseg score`` on the raw TIFFs, the
dataset and training all agree on the value. It lies outside 0..846, fits the files' uint16, and is not
negative (a negative value cannot be a uint16 pixel and breaks ``bincount``-style counting). Labels are
loaded as int64, so transforms pad with 65535 and the losses, RR and the confusion matrix drop it.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import ClassVar

import numpy as np

from rrseg.data.base import LayoutDataset
from rrseg.data.registry import register_dataset

__all__ = ["ADE20K_FULL_IGNORE_INDEX", "LTSS_GROUP_KINDS", "ADE20KFullDataset", "ade20k_full_classes", "ltss_groups"]

ADE20K_FULL_IGNORE_INDEX = 65535
LTSS_GROUP_KINDS = ("image", "pixel")


@lru_cache(maxsize=1)
def ade20k_full_classes() -> tuple[str, ...]:
    """The 847 ADE20K-Full class names in train-id order (0..846), as ``ADE20K_SEM_SEG_FULL_CATEGORIES`` of
    MaskFormer's ``datasets/prepare_ade20k_full_sem_seg.py`` (WordNet synonyms kept, e.g. "building, edifice").
    Read from the packaged ``rrseg/data/resources/ade20k_full_classes.txt``, one name per line."""
    text = resources.files("rrseg.data").joinpath("resources", "ade20k_full_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


@lru_cache(maxsize=1)
def _ltss_table() -> tuple[tuple[str, ...], ...]:
    """The rows of the packaged ``resources/ade20k_full_ltss_groups.tsv`` (train id, image frequency label, pixel
    frequency label, image count, pixel count, name), in train-id order."""
    text = resources.files("rrseg.data").joinpath("resources", "ade20k_full_ltss_groups.tsv").read_text(
        encoding="utf-8")
    rows = [tuple(line.split("\t")) for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(rows[1:])  # after the header


def ltss_groups(kind: str = "image") -> dict[str, np.ndarray]:
    """ADE20K-Full's frequent / common / rare classes (train ids, ascending) as LTSS labels them by ``kind`` "image"
    or "pixel" frequency: per-class labels in its dataset registration (caopulan/Mask2Former-LT
    ``ltss/data/datasets/register_ade20k_full.py``, fields ``image_frequency`` / ``pixel_frequency``), not a ranking,
    so that a report's groups are the columns of LTSS's tables (512 / 175 / 160 classes by image, 509 / 169 / 169 by
    pixel frequency). Packaged as ``rrseg/data/resources/ade20k_full_ltss_groups.tsv``."""
    if kind not in LTSS_GROUP_KINDS:
        raise ValueError(f"LTSS's groups are by image or pixel frequency, got {kind!r}")
    column = 1 if kind == "image" else 2
    labels = np.array([row[column] for row in _ltss_table()])
    return {name: np.flatnonzero(labels == name) for name in ("frequent", "common", "rare")}


# priority 1: recognised before ADE20K-150, so that a folder holding both ADE20K folders is taken for this one
@register_dataset("ade20k_full", aliases=("ade_full", "ade20kfull", "ade20k_2021_17_01"), detect=True, priority=1)
class ADE20KFullDataset(LayoutDataset):
    """``ROOT/{images_detectron2,annotations_detectron2}/{training,validation}``: ``*.jpg`` images and
    ``*.tif`` uint16 labels of the same stem.

    ``root`` may be ``ADE20K_2021_17_01`` itself or the folder that holds it. ``split`` is ``train`` / ``val``
    or the folder name. A label that is not uint16 is an error (``label_dtype``), as is a value above 846
    other than 65535 (``label_range``). The presets' training transforms (``configs/_base_/ade20k_full.yaml``)
    are ADE20K's: base scale (2048, 512), crop 512x512.
    """

    SPLITS: ClassVar[dict[str, str]] = {"train": "training", "val": "validation"}
    ROOT_NAME = "ADE20K_2021_17_01"
    IMAGES_DIR = "images_detectron2"
    LABELS_DIR = "annotations_detectron2"
    LABEL_SUFFIX = ".tif"
    CLASSES = ade20k_full_classes()
    IGNORE_INDEX = ADE20K_FULL_IGNORE_INDEX
    LAYOUT = "ADE20K_2021_17_01 images_detectron2/training"
    LABEL_DTYPE: ClassVar[np.dtype | None] = np.dtype(np.uint16)
    LABEL_DTYPE_HINT: ClassVar[str] = (
        "ADE20K-Full labels are uint16 TIFFs (mode I;16, as prepare_ade20k_full_sem_seg.py writes them)"
    )
