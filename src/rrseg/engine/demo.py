"""The demo: cross-entropy against Region Rebalance on the synthetic long tail, on a CPU, in minutes.

Same model, seed, data order and schedule for both runs; the only difference is the RR term. The schedule
is the config's unless the time budget is too short for it, in which case both runs get the same shorter
one (measured step time, stated in the output).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import torch

from rrseg.engine.config import Config, load_config
from rrseg.engine.experiment import plot_curves, summary_row, summary_table
from rrseg.engine.trainer import Trainer
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from rrseg.metrics.report import plot_iou_vs_count

__all__ = ["DEMO_CONFIG", "run_demo"]

DEMO_CONFIG = resources.files("rrseg") / "configs" / "demo.yaml"
RUNS = (("cross-entropy", "ce", []), ("+ RR", "rr", ["loss.region.type=rr"]))


def _dataset(out: Path, seed: int) -> Path:
    from rrseg.data.synthetic import make_synthetic

    root = out / "synthetic"
    if (root / "dataset.yaml").is_file() and (root / "counts.json").is_file():
        print(f"using the synthetic dataset in {root}")
        return root
    print(f"generating the synthetic long-tailed dataset in {root} ...")
    return make_synthetic(root, seed=seed)


def _step_seconds(cfg: Config, num_classes: int, counts_path: str, steps: int = 4) -> float:
    """Seconds per training iteration of the RR run (the slower one), on random data of the batch shape."""
    from rrseg.engine.trainer import build_criterion, rebalance_spec
    from rrseg.models import build_model
    from rrseg.rebalance import ClassCounts

    counts = ClassCounts.load(counts_path, num_classes)
    cfg.loss.region.type = "rr"  # time the slower of the two runs
    model = build_model(cfg.model.name, num_classes=num_classes, rebalance=rebalance_spec(cfg, counts),
                        **cfg.model.options).train()
    criterion = build_criterion(cfg, model, counts, num_classes)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    h, w = cfg.data.crop_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.data.batch_size, 3, h, w, generator=gen)
    y = torch.randint(0, num_classes, (cfg.data.batch_size, h, w), generator=gen)
    times = []
    with torch.random.fork_rng(devices=[]):
        for _ in range(steps + 1):
            t = time.perf_counter()
            loss = sum(criterion(model(x), y).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def run_demo(out: str | Path = "runs/demo", minutes: float = 10.0, config: str | Path | None = None,
             seed: int = 0, iters: int | None = None) -> dict:
    """Generate (or reuse) the dataset, train CE and RR, write ``out/report``; returns the summary rows."""
    t0 = time.perf_counter()
    out = ensure_writable_dir(out)
    root = _dataset(out, seed)
    config = Path(config) if config else Path(str(DEMO_CONFIG))
    base = [f"data.train.root={root}", f"data.val.root={root}", f"loss.counts={root / 'counts.json'}",
            f"train.seed={seed}"] + ([f"schedule.iters={iters}"] if iters else [])
    cfg = load_config(config, base)
    num_classes = len(json.loads((root / "counts.json").read_text())["image_counts"])

    planned = cfg.schedule.iters
    if iters is None:
        step = _step_seconds(load_config(config, base), num_classes, str(root / "counts.json"))
        eval_s = 20.0  # evaluation, start-up and reports per run, measured on the 2-core machine
        budget = minutes * 60 - (time.perf_counter() - t0) - 2 * eval_s
        fit = int(budget / (2 * step * 1.15))
        if fit < planned:
            if fit < 50:
                raise RRSegError(f"--minutes {minutes}: too short for this machine (one step takes {step:.2f} s)")
            planned = fit
            base.append(f"schedule.iters={planned}")
        print(f"step time {step:.2f} s: {planned} iterations per run "
              f"(config: {cfg.schedule.iters}), about {2 * planned * step / 60:.1f} min of training")

    reports, work_dirs = {}, {}
    for i, (label, key, extra) in enumerate(RUNS, 1):
        run_cfg = load_config(config, [*base, *extra, f"work_dir={out / key}", f"name={label}"])
        print(f"[{i}/{len(RUNS)}] training {label} ({run_cfg.model.name}, {run_cfg.schedule.iters} iterations)")
        reports[label] = Trainer(run_cfg, resume=False).train()
        work_dirs[label] = out / key

    rows = {name: summary_row(rep) for name, rep in reports.items()}
    report_dir = ensure_writable_dir(out / "report")
    plot_iou_vs_count(reports, report_dir / "iou_vs_count.png",
                      title="per-class IoU against region count: cross-entropy vs RR")
    plot_curves(work_dirs, report_dir / "curves.png")
    table = summary_table(rows)
    atomic_write_json(report_dir / "summary.json", {"rows": rows, "iterations": planned, "seed": seed,
                                                    "dataset": str(root)})
    atomic_write_text(report_dir / "README.md", _markdown(rows, planned, seed, root, reports))
    minutes_taken = (time.perf_counter() - t0) / 60
    print("\n" + table)
    print(f"\nreport: {report_dir}/README.md (plots: iou_vs_count.png, curves.png); {minutes_taken:.1f} min in all")
    return rows


def _markdown(rows: dict, iters: int, seed: int, root: Path, reports: dict) -> str:
    rr, ce = rows.get("+ RR", {}), rows.get("cross-entropy", {})
    lines = [
        "# rrseg demo: cross-entropy vs Region Rebalance on a synthetic long tail",
        "",
        f"Dataset: `{root}` (synthetic, {reports['cross-entropy']['num_classes']} classes). "
        f"Same model, seed ({seed}), data order and schedule ({iters} iterations) for both runs.",
        "Groups: classes ranked by region (image) count and split in the proportions of ADE20K's "
        "20 / 55 / 75 of 150 classes. Figures in %; rare prec = precision averaged over the rare classes "
        "that were predicted at all; rare FPR = false-positive rate FP / (FP + TN) averaged over rare classes.",
        "",
        summary_table(rows, markdown=True),
        "",
    ]
    if rr and ce:
        d = {k: 100 * (rr[k] - ce[k]) for k in ("overall_mIoU", "rare_mIoU", "frequent_mIoU")}
        lines.append(f"RR - CE: mIoU {d['overall_mIoU']:+.2f}, rare mIoU {d['rare_mIoU']:+.2f}, "
                     f"frequent mIoU {d['frequent_mIoU']:+.2f} points.")
    lines += ["", "![per-class IoU against region count](iou_vs_count.png)", "", "![training curves](curves.png)", ""]
    return "\n".join(lines)
