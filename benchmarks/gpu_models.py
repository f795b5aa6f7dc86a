"""Train-step time and peak GPU memory of each model family with AMP, Region Rebalance off and on.

Run by ``benchmarks/gpu.sh`` (batch 8, 512x512 (BEiT 640x640), bf16 and fp16 autocast, CUDA). Headline:
UPerNet + Swin-T step time and RR overhead. One pass per (dtype, model), dtype-major: build the model
(with RR attached) directly on the device, warm up (RR on, so its kernels are tuned too), then time RR off
and RR on interleaved step by step (so drift hits both alike; median of ``--steps`` each, CUDA-synchronised),
each step with its own peak ``max_memory_allocated`` (the maximum over a variant's steps is reported). fp16
steps use a GradScaler, as the trainer does. A pass starts only while ``--budget-s`` is not spent, and the
Markdown table (and ``--json``) is rewritten after every pass, so a cut-short run still leaves its results.

    python benchmarks/gpu_models.py --device cuda --amp bf16 fp16         # what gpu.sh runs
    python benchmarks/gpu_models.py --device cpu --tiny --size 64 --beit-size 64 --batch 2 --amp none   # smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
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

HEADLINE = ("upernet_swin_t", "upernet_swin_tiny")
# The headline first, then the families never measured on a GPU before, the largest last: a run cut short by
# its time budget loses the least.
GPU_ORDER = ["upernet_swin_t", "upernet_convnext_t", "upernet_swin_b", "upernet_beit_b", "deeplabv3plus_r50",
             "ocrnet_hr48", "upernet_beit_l"]
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def image_size(name: str, args: argparse.Namespace) -> int:
    """BEiT's paper setting is 640x640; every other family 512x512."""
    return args.beit_size if "beit" in name else args.size


def _build(name: str, options: dict, device: torch.device) -> torch.nn.Module:
    """The model with RR attached, built directly on ``device`` (initialising BEiT-L's ~440M parameters on the
    host takes many seconds); on the host instead if building under the device fails."""
    from rrseg.models import build_model
    from rrseg.rebalance import RegionRebalance

    def build() -> torch.nn.Module:
        model = build_model(name, NUM_CLASSES, **options)
        model.set_rebalance(RegionRebalance(model.feature_channels, NUM_CLASSES, zipf_counts()))
        return model

    try:
        with torch.device(device):
            return build().to(device)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # a one-shot GPU run must not lose a model to this optimisation
        print(f"{name}: building on {device} failed ({type(e).__name__}: {e}); building on the host",
              file=sys.stderr, flush=True)
        return build().to(device)


def bench_pass(name: str, amp_name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Build ``name`` (RR attached), warm up, time RR off / on interleaved under one autocast dtype."""
    options, opt_kind = {**FAMILIES, **TINY}[name]
    size = image_size(name, args)
    if "img_size" in options:
        options = {**options, "img_size": size}
    torch.manual_seed(0)
    t_pass = time.perf_counter()
    model = optimizer = images = labels = None
    try:
        model = _build(name, options, device).train()
        optimizer = make_optimizer(model, opt_kind)
        row = {"model": name, "amp": amp_name, "size": size, "params_m": count_params(model),
               "build_s": time.perf_counter() - t_pass}
        images = torch.randn(args.batch, 3, size, size, device=device)
        labels = make_labels(args.batch, size).to(device)
        amp = AMP[amp_name]
        scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 else None  # as the trainer
        for _ in range(args.warmup):  # RR on, so that its kernels are tuned too
            train_step(model, optimizer, images, labels, True, amp, scaler)
        _sync(device)
        times: dict[bool, list[float]] = {False: [], True: []}
        peaks: dict[bool, float | None] = {False: None, True: None}
        losses: dict[bool, float] = {}
        for i in range(args.steps):
            for rr in (False, True) if i % 2 == 0 else (True, False):
                _reset_peak(device)
                _sync(device)
                t = time.perf_counter()
                losses[rr] = train_step(model, optimizer, images, labels, rr, amp, scaler)  # syncs (.item)
                _sync(device)
                times[rr].append(time.perf_counter() - t)
                peak = _peak_gib(device)
                if peak is not None:
                    peaks[rr] = max(peaks[rr] or 0.0, peak)
        return {
            **row, "pass_s": time.perf_counter() - t_pass,
            "step_ms_off": 1000 * statistics.median(times[False]),
            "step_ms_on": 1000 * statistics.median(times[True]),
            "peak_gib_off": peaks[False], "peak_gib_on": peaks[True],
            "loss_off": losses[False], "loss_on": losses[True],
        }
    finally:
        del model, optimizer, images, labels
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _where(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return f"CPU, {torch.get_num_threads()} threads"


def to_markdown(rows: list[dict], args: argparse.Namespace, device: torch.device) -> str:
    sizes = f"{args.size}x{args.size} ({args.beit_size}x{args.beit_size} for BEiT)"
    lines = [
        f"Train step, batch {args.batch} x {sizes}, {_where(device)}, torch {torch.__version__}; median of "
        f"{args.steps} timed steps per variant (RR off and on interleaved) after {args.warmup} warm-up steps; "
        "peak = the largest `max_memory_allocated` of a variant's steps; RR = Region Rebalance term on; "
        "fp16 with a GradScaler.",
        "",
    ]
    for amp in dict.fromkeys(r["amp"] for r in rows):
        amp_rows = [r for r in rows if r["amp"] == amp]
        lines += [f"**{amp if amp != 'none' else 'fp32'} autocast**", ""]
        head = next((r for r in amp_rows if r["model"] in HEADLINE and "skipped" not in r), None)
        if head:
            over = 100 * (head["step_ms_on"] / head["step_ms_off"] - 1)
            mem = ""
            if head["peak_gib_off"] is not None:
                mem_over = 100 * (head["peak_gib_on"] / head["peak_gib_off"] - 1)
                mem = f", peak memory {head['peak_gib_off']:.2f} -> {head['peak_gib_on']:.2f} GiB ({mem_over:+.1f}%)"
            lines += [
                f"Headline ({head['model']}): {head['step_ms_off']:.0f} ms/step without RR, "
                f"{head['step_ms_on']:.0f} ms/step with RR ({over:+.1f}% time{mem}).",
                "",
            ]
        lines += [
            "| model | image | params (M) | step RR off (ms) | step RR on (ms) | RR time overhead "
            "| peak mem off (GiB) | peak mem on (GiB) | RR memory overhead |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in amp_rows:
            if "skipped" in r:
                lines.append(f"| {r['model']} | {r['size']} | {r['params_m']:.1f} | {r['skipped']} | | | | | |")
                continue
            if r["peak_gib_off"] is None:
                mem_off = mem_on = mem_over = "n/a"
            else:
                mem_off, mem_on = f"{r['peak_gib_off']:.2f}", f"{r['peak_gib_on']:.2f}"
                mem_over = f"{100 * (r['peak_gib_on'] / r['peak_gib_off'] - 1):+.1f}%"
            lines.append(
                f"| {r['model']} | {r['size']} | {r['params_m']:.1f} | {r['step_ms_off']:.1f} "
                f"| {r['step_ms_on']:.1f} | {100 * (r['step_ms_on'] / r['step_ms_off'] - 1):+.1f}% "
                f"| {mem_off} | {mem_on} | {mem_over} |"
            )
        lines.append("")
    return "\n".join(lines)


def _write(args: argparse.Namespace, rows: list[dict], device: torch.device) -> str:
    from rrseg.io import atomic_write_text

    md = to_markdown(rows, args, device)
    if args.out:
        atomic_write_text(args.out, md)
    if args.json:
        atomic_write_text(args.json, json.dumps({"device": _where(device), "batch": args.batch, "rows": rows},
                                                indent=1))
    return md


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny test variants (smoke test of this script)")
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--beit-size", type=int, default=640, help="image size of the BEiT models")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--amp", nargs="+", choices=list(AMP), default=["bf16"], help="autocast dtypes, in order")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="start no new (model, dtype) pass after this many seconds")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here (after every pass)")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON here (after every pass)")
    args = p.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("CUDA is not available", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    names = args.models or (list(TINY) if args.tiny else GPU_ORDER)
    start = time.perf_counter()
    rows: list[dict] = []
    # dtype-major: every family gets the first dtype before any gets the second, so a run cut short by its
    # budget loses fp16 rows of the last families first (a pass builds its model: seconds on the device)
    for amp_name in args.amp:
        for name in names:
            skip = {"model": name, "amp": amp_name, "size": image_size(name, args), "params_m": float("nan")}
            if time.perf_counter() - start > args.budget_s:
                rows.append({**skip, "skipped": "not started: time budget spent"})
                continue
            try:
                r = bench_pass(name, amp_name, args, device)
            except Exception as e:  # out of memory, or a failure of this model / dtype: the others still run
                traceback.print_exc()
                what = "out of memory" if isinstance(e, torch.OutOfMemoryError) else f"error: {type(e).__name__}"
                rows.append({**skip, "skipped": what})
                _write(args, rows, device)
                continue
            rows.append(r)
            _write(args, rows, device)
            print(f"{name} {amp_name}: {r['step_ms_off']:.1f} / {r['step_ms_on']:.1f} ms (RR off / on), "
                  f"build {r['build_s']:.1f} s, pass {r['pass_s']:.1f} s", file=sys.stderr, flush=True)
    md = _write(args, rows, device)
    print(md)
    print(f"total {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0 if any("skipped" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
