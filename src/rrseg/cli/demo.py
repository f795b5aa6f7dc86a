"""The demo: train a cross-entropy baseline and a Region Rebalance model on the synthetic long-tailed
dataset (generated on first use), with the same small model, seed and schedule, and compare them overall
and on frequent / common / rare classes. Sized for a 2-core CPU: about 10 minutes in all.

Writes OUT/synthetic (the dataset, reused next time), OUT/ce and OUT/rr (work dirs: logs, checkpoints,
reports) and OUT/report (README.md with the table, iou_vs_count.png, curves.png, summary.json).

examples:
  rrseg demo
  rrseg demo --out runs/demo --minutes 6
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="time budget; the schedule is shortened (equally for both runs) to fit it (default 10)")
    p.add_argument("--iters", type=int, help="iterations per run (overrides the budget-based schedule)")
    p.add_argument("--config", help="a demo config other than the built-in one")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset and of both runs (default 0)")


def run(args: argparse.Namespace) -> int:
    from rrseg.engine.demo import run_demo
    from rrseg.errors import RRSegError

    if args.minutes <= 0:
        raise RRSegError(f"--minutes must be positive, got {args.minutes}")
    run_demo(args.out, args.minutes, args.config, args.seed, args.iters)
    return 0
