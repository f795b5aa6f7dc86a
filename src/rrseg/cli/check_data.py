"""Scan a dataset and report every problem at once; exit status 1 if anything is wrong.

DATASET is a folder dataset (a folder with dataset.yaml, or the YAML file itself), a benchmark folder
(ADEChallengeData2016, COCO-Stuff-164k with images/train2017, Cityscapes with leftImg8bit; recognised by
its layout or named with --dataset), or a YAML config with a `dataset:` mapping of `name` and `root`.
Found: unreadable or corrupt images, images without labels (and labels without images, as warnings),
label size different from the image, label values outside the class range, colour (RGB) labels where an
index PNG is expected, missing or empty splits. Training raises the same messages for the same files.

example:
  rrseg check-data data/synthetic
  rrseg check-data data/ADEChallengeData2016 --split val --json check.json
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET", help="dataset folder, dataset.yaml, or a config YAML")
    p.add_argument("--dataset", dest="name", metavar="NAME",
                   help="dataset type when the layout is not recognised: ade20k, coco_stuff164k, cityscapes, folder")
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="check only this split (repeatable; default: every split found)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("--max-per-kind", type=int, default=20, help="problems listed per kind (default 20)")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")


def run(args: argparse.Namespace) -> int:
    import sys

    from rrseg.data.check import check_dataset
    from rrseg.io import atomic_write_json

    report = check_dataset(args.dataset, name=args.name, splits=args.splits, workers=args.workers,
                           progress=sys.stderr.isatty())
    print(report.format(max_per_kind=max(0, args.max_per_kind)))
    if args.json:
        atomic_write_json(args.json, report.to_json())
    return 0 if report.ok else 1
