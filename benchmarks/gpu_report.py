"""The one Markdown file of ``benchmarks/gpu.sh``: the machine, the goals of issue 14, and each part's table.

``env``: probe the machine (torch, CUDA, GPUs, timm, smp, the commit) into ``env.json``.
``assemble``: read what the parts left in the work folder (``status_<part>.json`` from gpu.sh, each part's
``.md`` / ``.json`` / ``.log``) and write the report. gpu.sh calls it after every part, so the file is
complete up to the last part that ran, whatever happens later; a part that timed out or failed says so, with
the tail of its log, and shows what it wrote before it stopped. ``assemble`` imports no torch.

    python benchmarks/gpu_report.py env --work DIR
    python benchmarks/gpu_report.py assemble --work DIR --out gpu.md [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

# part name, section title; the order of the report (not the order gpu.sh runs them in)
PARTS = [
    ("models", "1. Model families: train step, RR off and on"),
    ("branch", "2. RR branch alone: released vs today's vs the new path"),
    ("train", "3. `rrseg train` through torchrun (SyncBN, NCCL, fp16)"),
    ("checks", "4. Host synchronisations on the device: RR's training path, the evaluation accumulator"),
    ("peers", "5. rrseg against mmseg, HF transformers and smp on the same models (issue 24)"),
]
GOAL = 2.0  # per cent: issue 14's budget for RR, in time and in peak memory


def probe(work: Path) -> None:
    import torch

    info: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": torch.cuda.device_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for name in ("timm", "segmentation_models_pytorch", "numpy"):
        try:
            module = __import__(name)
            info[name] = f"{module.__version__} ({Path(module.__file__).parent.parent})"
        except Exception as e:  # report, do not stop: the part that needs it will fail with its own message
            info[name] = f"missing ({type(e).__name__})"
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown"
    (work / "env.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


def _load(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _status_line(work: Path, part: str) -> tuple[str, str]:
    """(one-line status, log tail or '') of a part."""
    st = _load(work / f"status_{part}.json")
    if st is None:
        return "not run (yet): the call ended before this part", ""
    rc, secs, budget = st["rc"], st["seconds"], st["budget"]
    if rc == 0:
        return f"finished in {secs} s (budget {budget} s)", ""
    log = work / f"{part}.log"
    tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:]) if log.is_file() else ""
    if rc in (124, 137):
        return f"**stopped at its time budget ({budget} s)**: the table holds what it finished before", tail
    return f"**failed** (exit {rc}) after {secs} s (budget {budget} s)", tail


def _pct(a: float, b: float) -> float:
    return 100.0 * (a / b - 1.0)


def goals(work: Path) -> list[str]:
    """Issue 14's goals, computed from the parts' JSON where they ran."""
    rows = []
    models = _load(work / "models.json") or {}
    head = next((r for r in models.get("rows", []) if r["model"] in ("upernet_swin_t", "upernet_swin_tiny")
                 and r["amp"] == "bf16" and "skipped" not in r), None)
    branch = _load(work / "branch.json") or []

    def verdict(value: float) -> str:
        return "yes" if value <= GOAL else "**no**"

    if head:
        t = _pct(head["step_ms_on"], head["step_ms_off"])
        rows.append(f"| RR time, {head['model']} step, bf16 (whole-step difference) | "
                    f"{head['step_ms_off']:.1f} -> {head['step_ms_on']:.1f} ms ({t:+.1f} %) | {verdict(t)} |")
        if head.get("peak_gib_off"):
            m = _pct(head["peak_gib_on"], head["peak_gib_off"])
            rows.append(f"| RR peak memory, same | {head['peak_gib_off']:.2f} -> {head['peak_gib_on']:.2f} GiB "
                        f"({m:+.1f} %) | {verdict(m)} |")
    for r in branch:
        if r["amp"] == "bf16" and r["classes"] == 150 and r["pooling"] == "batch":
            for path in ("new", "today", "released"):
                v = r.get(path)
                if isinstance(v, dict) and head:
                    share = 100.0 * v["ms"] / head["step_ms_off"]
                    rows.append(f"| RR branch alone, {path} path, / that step (RR off) | {v['ms']:.2f} ms = "
                                f"{share:.2f} % | {verdict(share) if path == 'new' else '(reference)'} |")
                elif isinstance(v, dict):
                    rows.append(f"| RR branch alone, {path} path | {v['ms']:.2f} ms (no step to compare) | |")
    for r in _load(work / "checks.json") or []:
        if not r["what"].startswith("today"):
            rows.append(f"| no host sync: {r['what']} | {r['sync']} | {'yes' if r['sync'] == 'none' else '**no**'} |")
    if not rows:
        return ["No part with goal figures has finished.", ""]
    return ["| goal (time and memory: <= 2 %) | measured | met |", "|---|---|---|", *rows, ""]


def assemble(work: Path, out: Path, dry_run: bool) -> None:
    env = _load(work / "env.json") or {}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# rrseg on a GPU (`bash benchmarks/gpu.sh`)", ""]
    if dry_run:
        lines += ["**DRY RUN** (CPU, tiny models and sizes, gloo): checks that every part runs; the figures mean "
                  "nothing.", ""]
    machine = env.get("gpu", "no GPU") + (f" ({env['gpu_mem_gib']} GiB)" if "gpu_mem_gib" in env else "")
    lines += [
        f"{now}; {machine}, {env.get('gpus', '?')} GPU(s); torch {env.get('torch', '?')}, CUDA {env.get('cuda')}; "
        f"timm {env.get('timm', '?')}; smp {env.get('segmentation_models_pytorch', '?')}; commit "
        f"{env.get('commit', '?')}.",
        "",
        "## Goals (issue 14)",
        "",
        *goals(work),
    ]
    for part, title in PARTS:
        status, tail = _status_line(work, part)
        lines += [f"## {title}", "", f"Status: {status}.", ""]
        table = work / f"{part}.md"
        if table.is_file():
            lines += [table.read_text().rstrip(), ""]
        if tail:
            lines += ["Log tail:", "", "```", tail, "```", ""]
    lines += ["## Time per part", "", "| part | budget (s) | wall (s) | exit |", "|---|---:|---:|---:|"]
    for part in ("env", "checks", "branch", "train", "peers", "models"):
        st = _load(work / f"status_{part}.json")
        if st:
            lines.append(f"| {part} | {st['budget']} | {st['seconds']} | {st['rc']} |")
    lines.append("")
    text = "\n".join(lines)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)  # a reader (or a kill) never sees half a file


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["env", "assemble"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    if args.what == "env":
        probe(args.work)
    else:
        if args.out is None:
            p.error("assemble needs --out")
        assemble(args.work, args.out, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
