"""Scan a dataset and report every problem at once; exit status 1 if anything is wrong.

DATASET is a folder dataset (a folder with images/ and masks/, labels/ or annotations/, split or not, with or
without dataset.yaml; or that YAML file itself), a benchmark folder
(ADEChallengeData2016, ADE20K-Full's ADE20K_2021_17_01 with images_detectron2, COCO-Stuff-164k with
images/train2017, Cityscapes with leftImg8bit; recognised by its layout or named with --dataset), or a
training config (`rrseg train` YAML, or a packaged preset's name: `rrseg config list`): its data.train and
data.val datasets are checked.
Found: unreadable or corrupt images, images without labels (and labels without images, as warnings),
label size different from the image, label values outside the class range that are not the ignore index,
colour (RGB) labels where an index PNG is expected, labels of the wrong pixel type (ADE20K-Full: a TIFF that
is not uint16), missing or empty splits. Training raises the same messages for the same files.

example:
  rrseg check-data data/synthetic
  rrseg check-data data/ade/ADEChallengeData2016 --split val --json check.json
  rrseg check-data data/ADE20K_2021_17_01
  rrseg check-data configs/upernet_swin_t/ade20k_160k_rr.yaml
  rrseg check-data upernet_swin_t/ade20k_160k_rr
"""

from __future__ import annotations

import argparse

from rrseg.cli._extensions import add_import_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET",
                   help="dataset folder, dataset.yaml, or a config (a YAML file or a packaged preset's name)")
    p.add_argument("--dataset", dest="name", metavar="NAME",
                   help="dataset type when the layout is not recognised: ade20k, ade20k_full, coco_stuff164k, "
                        "cityscapes, folder")
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="check only this split (repeatable; default: every split found)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("--max-per-kind", type=int, default=20, help="problems listed per kind (default 20)")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    add_import_argument(p)


def _training_config(path: str) -> list[tuple[str, str, str, dict]] | None:
    """(type, root, split, options) of the train and val data of a training config, or None if ``path`` is not
    one (a folder, or a folder dataset's own dataset.yaml). Roots are taken as `rrseg train` takes them. A path
    that does not exist may name a packaged preset (`rrseg check-data upernet_swin_t/ade20k_160k_rr`)."""
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.exists():
        from rrseg.engine.config import find_preset

        p = find_preset(path) or p
    if not (p.is_file() and p.suffix.lower() in (".yaml", ".yml")):
        return None
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return None  # reported by the folder-dataset reader, with the file named
    if not isinstance(data, dict) or "classes" in data or not ({"data", "_base_"} & set(data)):
        return None
    from rrseg.engine.config import load_config

    cfg = load_config(p)
    return [(d.type, d.root, d.split, dict(d.options)) for d in (cfg.data.train, cfg.data.val)]


def run(args: argparse.Namespace) -> int:
    from rrseg.data.check import check_dataset
    from rrseg.io import atomic_write_json
    from rrseg.output import show_progress_bar

    progress = show_progress_bar()  # a terminal, and not -q
    targets = _training_config(args.dataset)
    if targets is None:
        reports = [check_dataset(args.dataset, name=args.name, splits=args.splits, workers=args.workers,
                                 progress=progress)]
    else:  # a training config: its train and val splits (one report per dataset)
        grouped: dict[tuple[str, str], tuple[list[str], dict]] = {}
        for kind, root, split, options in targets:
            grouped.setdefault((kind, root), ([], options))[0].append(split)
        reports = [check_dataset(root, name=kind, splits=args.splits or splits, workers=args.workers,
                                 progress=progress, options=options)
                   for (kind, root), (splits, options) in grouped.items()]
    for report in reports:
        print(report.format(max_per_kind=max(0, args.max_per_kind)))
    if args.json:
        atomic_write_json(args.json, reports[0].to_json() if len(reports) == 1 else [r.to_json() for r in reports])
    return 0 if all(r.ok for r in reports) else 1
