"""A real ``rrseg train`` through torchrun on synthetic data: the launch, process-group, SyncBN and AMP paths.

Writes a small dataset with ``rrseg make-synthetic``, then runs
``torchrun --standalone --nproc_per_node=N -m rrseg train configs/demo.yaml --set ...`` with UPerNet +
Swin-T, Region Rebalance on, ``train.sync_bn=true`` and fp16 autocast (GradScaler) for 20 iterations at
batch 8 of 128x128 crops, then the final evaluation, checkpoint and report. The table comes from the run's
``log.jsonl``: world size, what rrseg's distributed set-up does at that size, seconds per iteration per
logging window (the last one is warm), final loss and mIoU, wall time.

Note: rrseg starts a process group (NCCL on CUDA) and converts to SyncBatchNorm only when the world size is
above 1, and PyTorch's SyncBatchNorm falls back to plain BatchNorm in a one-process group anyway, so with
one GPU this exercises torchrun, the trainer on CUDA and fp16, but not NCCL or SyncBN (that needs 2+ GPUs).

    python benchmarks/gpu_train.py --work /tmp/rrseg_gpu/train --out train.md            # GPU: all GPUs
    python benchmarks/gpu_train.py --work /tmp/t --out train.md --dry-run                # CPU: 2 ranks, gloo
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GPU = {"model": "upernet_swin_t", "size": 128, "train": 64, "val": 16, "batch": 8, "iters": 20, "log": 10,
       "amp": "fp16", "sync_bn": True, "workers": 4, "device": "cuda"}
DRY = {"model": "upernet_swin_tiny", "size": 64, "train": 8, "val": 4, "batch": 2, "iters": 4, "log": 2,
       "amp": "none", "sync_bn": False, "workers": 0, "device": "cpu"}


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def run(args: argparse.Namespace) -> dict:
    s = DRY if args.dry_run else GPU
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                       if p)}
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    result: dict = {"settings": s, "nproc": args.nproc}

    def left() -> float:
        return args.deadline_s - (time.perf_counter() - start)

    data = work / "synthetic"
    cmd = [sys.executable, "-m", "rrseg", "make-synthetic", str(data), "--classes", "30", "--train", str(s["train"]),
           "--val", str(s["val"]), "--size", str(s["size"]), "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=max(5.0, left()))
    result["data_s"] = time.perf_counter() - start
    if proc.returncode:
        result["error"] = "make-synthetic failed:\n" + _tail(proc.stderr)
        return result

    run_dir = work / "run"
    sets = [
        # the demo config's pretrained backbone (rrseg:demo_small_backbone) is its own model's, not this one's
        f"model.name={s['model']}", f"model.options={{img_size: {s['size']}}}", "model.pretrained=none",
        f"data.train.root={data}", f"data.val.root={data}", f"data.batch_size={s['batch']}",
        f"data.crop_size=[{s['size']},{s['size']}]", f"data.scale=[{s['size']},{s['size']}]",
        f"data.workers={s['workers']}", f"schedule.iters={s['iters']}", "schedule.warmup_iters=5",
        "loss.region.type=rr", f"train.amp={s['amp']}", f"train.sync_bn={str(s['sync_bn']).lower()}",
        f"train.log_interval={s['log']}", "train.progress=false", "train.tensorboard=false",
        f"eval.batch_size={s['batch']}", "eval.interval=0",
        "model.pretrained=none",  # the demo config's pretrained backbone is the demo model's, not this one's
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "rrseg", "train", str(ROOT / "configs" / "demo.yaml"), "--device", s["device"],
           "--work-dir", str(run_dir), "--set", *sets]
    result["command"] = shlex.join(["torchrun", *cmd[3:]]).replace(str(ROOT) + "/", "")
    t = time.perf_counter()
    # same process group as this script, so that gpu.sh's `timeout` reaches the ranks too; on our own
    # deadline SIGTERM lets torchrun stop its ranks (a SIGKILL would orphan them)
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        output, _ = launcher.communicate(timeout=max(5.0, left() - 10))
        result["rc"] = launcher.returncode
    except subprocess.TimeoutExpired:
        launcher.send_signal(signal.SIGTERM)
        try:
            output, _ = launcher.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            launcher.kill()
            output, _ = launcher.communicate()
        result["rc"] = f"stopped at the {args.deadline_s:.0f} s deadline"
    result["train_s"] = time.perf_counter() - t
    if result["rc"] != 0:
        result["error"] = f"torchrun rc={result['rc']}:\n" + _tail(output, 15)
    log = run_dir / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    start_rec = next((r for r in records if r.get("event") == "start"), {})
    world = start_rec.get("world_size")
    result["world_size"] = world
    result["windows"] = [(r["iteration"], r["sec_per_iter"]) for r in records if r.get("event") == "train"]
    trains = [r for r in records if r.get("event") == "train"]
    result["loss"] = trains[-1]["loss"] if trains else None
    evals = [r for r in records if r.get("event") == "eval"]
    result["mIoU"] = evals[-1].get("mIoU") if evals else None
    result["ended"] = any(r.get("event") == "end" for r in records)
    return result


def to_markdown(r: dict, dry_run: bool) -> str:
    s = r["settings"]
    world = r.get("world_size")
    device = s["device"]
    if world is None:
        group = sync_bn = "unknown (no start record)"
    elif world > 1:
        group = "NCCL" if device == "cuda" else "gloo"
        sync_bn = "on (converted)" if s["sync_bn"] and device == "cuda" else "off"
    else:
        group = "none: one process (rrseg starts a process group only for world size > 1)"
        sync_bn = "not converted at world size 1 (needs 2+ GPUs)"
    windows = ", ".join(f"{w[1]:.3f} (to it. {w[0]})" for w in r.get("windows", [])) or "-"
    loss = f"{r['loss']:.3f}" if r.get("loss") is not None else "-"
    miou = f"{r['mIoU']:.3f}" if r.get("mIoU") is not None else "-"
    status = "completed" if r.get("ended") and not r.get("error") else "FAILED"
    lines = [
        f"`rrseg train` through torchrun ({'dry run, CPU' if dry_run else device}): {s['model']}, RR on, "
        f"{s['iters']} iterations at batch {s['batch']} x {s['size']}x{s['size']} per rank, amp {s['amp']}, "
        f"train.sync_bn={str(s['sync_bn']).lower()}, synthetic data ({s['train']} + {s['val']} images, 30 "
        "classes); then the final evaluation, checkpoint and report.",
        "",
        "| ranks (nproc) | world size | process group | SyncBN | s/iter per log window | final loss | mIoU "
        "| data (s) | train wall (s) | result |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---|",
        f"| {r['nproc']} | {world if world is not None else '-'} | {group} | {sync_bn} | {windows} | {loss} "
        f"| {miou} | {r.get('data_s', 0):.1f} | {r.get('train_s', 0):.1f} | {status} |",
        "",
    ]
    if r.get("command"):
        lines += [f"Command: `{r['command']}`", ""]
    if r.get("error"):
        lines += ["```", r["error"], "```", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="scratch folder (emptied)")
    p.add_argument("--out", type=Path, default=None, help="Markdown table")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--nproc", type=int, default=None, help="ranks (default: the GPUs; 2 in a dry run)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, 2 gloo ranks, no SyncBN")
    p.add_argument("--deadline-s", type=float, default=70.0, help="stop the run after this many seconds")
    args = p.parse_args()
    if args.nproc is None:
        import torch

        args.nproc = 2 if args.dry_run else max(1, torch.cuda.device_count())
    result = run(args)
    md = to_markdown(result, args.dry_run)
    if args.out:  # the table goes to the report; the log gets one line (its tail would repeat the table)
        args.out.write_text(md)
        print(f"train: {'completed' if result.get('ended') and not result.get('error') else 'FAILED'}, "
              f"world size {result.get('world_size')}, s/iter {result.get('windows')}")
    else:
        print(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result.get("ended") and not result.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
