"""Confusion-matrix accumulation throughput: rrseg's ConfusionMatrix against torchmetrics, same data.

Each update takes one batch of predicted indices and labels (ADE20K-like: 150 classes, 512x512, ~8 %
ignored pixels). torchmetrics is run as users run it (default validate_args=True) and with validation off.
Both must end with the same confusion matrix (checked).

  python benchmarks/metrics_throughput.py [--images 64 --batch 4 --size 512 --classes 150]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from rrseg.metrics import ConfusionMatrix


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    c, n, s = args.classes, args.batch, args.size
    batches = []
    for _ in range(args.images // n):
        label = torch.randint(0, c, (n, s, s), generator=gen)
        label[torch.rand(n, s, s, generator=gen) < 0.08] = 255
        pred = torch.where(torch.rand(n, s, s, generator=gen) < 0.7, label.clamp(max=c - 1),
                           torch.randint(0, c, (n, s, s), generator=gen))
        batches.append((pred, label))

    def run_rrseg():
        cm = ConfusionMatrix(c)
        for pred, label in batches:
            cm.update(pred, label)
        return cm.mat

    def run_tm(validate: bool, metric=MulticlassConfusionMatrix):
        m = metric(num_classes=c, ignore_index=255, validate_args=validate)
        for pred, label in batches:
            m.update(pred, label)
        return m.confmat

    candidates = {
        "rrseg ConfusionMatrix": run_rrseg,
        "torchmetrics MulticlassJaccardIndex (default args)": lambda: run_tm(True, MulticlassJaccardIndex),
        "torchmetrics MulticlassConfusionMatrix (default args)": lambda: run_tm(True),
        "torchmetrics MulticlassConfusionMatrix (validate_args=False)": lambda: run_tm(False),
    }
    ref = run_rrseg()
    for name, fn in candidates.items():
        assert torch.equal(fn().long(), ref), name
    best = {name: float("inf") for name in candidates}
    for _ in range(args.repeats):  # interleaved repeats; best-of to drop interference from other load
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    pixels = args.images * s * s
    base = best["rrseg ConfusionMatrix"]
    print(f"{args.images} images of {s}x{s}, {c} classes, batch {n}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| implementation | Mpixel/s | time (s) | rrseg speed-up |\n|---|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {pixels / t / 1e6:.1f} | {t:.3f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
