"""ADE20K (SceneParsing, ``ADEChallengeData2016``): 150 classes, label 0 ("other") ignored."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rrseg.data.base import SegDataset, scan_pairs
from rrseg.data.classes import ADE20K_CLASSES, ADE20K_PALETTE

__all__ = ["ADE20KDataset"]


class ADE20KDataset(SegDataset):
    """``ROOT/{images,annotations}/{training,validation}``: ``*.jpg`` images, ``*.png`` labels (same stem).

    ``root`` may be ``ADEChallengeData2016`` itself or the folder that holds it. ``split`` is ``train`` /
    ``val`` or the folder name. Labels 1..150 become 0..149 and 0 becomes ignore (mmseg's reduce_zero_label).
    Training transforms: base scale (2048, 512), crop 512x512 (``DEFAULTS``).
    """

    SPLITS: ClassVar[dict[str, str]] = {"train": "training", "val": "validation"}
    DEFAULTS: ClassVar[dict[str, tuple[int, int]]] = {"scale": (2048, 512), "crop_size": (512, 512)}

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
            root / "images" / folder, root / "annotations" / folder, (".jpg",), ".png", split
        )
        if strict:
            self.scan.raise_first()
        super().__init__(
            self.scan.samples, ADE20K_CLASSES, ADE20K_PALETTE, ignore_index=255, reduce_zero_label=True,
            transforms=transforms, root=root, split=split, name="ade20k",
        )

    @staticmethod
    def resolve_root(root: str | os.PathLike) -> Path:
        root = Path(root)
        return root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root

    @classmethod
    def available_splits(cls, root: str | os.PathLike) -> list[str]:
        root = cls.resolve_root(root)
        return [s for s, folder in cls.SPLITS.items() if (root / "images" / folder).is_dir()]
