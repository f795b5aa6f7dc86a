"""Train-step time and peak GPU memory of each model family with AMP, Region Rebalance off and on.

Run by ``benchmarks/gpu.sh`` (batch 8, 512x512, bf16 autocast, CUDA). Headline: UPerNet + Swin-T step
time and RR overhead. Per model: build with RR attached, warm up (RR on, so its kernels are compiled
too), then time RR off and RR on (median of ``--steps``, CUDA-synchronised), each with its own peak
``max_memory_allocated``. Models start only while ``--budget-s`` is not spent, and the Markdown table is
rewritten after every model, so a cut-short run still leaves its results.

    python benchmarks/gpu_models.py --device cuda                        # what gpu.sh runs
    python benchmarks/gpu_models.py --device cpu --tiny --size 64 --batch 2 --amp none   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import statistics
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

HEADLINE = ("upernet_swin_t", "upernet_swin_tiny")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def bench_model(name: str, args: argparse.Namespace, device: torch.device, amp: torch.dtype | None) -> dict:
    from rrseg.models import build_model

    options, opt_kind = {**FAMILIES, **TINY}[name]
    if args.size != 512 and "img_size" in options:
        options = {**options, "img_size": args.size}
    torch.manual_seed(0)
    t_build = time.perf_counter()
    model = build_model(name, NUM_CLASSES, rebalance={"type": "rr", "counts": zipf_counts()}, **options)
    model = model.to(device).train()
    optimizer = make_optimizer(model, opt_kind)
    build_s = time.perf_counter() - t_build
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = make_labels(args.batch, args.size).to(device)
    for _ in range(args.warmup):
        train_step(model, optimizer, images, labels, True, amp)
    _sync(device)
    result = {"model": name, "params_m": count_params(model), "build_s": build_s}
    for rr in (False, True):
        _reset_peak(device)
        times = []
        for _ in range(args.steps):
            _sync(device)
            t = time.perf_counter()
            loss = train_step(model, optimizer, images, labels, rr, amp)  # .item() inside: synchronises
            _sync(device)
            times.append(time.perf_counter() - t)
        key = "on" if rr else "off"
        result[f"step_ms_{key}"] = 1000 * statistics.median(times)
        result[f"peak_gib_{key}"] = _peak_gib(device)
        result[f"loss_{key}"] = loss
    del model, optimizer, images, labels
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def to_markdown(rows: list[dict], skipped: list[str], args: argparse.Namespace, device: torch.device) -> str:
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    amp = args.amp if args.amp != "none" else "fp32"
    lines = [
        f"Train step, batch {args.batch} x {args.size}x{args.size}, {amp} autocast, {where}, "
        f"torch {torch.__version__}; median of {args.steps} timed steps after {args.warmup} warm-up steps; "
        "RR = Region Rebalance term on.",
        "",
    ]
    head = next((r for r in rows if r["model"] in HEADLINE), None)
    if head:
        over = 100 * (head["step_ms_on"] / head["step_ms_off"] - 1)
        mem = ""
        if head["peak_gib_off"] is not None:
            mem = f", peak memory {head['peak_gib_off']:.2f} -> {head['peak_gib_on']:.2f} GiB"
        lines += [
            f"**Headline ({head['model']}):** {head['step_ms_off']:.0f} ms/step without RR, "
            f"{head['step_ms_on']:.0f} ms/step with RR ({over:+.1f}% time{mem}).",
            "",
        ]
    lines += [
        "| model | params (M) | step RR off (ms) | step RR on (ms) | RR time overhead | peak mem off (GiB) "
        "| peak mem on (GiB) | RR memory overhead |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["peak_gib_off"] is None:
            mem_off = mem_on = mem_over = "n/a"
        else:
            mem_off, mem_on = f"{r['peak_gib_off']:.2f}", f"{r['peak_gib_on']:.2f}"
            mem_over = f"{100 * (r['peak_gib_on'] / r['peak_gib_off'] - 1):+.1f}%"
        lines.append(
            f"| {r['model']} | {r['params_m']:.1f} | {r['step_ms_off']:.0f} | {r['step_ms_on']:.0f} "
            f"| {100 * (r['step_ms_on'] / r['step_ms_off'] - 1):+.1f}% | {mem_off} | {mem_on} | {mem_over} |"
        )
    for name in skipped:
        lines.append(f"| {name} | - | skipped | | | | | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny test variants (smoke test of this script)")
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=150.0, help="start no new model after this many seconds")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here (after every model)")
    args = p.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("CUDA is not available", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[args.amp]
    if amp is torch.float16:
        print("note: fp16 without a GradScaler; prefer bf16", file=sys.stderr)
    names = args.models or list(TINY if args.tiny else FAMILIES)
    start = time.perf_counter()
    rows: list[dict] = []
    skipped: list[str] = []
    for i, name in enumerate(names):
        if time.perf_counter() - start > args.budget_s:
            skipped += names[i:]
            break
        t = time.perf_counter()
        try:
            rows.append(bench_model(name, args, device, amp))
        except torch.OutOfMemoryError:
            skipped.append(f"{name} (out of memory)")
            gc.collect()
            torch.cuda.empty_cache()
            continue
        r = rows[-1]
        print(
            f"{name}: {r['step_ms_off']:.0f} / {r['step_ms_on']:.0f} ms (RR off / on), "
            f"build {r['build_s']:.1f} s, total {time.perf_counter() - t:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if args.out:
            from rrseg.io import atomic_write_text

            atomic_write_text(args.out, to_markdown(rows, [], args, device))
    md = to_markdown(rows, skipped, args, device)
    print(md)
    if args.out:
        from rrseg.io import atomic_write_text

        atomic_write_text(args.out, md)
    print(f"total {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
