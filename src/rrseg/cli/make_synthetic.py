"""Write the synthetic long-tailed dataset (ADE20K-shaped class statistics) in the generic folder layout.

OUT gets dataset.yaml, images/{train,val}/*.jpg, labels/{train,val}/*.png (index PNGs, 255 = unlabelled),
counts.json (the training split's class counts, as `rrseg stats` writes them), synthetic.json (the
statistics printed at the end, after the line saying where it wrote; -q keeps only that line) and design.json
(each class's frequency, size and look). The defaults suit the CPU demo; the same seed gives byte-identical
files.

example:
  rrseg make-synthetic data/synthetic
  rrseg make-synthetic data/synth50 --classes 50 --train 2000 --val 400 --size 160x120 --seed 1
"""

from __future__ import annotations

import argparse

_DEFAULTS = {"classes": 30, "train": 1200, "val": 300, "size": "128x96"}  # = rrseg.data.synthetic.DEFAULTS


def _size(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return int(w), int(h)
        return int(text), int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or one number, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--classes", type=int, default=_DEFAULTS["classes"], help="number of classes (default 30)")
    p.add_argument("--train", type=int, default=_DEFAULTS["train"], help="training images (default 1200)")
    p.add_argument("--val", type=int, default=_DEFAULTS["val"], help="validation images (default 300)")
    p.add_argument("--size", type=_size, default=_DEFAULTS["size"],
                   help="image size WIDTHxHEIGHT or one number for squares (default 128x96)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the images (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from rrseg.data.synthetic import make_synthetic
    from rrseg.output import show_progress_bar

    size = _size(args.size) if isinstance(args.size, str) else args.size
    make_synthetic(
        args.out, num_classes=args.classes, num_train=args.train, num_val=args.val, size=size, seed=args.seed,
        workers=args.workers, overwrite=args.overwrite, verbose=True, progress=show_progress_bar(),
    )
    return 0
