"""Host synchronisations on the training and evaluation paths, checked on the device itself.

On CUDA each call runs under ``torch.cuda.set_sync_debug_mode("error")``, which raises at the first operation
that makes the host wait for the GPU (``.item()``, ``nonzero``, a device-to-host copy, ...). Off CUDA (the
dry run) a dispatch-level spy flags the same kinds of operations. Checked:

  ConfusionMatrix.update      the evaluation loop's accumulator (default options off the CPU); also equal to
                              the CPU result
  RegionRebalance             RR's training path, forward + backward, batch and per-image pooling
  today's RR path             region_pool's present-regions path (rr_branch.todays_rr_loss): it does sync,
                              so this row shows the check can fail

    python benchmarks/gpu_checks.py --device cuda --out checks.md --json checks.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model_step import make_labels, zipf_counts
from rr_branch import BranchLayers, todays_rr_loss

from rrseg.metrics import ConfusionMatrix
from rrseg.rebalance import RegionRebalance

_SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "bincount", "unique",
            "_unique2", "unique_consecutive", "repeat_interleave"}


class _Spy(TorchDispatchMode):
    """Off CUDA: raise at the first ATen op that would synchronise a GPU's host."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        bool_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] if i is not None
        )
        if name in _SYNCING or bool_index:
            raise RuntimeError(f"host sync: {func}")
        return func(*args, **(kwargs or {}))


def no_sync(fn: Callable[[], object], device: torch.device) -> str:
    """'none' when ``fn`` ran without a host synchronisation, else the first one found."""
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize(device)
        else:
            with _Spy():
                fn()
    except RuntimeError as e:
        return "**sync**: " + str(e).strip().splitlines()[0][:150]
    return "none"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows: list[dict] = []

    # the evaluation accumulator, as Evaluator.confusion() builds it on the device
    c = 150
    label = make_labels(4, 128).to(device)
    pred = torch.randint(0, c, label.shape).to(device)
    cm = ConfusionMatrix(c, device=device, validate_args=None if device.type == "cuda" else False)
    ref = ConfusionMatrix(c)  # CPU, checked path
    ref.update(pred.cpu(), label.cpu())
    sync = no_sync(lambda: cm.update(pred, label), device)
    equal = torch.equal(cm.mat.cpu(), ref.mat) if sync == "none" else None
    rows.append({"what": "ConfusionMatrix.update (150 classes, 4 x 128^2)", "sync": sync,
                 "check": {True: "equal to the CPU result", False: "**differs from the CPU result**",
                           None: ""}[equal]})

    # RR's training path: forward + backward to the features
    feats = torch.randn(2, 64, 32, 32, device=device)
    labels = make_labels(2, 128).to(device)
    for per_image in (False, True):
        rr = RegionRebalance(64, c, zipf_counts(), per_image=per_image).to(device).train()
        f = feats.clone().requires_grad_(True)
        rr(f, labels)  # warm-up outside the check (lazy initialisation may synchronise once)

        def step(rr=rr, f=f) -> None:
            rr(f, labels).backward()

        rows.append({"what": f"RegionRebalance forward + backward ({'per-image' if per_image else 'batch'} pooling)",
                     "sync": no_sync(step, device), "check": ""})
    layers = BranchLayers(64, c, zipf_counts()).to(device).train()
    f = feats.clone().requires_grad_(True)
    rows.append({"what": "previous path (present regions, `_previous_region_pool.py`), for reference",
                 "sync": no_sync(lambda: todays_rr_loss(layers, f, labels).backward(), device),
                 "check": "expected to sync"})

    how = ("`torch.cuda.set_sync_debug_mode(\"error\")`" if device.type == "cuda"
           else "a dispatch spy (no CUDA here)")
    lines = [f"Host synchronisations, found with {how}; torch {torch.__version__}.", "",
             "| path | host sync | note |", "|---|---|---|"]
    lines += [f"| {r['what']} | {r['sync']} | {r['check']} |" for r in rows]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        args.out.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
