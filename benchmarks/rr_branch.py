"""RR's branch alone, forward + backward: the released path, today's path and the new path, side by side.

The branch reads the tensor that feeds the pixel classifier (UPerNet's 512 channels at stride 4: [8, 512,
128, 128] for a batch of 8 x 512x512) and the labels (Voronoi-like maps, ~12 classes per image, 5 %
ignored). Values do not change the cost, so the features are random. Three paths, same layers:

  released  the released code: upsample the reduced features to the label size, a pixels x classes one-hot,
            matmul (``rr_overhead.released_rr_loss``); batch pooling only
  today     the present-regions path as ``RegionRebalance`` ran it before the static-shape rewrite: the
            ``region_pool`` of that version (K present regions, data-dependent shapes, host syncs; frozen in
            ``_previous_region_pool.py``) + the branch layers
            (``todays_rr_loss`` below, a copy of that ``region_logits`` / ``forward``)
  table     ``RegionRebalance`` with ``slots=None``: a row for every class (C x B x h x w floats)
  new       ``rrseg.rebalance.RegionRebalance.forward`` itself, whatever this checkout's version is (its default
            ``slots``: the rows filled from the regions present)

Per path: median wall time of ``--reps`` forward + backward passes (to the features) after ``--warmup``,
synchronised, and the peak memory it adds over its inputs (CUDA). 150 classes (ADE20K) and 847 (ADE20K-Full),
batch and per-image pooling, each autocast dtype. ``--same-labels``: every class count on the same label maps
(drawn from the fewest classes), so that a row's cost differs from another's by the class count alone.

    python benchmarks/rr_branch.py --device cuda                                    # what gpu.sh runs
    python benchmarks/rr_branch.py --device cpu --batch 2 --size 64 --channels 32 --reps 2   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model_step import make_labels, zipf_counts
from _previous_region_pool import previous_region_pool
from rr_overhead import released_rr_loss

from rrseg.rebalance import ClassCounts, RegionRebalance

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


class BranchLayers(nn.Module):
    """RR's layers as ``RegionRebalance`` builds them with default options (reduce 1x1 conv + BN, gain,
    dropout, classifier, region log prior), held here so that the released and today's paths do not
    depend on the attribute names of whatever ``RegionRebalance`` this checkout has."""

    def __init__(self, in_channels: int, num_classes: int, counts: list[int], per_image: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.smooth = 0.5
        self.loss_weight = 1.0
        self.ignore_index = 255
        self.per_image = per_image
        self.align_corners = True
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, 128, kernel_size=1, bias=False), nn.BatchNorm2d(128))
        self.gain = nn.Sequential(nn.Linear(128, 512), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(512, num_classes)
        for p in self.parameters():
            p.requires_grad_(False)  # frozen, as released
        self.register_buffer("log_prior", ClassCounts.load(counts, num_classes).log_prior("region"))


def todays_rr_loss(rr: BranchLayers, features: Tensor, labels: Tensor) -> Tensor:
    """Today's ``RegionRebalance.region_logits`` + ``forward`` (default options, no ETF), through ``region_pool``."""
    b, _, h, w = features.shape
    conv, bn = rr.reduce
    if not torch.is_autocast_enabled(features.device.type):
        features = features.to(conv.weight.dtype)
    reduced = bn(torch.matmul(conv.weight.flatten(1), features.flatten(2)).view(b, -1, h, w))
    regions = previous_region_pool(reduced, labels, rr.num_classes, rr.ignore_index, rr.per_image,
                                   rr.align_corners)
    logits = rr.classifier(rr.dropout(rr.gain(regions.features)))
    logits = logits + rr.log_prior.to(logits.dtype)
    if regions.labels.numel() == 0:
        return features.sum() * 0.0
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    target = torch.full_like(logits, (1.0 - rr.smooth) / (rr.num_classes - 1))
    target.scatter_(1, regions.labels.unsqueeze(1), rr.smooth)
    return rr.loss_weight * -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_path(
    fn: Callable[[Tensor, Tensor], Tensor], feats: Tensor, labels: Tensor, amp: torch.dtype | None,
    args: argparse.Namespace,
) -> tuple[float, float | None]:
    """(median ms of forward + backward, peak MiB added over the inputs or None off CUDA)."""
    device = feats.device
    samples = []
    peak = None
    for i in range(args.warmup + args.reps):
        feats.grad = None
        _sync(device)
        if device.type == "cuda":
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = fn(feats, labels)
        loss.backward()
        _sync(device)
        if i >= args.warmup:
            samples.append(time.perf_counter() - t)
            if device.type == "cuda":
                extra = (torch.cuda.max_memory_allocated(device) - before) / 2**20
                peak = max(peak or 0.0, extra)
    return 1000 * statistics.median(samples), peak


def bench_case(args: argparse.Namespace, device: torch.device, amp_name: str, classes: int, per_image: bool) -> dict:
    torch.manual_seed(0)
    amp = AMP[amp_name]
    h = args.size // args.stride
    counts = zipf_counts(classes)
    feats = torch.randn(args.batch, args.channels, h, h, device=device, requires_grad=True)
    drawn_from = min(args.classes) if args.same_labels else classes
    labels = make_labels(args.batch, args.size, num_classes=drawn_from).to(device)
    layers = BranchLayers(args.channels, classes, counts, per_image).to(device).train()
    table = RegionRebalance(args.channels, classes, counts, per_image=per_image, slots=None).to(device).train()
    new = RegionRebalance(args.channels, classes, counts, per_image=per_image).to(device).train()
    paths: dict[str, Callable[[Tensor, Tensor], Tensor] | None] = {
        "released": None if per_image else (lambda f, y: released_rr_loss(layers, f, y)),
        "today": lambda f, y: todays_rr_loss(layers, f, y),
        "table": lambda f, y: table(f, y),
        "new": lambda f, y: new(f, y),
    }
    row: dict = {"amp": amp_name, "classes": classes, "pooling": "per image" if per_image else "batch",
                 "features": list(feats.shape), "labels": list(labels.shape)}
    for name, fn in paths.items():
        if fn is None:
            row[name] = "n/a (batch pooling only)"
            continue
        try:
            ms, mib = time_path(fn, feats, labels, amp, args)
            row[name] = {"ms": ms, "peak_mib": mib}
        except torch.OutOfMemoryError:
            row[name] = "out of memory"
        except Exception as e:  # a path that breaks must not hide the others' figures
            row[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _cell(v: dict | str) -> str:
    if isinstance(v, str):
        return v
    mem = f", +{v['peak_mib']:.0f} MiB" if v["peak_mib"] is not None else ""
    return f"{v['ms']:.2f} ms{mem}"


def to_markdown(rows: list[dict], args: argparse.Namespace, device: torch.device) -> str:
    where = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    shape = rows[0]["features"] if rows else []
    lines = [
        f"RR branch alone, forward + backward to the features {shape} (labels {args.batch} x {args.size}x"
        f"{args.size}, ~12 classes per image, 5 % ignored), {where}, torch {torch.__version__}; median of "
        f"{args.reps} after {args.warmup} warm-up; memory = peak added over the inputs. released = upsample + "
        "one-hot; today = present regions through the previous `region_pool` (host syncs, data-dependent "
        "shapes); table = `RegionRebalance(slots=None)`, a row per class; new = "
        "`RegionRebalance.forward` of this checkout (its default slots)"
        + (f"; every class count on the same labels (drawn from {min(args.classes)} classes)."
           if args.same_labels else "."),
        "",
        "| autocast | classes | pooling | released | today | table | new | speed-up, new over today |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = ""
        if isinstance(r["today"], dict) and isinstance(r["new"], dict):
            ratio = f"{r['today']['ms'] / r['new']['ms']:.2f}x"
        lines.append(f"| {r['amp']} | {r['classes']} | {r['pooling']} | {_cell(r['released'])} "
                     f"| {_cell(r['today'])} | {_cell(r.get('table', 'n/a'))} | {_cell(r['new'])} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=512, help="label size (square)")
    p.add_argument("--channels", type=int, default=512, help="feature channels (UPerNet: 512)")
    p.add_argument("--stride", type=int, default=4, help="feature stride (UPerNet: 4)")
    p.add_argument("--classes", type=int, nargs="+", default=[150, 847])
    p.add_argument("--amp", nargs="+", choices=list(AMP), default=["bf16", "fp16"])
    p.add_argument("--same-labels", action="store_true", help="every class count on the same label maps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="Markdown table (rewritten after every case)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:  # glibc's malloc as rrseg's trainer sets it on the CPU (every path runs in this one process)
        from rrseg.allocator import tune_malloc

        tune_malloc()
    from rrseg.io import atomic_write_text

    # the first dtype gets every class count and both poolings; the others the headline case only
    cases = [(args.amp[0], c, per) for c in args.classes for per in (False, True)]
    cases += [(a, args.classes[0], False) for a in args.amp[1:]]
    rows: list[dict] = []
    start = time.perf_counter()
    for amp_name, classes, per_image in cases:
        t = time.perf_counter()
        rows.append(bench_case(args, device, amp_name, classes, per_image))
        print(f"{amp_name} C={classes} per_image={per_image}: {time.perf_counter() - t:.1f} s", file=sys.stderr,
              flush=True)
        md = to_markdown(rows, args, device)
        if args.out:
            atomic_write_text(args.out, md)
        if args.json:
            atomic_write_text(args.json, json.dumps(rows, indent=1))
    print(md)
    print(f"total {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
