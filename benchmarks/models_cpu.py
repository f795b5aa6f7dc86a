"""Train-step time and peak memory of each model family on CPU, Region Rebalance off and on.

Each (model, RR off/on) runs in its own process so that peak RSS is its own: the model is built with RR
attached, warmed up, then timed over a few steps (median reported). Time: wall clock and process CPU time
(all threads; on a shared machine the CPU time is the steadier measure of the work). Memory: peak RSS of
the process (ru_maxrss) and its growth over the RSS before the first step (activations, gradients,
optimiser state).

Usage (from the repo root; slow on 2 cores, minutes per model at 512x512):
    PYTHONPATH=src python benchmarks/models_cpu.py --out /tmp/models_cpu.md
    PYTHONPATH=src python benchmarks/models_cpu.py --tiny --size 64   # seconds, a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model_step import (
    FAMILIES,
    NUM_CLASSES,
    TINY,
    count_params,
    make_labels,
    make_optimizer,
    train_step,
    zipf_counts,
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args: argparse.Namespace) -> dict:
    from rrseg.models import build_model
    from rrseg.rebalance import RegionRebalance

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    options, opt_kind = {**FAMILIES, **TINY}[args.worker]
    model = build_model(args.worker, NUM_CLASSES, **options)
    model.set_rebalance(RegionRebalance(model.feature_channels, NUM_CLASSES, zipf_counts()))
    model.train()
    optimizer = make_optimizer(model, opt_kind)
    images = torch.randn(args.batch, 3, args.size, args.size)
    labels = make_labels(args.batch, args.size)
    use_rr = args.rr == "on"
    rss_before = _rss_bytes()
    for _ in range(args.warmup):
        train_step(model, optimizer, images, labels, use_rr)
    times, cpu_times = [], []
    for _ in range(args.steps):
        t, c = time.perf_counter(), time.process_time()
        train_step(model, optimizer, images, labels, use_rr)
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    row = {
        "model": args.worker,
        "rr": use_rr,
        "params_m": count_params(model),
        "step_s": statistics.median(times) if times else None,
        "times_s": times,
        "cpu_s": statistics.median(cpu_times) if times else None,  # process CPU time (all threads)
        "cpu_times_s": cpu_times,
        "peak_rss_gib": peak / 2**30,
        "step_mem_gib": (peak - rss_before) / 2**30,
    }
    if use_rr and args.rr_reps:
        row.update(rr_term_cost(model, images, labels, args.rr_reps))
    return row


def rr_term_cost(model, images: torch.Tensor, labels: torch.Tensor, reps: int) -> dict:
    """The RR term alone, forward + backward to the decoder features it reads (fastest of ``reps``): the
    work RR adds to a step, since its feature gradient joins the one backward pass the step makes anyway.
    Short, repeated and on one tensor, it is far less exposed to other load than whole-step timings."""
    out = model(images)
    features = out.features.detach().requires_grad_(True)
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        model.rebalance(features, labels).backward()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        features.grad = None
    return {
        "rr_term_s": min(wall),
        "rr_term_cpu_s": min(cpu),
        "rr_term_times_s": wall,
        "features_shape": list(features.shape),
    }


def run_one(name: str, rr: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--rr", rr, "--size", str(args.size)]
    cmd += ["--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--threads", str(args.threads), "--rr-reps", str(args.rr_reps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"{name} (RR {rr}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu(r: dict) -> str:
    return f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-"


def _ratio(a: dict, b: dict, key: str) -> str:
    return f"{a[key] / b[key]:.3f}" if key in a and key in b else "-"


def to_markdown(rows: list[dict], args: argparse.Namespace) -> str:
    pairs = {}
    for r in rows:
        pairs.setdefault(r["model"], {})[r["rr"]] = r
    if not any(False in d and True in d for d in pairs.values()):
        lines = [
            f"CPU, batch {args.batch} x {args.size}x{args.size}, fp32, {args.threads} threads; "
            f"torch {torch.__version__}."
        ]
        return _rr_term_table(lines, rows, args)
    lines = [
        f"CPU train step, batch {args.batch} x {args.size}x{args.size}, fp32, {args.threads} threads, "
        f"median of {args.steps} timed steps after {args.warmup} warm-up; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs.",
        "",
        "| model | params (M) | step RR off (s) | step RR on (s) | time ratio | CPU s/step off / on "
        "| CPU ratio | peak RSS off / on (GiB) | step memory off / on (GiB) | memory ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d in pairs.items():
        off, on = d.get(False), d.get(True)
        if off is None or on is None:
            continue
        lines.append(
            f"| {name} | {off['params_m']:.1f} | {off['step_s']:.2f} | {on['step_s']:.2f} "
            f"| {on['step_s'] / off['step_s']:.3f} | {_cpu(off)} / {_cpu(on)} | {_ratio(on, off, 'cpu_s')} "
            f"| {off['peak_rss_gib']:.2f} / {on['peak_rss_gib']:.2f} "
            f"| {off['step_mem_gib']:.2f} / {on['step_mem_gib']:.2f} "
            f"| {on['step_mem_gib'] / max(off['step_mem_gib'], 1e-9):.3f} |"
        )
    return _rr_term_table(lines, rows, args)


def _rr_term_table(lines: list[str], rows: list[dict], args: argparse.Namespace) -> str:
    terms = [r for r in rows if "rr_term_s" in r]
    if terms:
        lines += [
            "",
            f"RR term alone (forward + backward to the features it reads, fastest of {args.rr_reps}):",
            "",
            "| model | features | RR term (s) | RR term CPU (s) |",
            "|---|---|---:|---:|",
        ]
        for r in terms:
            shape = "x".join(map(str, r["features_shape"]))
            lines.append(f"| {r['model']} | {shape} | {r['rr_term_s']:.3f} | {r['rr_term_cpu_s']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None, help="model names (default: one per family)")
    p.add_argument("--tiny", action="store_true", help="the tiny test variants instead (smoke test)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    p.add_argument("--json", type=Path, default=None, help="also write the raw rows here")
    p.add_argument("--rr-reps", type=int, default=5, help="repetitions of the RR-term-alone timing")
    p.add_argument("--rr-term-only", action="store_true", help="time only the RR term (no whole steps)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rr", choices=["on", "off"], default="off", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    default = list(TINY) if args.tiny else list(FAMILIES)[:5]  # the five families, base variants
    names = args.models or default
    rows = []
    if args.rr_term_only:
        args.steps = 0
    for name in names:
        for rr in ("on",) if args.rr_term_only else ("off", "on"):
            t = time.time()
            rows.append(run_one(name, rr, args))
            r = rows[-1]
            step = f"{r['step_s']:.2f} s/step, " if r["step_s"] is not None else ""
            term = f"RR term {r['rr_term_s']:.3f} s, " if "rr_term_s" in r else ""
            mem = f"peak RSS {r['peak_rss_gib']:.2f} GiB"
            print(f"{name} RR {rr}: {step}{term}{mem} ({time.time() - t:.0f} s)", file=sys.stderr, flush=True)
    md = to_markdown(rows, args)
    print(md)
    from rrseg.io import atomic_write_json, atomic_write_text

    if args.out:
        atomic_write_text(args.out, md)
    if args.json:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
