"""Score prediction index PNGs against ground-truth labels matched by file stem.

GROUND_TRUTH is a folder of label files (PNG or TIFF, searched recursively; give --num-classes, and
--ignore-index / --reduce-zero-label as the labels need), or a dataset (a folder dataset, a benchmark folder
recognised by its layout such as ADEChallengeData2016 or ADE20K_2021_17_01, or any folder with --dataset
NAME): its --split (default val) is the ground truth, with the dataset's classes, ignore index, label
conversion and class names.

Prints overall figures, the frequency groups (frequent / common / rare, by region count; needs --counts;
`--group-by pixel` ranks by pixel count instead, as pixel_frequent / pixel_common / pixel_rare, `both` gives
both, and needs counts with pixel counts: `rrseg stats` JSON or the released text files) and the 10 worst
classes, and writes a JSON report with per-class IoU, accuracy, precision and false positives. Ground-truth
stems ending in _labelTrainIds or _gtFine_labelTrainIds match predictions without that ending. Predictions of
more than 256 classes are 16-bit PNGs, as `rrseg predict` writes them.

example:
  rrseg stats data/ade/ADEChallengeData2016/annotations/training --num-classes 150 --reduce-zero-label -o counts.json
  rrseg score my_preds/ data/ade/ADEChallengeData2016/annotations/validation --num-classes 150 \\
      --reduce-zero-label --counts counts.json --group-by both -o report.json
  rrseg score my_preds/ data/ADE20K_2021_17_01 --counts ade20k_full_counts.json   # 847 classes, 65535 ignored
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rrseg.cli._labels import add_dataset_arguments

    p.add_argument("pred_dir", help="folder of predicted index PNGs (values 0..C-1)")
    p.add_argument("gt_dir", metavar="GROUND_TRUTH", help="folder of ground-truth label files, or a dataset")
    add_dataset_arguments(p, split="val")
    p.add_argument("--counts", help="class counts for the groups: JSON from `rrseg stats`, a released .txt, or "
                                    "released counts by name (ade20k, coco_stuff164k, cityscapes)")
    p.add_argument("--group-by", choices=("region", "pixel", "both"), default=None,
                   help="rank the frequency groups by region count (default), pixel count, or both (needs --counts)")
    p.add_argument("--class-names", help="text file with one class name per line")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("-o", "--output", default="report.json", help="JSON report (default report.json)")


def run(args: argparse.Namespace) -> int:
    from rrseg.cli._labels import label_source
    from rrseg.data.labels import read_class_names
    from rrseg.errors import RRSegError
    from rrseg.io import atomic_write_json
    from rrseg.metrics.groups import ranked_groups
    from rrseg.metrics.report import build_report, format_report
    from rrseg.rebalance.counts import ClassCounts
    from rrseg.tools.score import score_folders

    src = label_source(args.gt_dir, args)
    dataset, num_classes = src.dataset, src.num_classes
    counts = ClassCounts.load(args.counts, num_classes) if args.counts else None
    group_by = args.group_by or "region"
    if counts is None and args.group_by:
        raise RRSegError(f"--group-by {args.group_by}: the groups need class counts (--counts)")
    if counts is not None:
        try:  # before scoring, not after it
            ranked_groups(counts.image_counts, counts.pixel_counts, group_by)
        except RRSegError as e:
            raise RRSegError(f"--group-by {group_by}: --counts {args.counts}: {e}") from None
    if args.class_names:
        names = read_class_names(args.class_names, num_classes)
    else:
        names = list(dataset.class_names) if dataset is not None else None
    metrics, n = score_folders(
        args.pred_dir, args.gt_dir, num_classes, src.reduce_zero_label, src.ignore_index, args.workers,
        gt_files=None if dataset is None else dataset.label_files, gt_dtype=src.label_dtype,
        gt_dtype_hint=src.label_dtype_hint,
    )
    report = build_report(metrics, names, None if counts is None else counts.image_counts,
                          pixel_counts=None if counts is None else counts.pixel_counts, group_by=group_by)
    report.update(num_images=n, pred_dir=str(args.pred_dir), gt_dir=str(args.gt_dir))
    print(f"{n} images scored")
    print(format_report(report))
    atomic_write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0
