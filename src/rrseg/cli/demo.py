"""The demo: train a cross-entropy baseline and a Region Rebalance model on the synthetic long-tailed
dataset (generated on first use), with the same small model, seed and schedule, and compare them overall
and on frequent / common / rare classes. The schedule is the config's, always: a slower machine takes
longer, it never trains less, so a seed gives the same table on any machine.

Writes OUT/synthetic (the dataset, reused next time), OUT/ce and OUT/rr (work dirs: logs, checkpoints,
reports) and OUT/report (README.md with the table, iou_vs_count.png, curves.png, predictions.png,
summary.json).

By default (--parallel) the two runs train side by side, as two `rrseg train` processes with one thread each
(their output goes to OUT/ce.log and OUT/rr.log); --no-parallel trains them one after the other in this
process with torch's default thread count. Both give the same figures up to floating-point summation order
(bit-identical when this process also uses one thread, OMP_NUM_THREADS=1).

examples:
  rrseg demo
  rrseg demo --out runs/demo --parallel
  rrseg demo --iters 50        # a short check of the set-up, not the demo's result
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    # no rrseg.tools import here: building --help must not import torch
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--iters", type=int, help="iterations per run, instead of the config's schedule")
    p.add_argument("--config", help="a demo config other than the built-in one")
    p.add_argument("--seed", type=int, default=0, help="seed of both training runs (default 0; the dataset is fixed)")
    p.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=None,
                   help="train the two runs side by side, one thread each (default: on, "
                        "rrseg.tools.demo.PARALLEL_DEFAULT)")
    # removed: the demo no longer cuts its schedule to a time budget; refused with a message, not ignored
    p.add_argument("--minutes", type=float, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from rrseg.errors import RRSegError
    from rrseg.tools.demo import PARALLEL_DEFAULT, run_demo

    if args.minutes is not None:
        raise RRSegError("--minutes was removed: the demo always trains its config's full schedule "
                         "(a slower machine takes longer); use --iters N for a shorter run")
    if args.iters is not None and args.iters < 1:
        raise RRSegError(f"--iters must be at least 1, got {args.iters}")
    parallel = PARALLEL_DEFAULT if args.parallel is None else args.parallel
    run_demo(args.out, args.config, args.seed, args.iters, parallel=parallel)
    return 0
