"""RR overhead at paper settings: the released path and the rrseg path, each against one training step.

Model: smp UPerNet with a timm ConvNeXt-T encoder (no pretrained weights), 150 classes, batch 2 at 512x512,
decoder width 512 (mmseg's UPerNet) and smp's default 256. The RR input is the tensor that feeds smp's
``segmentation_head`` (stride 4), captured with a forward hook.

Three variants are timed interleaved, step by step, in one process (the machine is noisy):
  base       pixel CE only
  released   + RR as released: upsample the reduced features to 512x512, pixels x classes one-hot, matmul
  rrseg      + RR with rrseg.rebalance.RegionRebalance (adjoint pooling)
The RR branch is also timed on its own (forward + backward on the captured features), which is less noisy
than a difference of step times. Peak memory: each variant runs in a fresh subprocess and reports its
peak RSS (CPU) or torch.cuda.max_memory_allocated (CUDA).

  python benchmarks/rr_overhead.py                      # CPU, both decoder widths
  python benchmarks/rr_overhead.py --device cuda --batch 8 --amp
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rrseg.rebalance import RegionRebalance


def released_rr_loss(rr: RegionRebalance, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The released computation (UPerHead_cecol): upsample, one-hot over all classes, mean, classify."""
    reduced = rr.reduce(features)
    up = F.interpolate(reduced, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    d = up.shape[1]
    pix = up.permute(0, 2, 3, 1).reshape(-1, d)
    flat = labels.reshape(-1)
    keep = flat != 255
    pix, flat = pix[keep], flat[keep]
    onehot = F.one_hot(flat, rr.num_classes).to(pix.dtype)  # [pixels, C]
    n = onehot.sum(0)
    present = n > 0
    centers = (onehot.T @ pix)[present] / n[present].unsqueeze(1)
    region_labels = present.nonzero().squeeze(1)
    logits = rr.classifier(rr.dropout(rr.gain(centers))).float() + rr.log_prior
    target = torch.full_like(logits, (1 - rr.smooth) / (rr.num_classes - 1))
    target[torch.arange(len(region_labels)), region_labels] = rr.smooth
    return rr.loss_weight * -(target * F.log_softmax(logits, 1)).sum(1).mean()


def build(decoder_channels: int, device: str):
    import segmentation_models_pytorch as smp

    model = smp.UPerNet("tu-convnext_tiny", encoder_weights=None, classes=150, decoder_channels=decoder_channels)
    captured = {}
    model.segmentation_head.register_forward_hook(lambda m, inp, out: captured.__setitem__("f", inp[0]))
    counts = torch.randint(41, 11588, (150,)).tolist()
    rr = RegionRebalance(decoder_channels, 150, counts)
    return model.to(device).train(), rr.to(device).train(), captured


def make_step(model, rr, captured, variant: str, opt, amp: bool, device: str):
    def step(x, y):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
            loss = F.cross_entropy(out.float(), y, ignore_index=255)
            if variant == "released":
                loss = loss + released_rr_loss(rr, captured["f"], y)
            elif variant == "rrseg":
                loss = loss + rr(captured["f"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def batch(b: int, size: int, device: str):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, size, size, generator=gen)
    # blocky labels with ~10 classes per image, like real scenes (not i.i.d. noise)
    coarse = torch.randint(0, 150, (b, 1, size // 32, size // 32), generator=gen).float()
    y = F.interpolate(coarse, size=(size, size), mode="nearest").long()[:, 0]
    return x.to(device), y.to(device)


def time_branch(loss_fn, rr, feats, labels, args) -> float:
    """Median seconds of forward + backward of the RR branch alone, after one warm-up."""
    samples = []
    for _ in range(args.branch_reps + 1):
        sync(args.device)
        t = time.perf_counter()
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.amp):
            loss = loss_fn(rr, feats, labels)
        loss.backward()
        sync(args.device)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples[1:])


def peak_memory(args, variant: str) -> float:
    """Peak memory (MiB) of a fresh process running two steps of ``variant``."""
    cmd = [sys.executable, __file__, "--_memory", variant, "--device", args.device, "--batch", str(args.batch),
           "--size", str(args.size), "--decoder", str(args._decoder)] + (["--amp"] if args.amp else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def memory_child(args) -> None:
    model, rr, captured = build(args.decoder[0] if isinstance(args.decoder, list) else args.decoder, args.device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    step = make_step(model, rr, captured, args._memory, opt, args.amp, args.device)
    x, y = batch(args.batch, args.size, args.device)
    # ru_maxrss survives fork + exec (a child reports its parent's peak); /proc's VmHWM can be reset
    reset = Path("/proc/self/clear_refs")
    if args.device == "cpu" and reset.exists():
        reset.write_text("5")
    for _ in range(2):
        step(x, y)
    sync(args.device)
    if args.device == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
    elif reset.exists():
        hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
        print(int(hwm.split()[1]) / 1024)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--decoder", type=int, nargs="+", default=[512, 256])
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    p.add_argument("--branch-reps", type=int, default=5, help="repetitions of the branch-only timing")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-only", action="store_true", help="peak memory only (no timing)")
    p.add_argument("--json", help="write results here")
    p.add_argument("--_memory", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._memory:
        args.decoder = args.decoder[0]
        memory_child(args)
        return

    torch.manual_seed(0)
    results = []
    if args.memory_only:
        for channels in args.decoder:
            args._decoder = channels
            mem = {v: peak_memory(args, v) for v in ("base", "released", "rrseg")}
            print(f"decoder {channels}: peak MiB " + ", ".join(f"{v} {m:.0f}" for v, m in mem.items())
                  + f"; released {100 * (mem['released'] / mem['base'] - 1):+.1f} %, "
                  f"rrseg {100 * (mem['rrseg'] / mem['base'] - 1):+.1f} %", flush=True)
        return
    for channels in args.decoder:
        model, rr, captured = build(channels, args.device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x, y = batch(args.batch, args.size, args.device)
        variants = ("base", "released", "rrseg")
        steps = {v: make_step(model, rr, captured, v, opt, args.amp, args.device) for v in variants}
        times = {v: [] for v in variants}
        for i in range(args.steps + 1):
            for v in variants:  # interleaved, so drift in machine load hits all variants alike
                sync(args.device)
                t = time.perf_counter()
                steps[v](x, y)
                sync(args.device)
                if i:
                    times[v].append(time.perf_counter() - t)

        # the branch alone, on the features of the last step (detached leaf, so only the branch runs)
        feats = captured["f"].detach().requires_grad_(True)
        branch = {
            "released": time_branch(released_rr_loss, rr, feats, y, args),
            "rrseg": time_branch(lambda m, f, t: m(f, t), rr, feats, y, args),
        }
        base = statistics.median(times["base"])
        row = {
            "decoder_channels": channels,
            "step_base_s": base,
            "step_released_s": statistics.median(times["released"]),
            "step_rrseg_s": statistics.median(times["rrseg"]),
            "branch_released_s": branch["released"],
            "branch_rrseg_s": branch["rrseg"],
            "branch_released_frac": branch["released"] / base,
            "branch_rrseg_frac": branch["rrseg"] / base,
            "speedup_branch": branch["released"] / branch["rrseg"],
        }
        if not args.no_memory:
            args._decoder = channels
            mem = {v: peak_memory(args, v) for v in variants}
            row.update({f"peak_mib_{v}": m for v, m in mem.items()})
            row["mem_extra_released"] = mem["released"] / mem["base"] - 1
            row["mem_extra_rrseg"] = mem["rrseg"] / mem["base"] - 1
        results.append(row)
        print(json.dumps(row, indent=1), flush=True)
        del model, rr, opt

    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nRR overhead, smp UPerNet ConvNeXt-T, batch {args.batch} x {args.size}^2, 150 classes, {dev}, "
          f"torch {torch.__version__}{', bf16 autocast' if args.amp else ''}")
    print("| decoder ch | step (s) | released branch | rrseg branch | branch speed-up | step +released | "
          "step +rrseg | peak mem +released | peak mem +rrseg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        mem_r = f"{100 * r['mem_extra_released']:+.1f} %" if "mem_extra_released" in r else "n/a"
        mem_f = f"{100 * r['mem_extra_rrseg']:+.1f} %" if "mem_extra_rrseg" in r else "n/a"
        print(f"| {r['decoder_channels']} | {r['step_base_s']:.3f} | {r['branch_released_s']:.3f} s "
              f"({100 * r['branch_released_frac']:.1f} %) | {r['branch_rrseg_s']:.3f} s "
              f"({100 * r['branch_rrseg_frac']:.2f} %) | {r['speedup_branch']:.1f}x | "
              f"{100 * (r['step_released_s'] / r['step_base_s'] - 1):+.1f} % | "
              f"{100 * (r['step_rrseg_s'] / r['step_base_s'] - 1):+.1f} % | {mem_r} | {mem_f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
