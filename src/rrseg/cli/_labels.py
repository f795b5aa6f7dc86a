"""What ``rrseg stats`` and ``rrseg score`` read labels from: a dataset, or a folder of label files plus flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from rrseg.cli._extensions import add_import_argument
from rrseg.errors import RRSegError

__all__ = ["LabelSource", "add_dataset_arguments", "label_source"]


@dataclass(frozen=True)
class LabelSource:
    """The classes, ignore index and label conversion to count or score with; ``dataset`` when a dataset gave
    them (its ``label_files``, ``class_names`` and ``LABEL_DTYPE`` then apply too), else None."""

    num_classes: int
    ignore_index: int
    reduce_zero_label: bool
    dataset: Any = None

    @property
    def label_dtype(self) -> Any:
        return None if self.dataset is None else self.dataset.LABEL_DTYPE

    @property
    def label_dtype_hint(self) -> str:
        return "" if self.dataset is None else self.dataset.LABEL_DTYPE_HINT


def add_dataset_arguments(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--dataset", dest="name", metavar="NAME",
                   help="dataset type when the layout is not recognised: ade20k, ade20k_full, coco_stuff164k, "
                        "cityscapes, folder, or one registered by an --import module")
    p.add_argument("--split", default=split, help=f"the dataset's split to read (default {split})")
    p.add_argument("--num-classes", type=int, default=None,
                   help="number of classes C (labels 0..C-1): a folder of labels needs it")
    p.add_argument("--reduce-zero-label", action="store_true", help="0 is ignored, 1..C become 0..C-1 (ADE20K)")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="label value that is ignored (default: the dataset's; 255 for a folder of labels)")
    add_import_argument(p)


def label_source(path: str, args: argparse.Namespace) -> LabelSource:
    """The dataset at ``path`` (``--dataset`` / a recognised layout; flags that disagree with it are errors),
    else the folder-of-labels flags (``--num-classes`` required)."""
    from rrseg.data.builder import dataset_at

    dataset = dataset_at(path, args.name, args.split)
    if dataset is None:
        if args.num_classes is None:
            raise RRSegError(f"{path}: not a dataset layout, so a folder of label files: give --num-classes "
                             "(or --dataset NAME if it is a dataset)")
        source = LabelSource(args.num_classes, 255 if args.ignore_index is None else args.ignore_index,
                             bool(args.reduce_zero_label))
    else:
        what = f"the {dataset.name} dataset at {path}"
        for flag, given, value in (("--num-classes", args.num_classes, dataset.num_classes),
                                   ("--ignore-index", args.ignore_index, dataset.ignore_index)):
            if given is not None and given != value:
                raise RRSegError(f"{flag} {given}: {what} has {value}; leave {flag} out for a dataset")
        if args.reduce_zero_label and not dataset.reduce_zero_label:
            raise RRSegError(f"--reduce-zero-label: {what} does not reduce label 0; leave it out for a dataset")
        if not dataset.samples:
            raise RRSegError(f"{path}: split {args.split!r} of {what} has no labelled images")
        source = LabelSource(dataset.num_classes, dataset.ignore_index, dataset.reduce_zero_label, dataset)
    if source.num_classes < 1:
        raise RRSegError(f"--num-classes must be >= 1, got {source.num_classes}")
    return source
