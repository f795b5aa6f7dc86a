"""Write a starter training config for your own dataset folder, sized from the data: its splits (or an automatic
validation split), class count and ignore index, crop and scale from the images' sizes, a model that suits the
data's size (the demo's small model for small sets of small images, UPerNet Swin-T otherwise), a schedule whose
warm-up, evaluation and logging scale with the number of iterations, and Region Rebalance on with class counts
from the data. Every choice is a comment in the file.

The folder: images/ and masks/ (or labels/, annotations/), with or without split sub-folders or split list
files; dataset.yaml optional (README, "Your own data").

examples:
  rrseg init data/my_dataset                  # writes my_dataset.yaml here
  rrseg init data/my_dataset -o my_dataset_4k.yaml --iters 4000
  rrseg train my_dataset.yaml
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", help="the dataset folder (images/ + masks/ or labels/ or annotations/)")
    p.add_argument("-o", "--out", help="config file to write (default: NAME.yaml in the current folder)")
    p.add_argument("--name", help="the run's name (default: the data folder's name)")
    p.add_argument("--iters", type=int, help="training iterations (default 1000 for the small model, 40000 else)")
    p.add_argument("--force", action="store_true", help="replace an existing config file")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from rrseg.errors import RRSegError
    from rrseg.io import atomic_write_text
    from rrseg.tools.starter import starter_config, summary_lines

    if args.iters is not None and args.iters < 1:
        raise RRSegError(f"--iters must be at least 1, got {args.iters}")
    text, summary = starter_config(args.data_dir, iters=args.iters, name=args.name)
    name = args.name or summary.root.name
    out = Path(args.out or f"{name}.yaml")
    if out.exists() and not args.force:
        raise RRSegError(f"{out} exists; --force replaces it, -o writes another file")
    log = logging.getLogger("rrseg.cli.init")
    for line in summary_lines(summary):
        log.info(line)
    atomic_write_text(out, text)
    print(f"wrote {out}; train with: rrseg train {out}")
    return 0
