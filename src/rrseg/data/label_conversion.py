"""Label converters: raw COCO-Stuff stuffthingmaps and Cityscapes ``*_labelIds.png`` to train ids.

Both map every pixel through a 256-entry lookup table, in parallel, with atomic writes (a converted file is
complete or absent), so an interrupted run can simply be started again (files already done are skipped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from rrseg.data.labels import read_label
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_bytes
from rrseg.parallel import parallel_map

__all__ = [
    "CITYSCAPES_ID_TO_TRAINID",
    "COCO_STUFF_UNUSED_IDS",
    "ConvertReport",
    "cityscapes_lut",
    "coco_stuff_lut",
    "convert_cityscapes",
    "convert_coco_stuff",
    "convert_labels",
]

IGNORE = 255

# The 11 COCO thing ids (0-based, as stored in the stuffthingmaps PNGs) that have no annotations.
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)

# Cityscapes label id -> train id (cityscapesScripts' labels.py); every other id is ignored.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def coco_stuff_lut() -> np.ndarray:
    """Raw ids 0..181 without the unused ones -> 0..170; 255 and anything else -> 255."""
    lut = np.full(256, IGNORE, np.uint8)
    used = [i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]
    lut[used] = np.arange(len(used), dtype=np.uint8)
    return lut


def cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for k, v in CITYSCAPES_ID_TO_TRAINID.items():
        lut[k] = v
    return lut


@dataclass
class ConvertReport:
    converted: int = 0
    skipped: int = 0  # outputs that existed already
    failed: list[str] = field(default_factory=list)  # one-line messages
    unexpected: dict[int, int] = field(default_factory=dict)  # raw value -> files holding it (mapped to 255)

    @property
    def ok(self) -> bool:
        return not self.failed


def _convert_one(job: tuple[str, str, np.ndarray, np.ndarray, bool]) -> tuple[str, str | None, list[int]]:
    src, dst, lut, expected, overwrite = job
    if not overwrite and os.path.exists(dst):
        return "skipped", None, []
    try:
        raw = read_label(src)
    except RRSegError as e:
        return "failed", str(e), []
    if raw.dtype != np.uint8:
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            return "failed", f"{src}: values up to {int(raw.max())} do not fit the 8-bit id table", []
        raw = raw.astype(np.uint8)
    present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    odd = [int(v) for v in present if not expected[v]]
    buf = BytesIO()
    Image.fromarray(lut[raw], mode="L").save(buf, format="PNG")
    try:
        atomic_write_bytes(dst, buf.getvalue())
    except (OSError, RRSegError) as e:
        return "failed", f"{dst}: cannot write ({e})", odd
    return "converted", None, odd


def convert_labels(
    pairs: Sequence[tuple[Path, Path]],
    lut: np.ndarray,
    expected: np.ndarray | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    description: str = "converting",
) -> ConvertReport:
    """Map each (source, destination) label file through ``lut``; ``expected[v]`` marks legal raw values."""
    expected = np.ones(256, bool) if expected is None else expected
    jobs = [(str(s), str(d), lut, expected, overwrite) for s, d in pairs]
    for d in {Path(d).parent for _, d in pairs}:
        d.mkdir(parents=True, exist_ok=True)
    report = ConvertReport()
    for status, message, odd in parallel_map(_convert_one, jobs, workers, progress=progress, description=description,
                                             transient=False):
        if status == "converted":
            report.converted += 1
        elif status == "skipped":
            report.skipped += 1
        else:
            report.failed.append(message or "unknown failure")
        for v in odd:
            report.unexpected[v] = report.unexpected.get(v, 0) + 1
    return report


def _find(root: Path, suffix: str, exclude: str | None = None) -> list[Path]:
    if not root.is_dir():
        raise RRSegError(f"{root}: directory not found")
    files = sorted(p for p in root.rglob(f"*{suffix}") if p.is_file() and not (exclude and p.name.endswith(exclude)))
    if not files:
        raise RRSegError(f"{root}: no *{suffix} files found")
    return files


def convert_coco_stuff(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> ConvertReport:
    """``RAW_DIR/**/NAME.png`` (stuffthingmaps, ids 0..181) -> ``OUT_DIR/**/NAME_labelTrainIds.png`` (0..170).

    The sub-folders (``train2017``, ``val2017``) are kept, so ``OUT_DIR`` is typically
    ``coco_stuff164k/annotations``. Ids that should not occur (the unused ones, 182..254) become 255 and
    are reported.
    """
    raw, out = Path(raw_dir), Path(out_dir)
    files = _find(raw, ".png", exclude="_labelTrainIds.png")
    pairs = [(f, out / f.relative_to(raw).parent / f"{f.stem}_labelTrainIds.png") for f in files]
    expected = np.zeros(256, bool)
    expected[[i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]] = True
    expected[IGNORE] = True
    return convert_labels(pairs, coco_stuff_lut(), expected, workers, overwrite, progress, "COCO-Stuff labels")


def convert_cityscapes(
    root: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> ConvertReport:
    """``ROOT/**/*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png`` beside them (or under ``out_dir``)."""
    root = Path(root)
    files = _find(root, "_labelIds.png")
    base = Path(out_dir) if out_dir is not None else root
    pairs = [(f, base / f.relative_to(root).parent / f.name.replace("_labelIds.png", "_labelTrainIds.png"))
             for f in files]
    expected = np.zeros(256, bool)
    expected[:34] = True  # ids 0..33 (license plate, -1, is never stored)
    return convert_labels(pairs, cityscapes_lut(), expected, workers, overwrite, progress, "Cityscapes labels")
