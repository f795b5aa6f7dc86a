"""The pixel losses' CPU layout (issue 24, item 3): the demo's training step with the logits resized and
soft-maxed in channels_last (pixel rows, rrseg's path on the CPU) against the previous NCHW path, interleaved.

One process, one thread (as each of the demo's two runs), the demo's model (``deeplabv3plus_small``, 30 classes)
at its batch (16 x 96^2), its criterion as ``build_criterion`` makes it (CE + 0.4 x auxiliary CE, and RR's
term with ``--rr``), AdamW. "previous" patches ``PixelLoss._logits`` back to resizing the NCHW logits, which
:func:`rrseg.rebalance.pixel.class_last` passes through unchanged: the code before the change. Reported:
the median step time of each path over interleaved repetitions (order alternating), their spread (IQR /
median) and the median of the per-repetition ratios; the same for the loss terms alone (forward + backward
from the model's output).

    PYTHONPATH=src python benchmarks/pixel_loss_cpu.py --json benchmarks/results/pixel_loss_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from _model_step import demo_parts
from peers import summarize  # IQR / median, as the peer benchmark reports it

from rrseg.rebalance import resize_logits
from rrseg.rebalance.pixel import PixelLoss

PATHS = ("previous", "current")


@contextlib.contextmanager
def path(name: str):
    """``previous``: PixelLoss._logits as before the change (NCHW resize); ``current``: as it is."""
    if name == "current":
        yield
        return
    current = PixelLoss._logits
    PixelLoss._logits = lambda self, out, labels: resize_logits(getattr(out, self.source), labels).float()
    try:
        yield
    finally:
        PixelLoss._logits = current


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rr", action="store_true", help="with RR's term (the demo's second run)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    make, images, labels = demo_parts(args.rr, args.batch, args.size)
    labels[:, :4] = 255
    runs = {}
    for name in PATHS:
        model, criterion = make()
        runs[name] = (model, criterion, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def step(name: str) -> float:
        model, criterion, opt = runs[name]
        with path(name):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = model(images)
            loss = criterion(out, labels)
            sum(loss.values()).backward()
            opt.step()
            return time.perf_counter() - start

    def loss_only(name: str) -> float:
        model, criterion, _ = runs[name]
        with torch.no_grad():
            out = model(images)
        leaves = {k: v.detach().requires_grad_() for k, v in vars(out).items() if torch.is_tensor(v)}
        out = type(out)(**{**vars(out), **leaves})
        with path(name):
            start = time.perf_counter()
            loss = criterion(out, labels)
            sum(loss.values()).backward()
            return time.perf_counter() - start

    for name in PATHS:
        step(name), step(name), loss_only(name)
    steps = {n: [] for n in PATHS}
    losses = {n: [] for n in PATHS}
    for r in range(args.reps):
        for name in (PATHS if r % 2 == 0 else PATHS[::-1]):
            steps[name].append(step(name))
            losses[name].append(loss_only(name))
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 1,
              "rr": args.rr, "batch": args.batch, "size": args.size, "reps": args.reps}
    for what, times in (("step", steps), ("loss_terms", losses)):
        result[what] = {n: {"median_ms": 1000 * statistics.median(v), "spread": summarize(v)["iqr_rel"]}
                        for n, v in times.items()}
        result[what]["ratio_current_to_previous"] = statistics.median(
            c / p for c, p in zip(times["current"], times["previous"]))
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        prev = json.loads(args.json.read_text()) if args.json.is_file() else {}
        prev["rr" if args.rr else "ce"] = result
        args.json.write_text(json.dumps(prev, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
