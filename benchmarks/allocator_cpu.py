"""glibc's malloc as rrseg sets it against glibc's default (issue 24, item 3): the demo's training step and the
ADE20K training transforms, each in a fresh process per setting, the settings alternating.

A process setting cannot be switched back and forth in one process, so each repetition starts one subprocess
with ``RRSEG_TUNE_MALLOC=0`` (glibc's default) and one without it (rrseg's setting, ``rrseg.allocator``), in
alternating order. Each subprocess times, at one thread:

- ``step``: the demo's training step (``deeplabv3plus_small``, 30 classes, batch 16 x 96^2, the demo config's
  criterion, with RR's term in the RR case, AdamW), 3 untimed steps then ``--steps`` timed ones; its median and
  the minor page faults of the timed steps;
- ``transforms``: rrseg's ADE20K training transforms (``train_transforms()`` defaults) on a random 683x512 image
  and label, no decoding; the mean per sample over ``--samples``.

Reported: each setting's median over the repetitions, its spread (IQR / median) and the median of the
per-repetition ratios tuned / default.

    PYTHONPATH=src python benchmarks/allocator_cpu.py --json benchmarks/results/allocator_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from peers import summarize  # IQR / median, as the peer benchmark reports it

SETTINGS = ("default", "tuned")

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from rrseg.allocator import tune_malloc
tuned = tune_malloc()
torch.set_num_threads(1)
what, rr, steps, samples = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
out = {"tuned": tuned}
if what == "step":
    from _model_step import demo_parts
    make, images, labels = demo_parts(rr)
    model, criterion = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    def step():
        opt.zero_grad(set_to_none=True)
        sum(criterion(model(images), labels).values()).backward()
        opt.step()
    for _ in range(3):
        step()
    faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
    for _ in range(steps):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    out.update(ms=1000 * statistics.median(times),
               faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
else:
    from torchvision import tv_tensors
    from rrseg.data.transforms import train_transforms
    tf = train_transforms()
    g = torch.Generator().manual_seed(0)
    img = tv_tensors.Image(torch.randint(0, 256, (3, 512, 683), dtype=torch.uint8, generator=g))
    lab = tv_tensors.Mask(torch.randint(0, 150, (512, 683), dtype=torch.uint8, generator=g))
    torch.manual_seed(0)
    for _ in range(5):
        tf(img, lab)
    t = time.perf_counter()
    for _ in range(samples):
        tf(img, lab)
    out.update(ms=1000 * (time.perf_counter() - t) / samples)
print(json.dumps(out))
"""


def run_child(what: str, setting: str, rr: bool, steps: int, samples: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RRSEG_TUNE_MALLOC", None)
    if setting == "default":
        env["RRSEG_TUNE_MALLOC"] = "0"
    here = Path(__file__).resolve().parent  # src, and benchmarks/ for _model_step
    paths = (str(here.parent / "src"), str(here), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    run = subprocess.run([sys.executable, "-c", CHILD, what, "1" if rr else "0", str(steps), str(samples)],
                         env=env, capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if result["tuned"] != (setting == "tuned"):
        raise SystemExit(f"the {setting} child reports tuned={result['tuned']}: glibc's malloc is not settable here")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="repetitions (a process per setting each)")
    ap.add_argument("--steps", type=int, default=10, help="timed demo steps per process")
    ap.add_argument("--samples", type=int, default=40, help="timed transform samples per process")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cases = {"step_ce": ("step", False), "step_rr": ("step", True), "transforms_ade": ("transforms", False)}
    result: dict = {"machine": platform.processor() or platform.machine(), "threads": 1, "reps": args.reps,
                    "steps": args.steps, "samples": args.samples}
    for name, (what, rr) in cases.items():
        runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for r in range(args.reps):
            for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
                runs[setting].append(run_child(what, setting, rr, args.steps, args.samples))
        case = {s: {"median_ms": statistics.median(x["ms"] for x in v),
                    "spread": summarize([x["ms"] for x in v])["iqr_rel"]} for s, v in runs.items()}
        if what == "step":
            for s, v in runs.items():
                case[s]["faults_median"] = statistics.median(x["faults"] for x in v)
        case["ratio_tuned_to_default"] = statistics.median(
            t["ms"] / d["ms"] for t, d in zip(runs["tuned"], runs["default"]))
        result[name] = case
        print(name, json.dumps(case), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
