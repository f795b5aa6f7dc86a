"""Score prediction index PNGs against ground-truth PNGs matched by file stem.

Prints overall figures, the frequency groups (frequent / common / rare, by region count; needs --counts;
`--group-by pixel` ranks by pixel count instead, as pixel_frequent / pixel_common / pixel_rare, `both` gives
both, and needs counts with pixel counts: `rrseg stats` JSON or the released text files) and the 10 worst
classes, and writes a JSON report with per-class IoU, accuracy, precision and false positives. Ground-truth
stems ending in _labelTrainIds or _gtFine_labelTrainIds match predictions without that ending.

example:
  rrseg stats data/ADEChallengeData2016/annotations/training --num-classes 150 --reduce-zero-label -o counts.json
  rrseg score my_preds/ data/ADEChallengeData2016/annotations/validation --num-classes 150 \\
      --reduce-zero-label --counts counts.json --group-by both -o report.json
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred_dir", help="folder of predicted index PNGs (values 0..C-1)")
    p.add_argument("gt_dir", help="folder of ground-truth label PNGs")
    p.add_argument("--num-classes", type=int, required=True, help="number of classes C")
    p.add_argument("--counts", help="class counts (JSON from `rrseg stats` or released .txt) for the groups")
    p.add_argument("--group-by", choices=("region", "pixel", "both"), default=None,
                   help="rank the frequency groups by region count (default), pixel count, or both (needs --counts)")
    p.add_argument("--class-names", help="text file with one class name per line")
    p.add_argument("--reduce-zero-label", action="store_true", help="ground truth: 0 ignored, 1..C -> 0..C-1")
    p.add_argument("--ignore-index", type=int, default=255, help="ignored ground-truth value (default 255)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("-o", "--output", default="report.json", help="JSON report (default report.json)")


def run(args: argparse.Namespace) -> int:
    from rrseg.data.labels import read_class_names
    from rrseg.engine.score import score_folders
    from rrseg.errors import RRSegError
    from rrseg.io import atomic_write_json
    from rrseg.metrics.groups import ranked_groups
    from rrseg.metrics.report import build_report, format_report
    from rrseg.rebalance.counts import ClassCounts

    if args.num_classes < 1:
        raise RRSegError(f"--num-classes must be >= 1, got {args.num_classes}")
    counts = ClassCounts.load(args.counts, args.num_classes) if args.counts else None
    group_by = args.group_by or "region"
    if counts is None and args.group_by:
        raise RRSegError(f"--group-by {args.group_by}: the groups need class counts (--counts)")
    if counts is not None:
        try:  # before scoring, not after it
            ranked_groups(counts.image_counts, counts.pixel_counts, group_by)
        except RRSegError as e:
            raise RRSegError(f"--group-by {group_by}: --counts {args.counts}: {e}") from None
    names = read_class_names(args.class_names, args.num_classes) if args.class_names else None
    metrics, n = score_folders(args.pred_dir, args.gt_dir, args.num_classes, args.reduce_zero_label,
                               args.ignore_index, args.workers)
    report = build_report(metrics, names, None if counts is None else counts.image_counts,
                          pixel_counts=None if counts is None else counts.pixel_counts, group_by=group_by)
    report.update(num_images=n, pred_dir=str(args.pred_dir), gt_dir=str(args.gt_dir))
    print(f"{n} images scored")
    print(format_report(report))
    atomic_write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0
