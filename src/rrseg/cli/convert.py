"""Convert raw benchmark labels to the train-id PNGs the datasets read.

coco-stuff RAW_DIR OUT_DIR: the stuffthingmaps PNGs (ids 0..181 with 11 unused thing ids, 255 unlabelled)
  under RAW_DIR (train2017/, val2017/) become OUT_DIR/<same sub-folder>/NAME_labelTrainIds.png with 0..170.
cityscapes ROOT [OUT_DIR]: every *_gtFine_labelIds.png under ROOT becomes *_gtFine_labelTrainIds.png
  (19 classes, everything else 255) beside it, or under OUT_DIR with the same sub-folders.

Runs in parallel, with a progress bar on a terminal (not with -q); outputs that exist are skipped (use
--overwrite), so an interrupted run can be restarted. Exit status 1 if any file failed.

example:
  rrseg convert coco-stuff stuffthingmaps_trainval2017 data/coco_stuff164k/annotations
  rrseg convert cityscapes data/cityscapes/gtFine
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    coco = sub.add_parser("coco-stuff", help="COCO-Stuff-164k stuffthingmaps -> *_labelTrainIds.png")
    coco.add_argument("raw_dir", help="folder of raw stuffthingmaps PNGs (searched recursively)")
    coco.add_argument("out_dir", help="output folder (sub-folders kept)")
    city = sub.add_parser("cityscapes", help="Cityscapes *_gtFine_labelIds.png -> *_gtFine_labelTrainIds.png")
    city.add_argument("root", help="folder searched recursively for *_labelIds.png")
    city.add_argument("out_dir", nargs="?", default=None, help="output folder (default: beside the inputs)")
    for q in (coco, city):
        q.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
        q.add_argument("--overwrite", action="store_true", help="convert again files that exist")
        # -q / -v also after the kind, as after every other command (absent here: the earlier value stays)
        q.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="results, warnings and errors only: no progress bar")
        q.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="also debug messages")


def run(args: argparse.Namespace) -> int:
    import sys

    from rrseg.data.label_conversion import convert_cityscapes, convert_coco_stuff
    from rrseg.output import show_progress_bar

    progress = show_progress_bar()  # a terminal, and not -q
    if args.kind == "coco-stuff":
        report = convert_coco_stuff(args.raw_dir, args.out_dir, args.workers, args.overwrite, progress)
    else:
        report = convert_cityscapes(args.root, args.out_dir, args.workers, args.overwrite, progress)
    for message in report.failed[:20]:
        print(f"failed: {message}", file=sys.stderr)
    if len(report.failed) > 20:
        print(f"failed: ... and {len(report.failed) - 20} more", file=sys.stderr)
    if report.unexpected:
        values = ", ".join(f"{v} ({n} files)" for v, n in sorted(report.unexpected.items()))
        print(f"warning: unexpected raw ids mapped to 255: {values}", file=sys.stderr)
    print(f"converted {report.converted}, skipped {report.skipped} existing, failed {len(report.failed)}")
    return 0 if report.ok else 1
