"""The demo: cross-entropy against Region Rebalance on the synthetic long tail, on a CPU, in minutes.

Same model, seed, data order and schedule for both runs; the only difference is the RR term. The schedule is
the config's, always (``iters`` overrides it explicitly, for tiny runs): a slower machine takes longer, it
never trains less, so a seed gives the same table everywhere.

The two runs go one after the other in this process (torch's default thread count), or, with
``parallel=True``, side by side as two ``python -m rrseg train`` processes with one thread each, each loading its
own batches (``data.workers=0``; every sample's augmentation is seeded by its position, so the batches are the
same). Both ways run the same code on the same data order: with one thread in this process too, they are
bit-identical (the demo's test checks it). With more threads, intra-op sums are split differently, so figures
differ in the last digits, and training can carry such differences on to visible ones in the end figures.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch

import rrseg
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from rrseg.metrics.report import plot_iou_vs_count
from rrseg.output import RESULT
from rrseg.tools.experiment import last_run, plot_curves, plot_predictions, read_log, summary_row, summary_table

logger = logging.getLogger(__name__)

__all__ = ["DATA_SEED", "DEMO_CONFIG", "PARALLEL_DEFAULT", "RUNS", "prepare_dataset", "run_demo"]

DEMO_CONFIG = resources.files("rrseg") / "configs" / "demo.yaml"
RUNS = (("cross-entropy", "ce", []), ("+ RR", "rr", ["loss.region.type=rr"]))
DATA_SEED = 0  # the dataset is fixed; --seed varies the training runs only, as the study's seeds do
PARALLEL_DEFAULT = True  # side by side, one thread each: half the wall time on 2 cores (demo_settings.md)
NUM_PREDICTIONS = 6  # rows of predictions.png
PROGRESS_SECONDS = 30.0  # how often the side-by-side runs report their iteration


def prepare_dataset(root: str | os.PathLike, options: dict[str, Any] | None = None) -> Path:
    """The demo's dataset in ``root``: reused when it is the synthetic dataset of ``options``
    (make_synthetic's num_classes, num_train, num_val, size; default: its defaults) and seed
    :data:`DATA_SEED`, generated when absent; anything else there is refused rather than trained on."""
    from rrseg.data.synthetic import DEFAULTS, make_synthetic

    opts = {**DEFAULTS, **(options or {})}
    size = opts["size"]
    opts["size"] = [size, size] if isinstance(size, int) else [int(v) for v in size]
    root = Path(root)
    if (root / "dataset.yaml").is_file() and (root / "counts.json").is_file():
        from rrseg.schema import read_yaml

        try:
            spec = read_yaml(root / "dataset.yaml", "dataset description")
            stats = json.loads((root / "synthetic.json").read_text())
        except (OSError, ValueError, RRSegError) as e:
            raise RRSegError(f"{root}: unreadable synthetic dataset ({e}); delete it to regenerate") from None
        found = {"seed": spec.get("info", {}).get("seed"), "num_classes": len(spec.get("classes", [])),
                 "num_train": stats.get("train_images"), "num_val": stats.get("val_images"),
                 "size": spec.get("info", {}).get("size")}
        expected = {"seed": DATA_SEED, **{k: opts[k] for k in ("num_classes", "num_train", "num_val", "size")}}
        if found != expected:
            diff = ", ".join(f"{k} {found[k]} (expected {expected[k]})" for k in expected if found[k] != expected[k])
            raise RRSegError(f"{root}: not the demo's dataset: {diff}; delete it (or use another --out)")
        logger.info("using the synthetic dataset in %s", root)
        return root
    logger.info("generating the synthetic long-tailed dataset in %s ...", root)
    return make_synthetic(root, seed=DATA_SEED, **opts)


def _child_env() -> dict[str, str]:
    """One thread per process (two runs share the cores), and this very rrseg package first on the path."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    package_parent = str(Path(rrseg.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    return env


def _iteration(work_dir: Path) -> int:
    try:
        records = last_run(read_log(work_dir))
    except RRSegError:
        return 0
    return max((r.get("iteration", 0) for r in records if r.get("event") == "train"), default=0)


def _train_side_by_side(config: Path, runs: list[tuple[str, Path, list[str]]], iters: int,
                        device: str) -> dict[str, float]:
    """Each run as ``python -m rrseg train`` in its own one-thread process, at once; output to
    ``<work dir>.log``. Returns each run's wall time (process start to exit) in seconds."""
    procs: dict[str, tuple[subprocess.Popen, float, Path, Path]] = {}
    walls: dict[str, float] = {}
    env = _child_env()
    try:
        for label, work_dir, overrides in runs:
            log = work_dir.with_name(work_dir.name + ".log")
            with open(log, "wb") as f:  # the child keeps its own handle
                command = [sys.executable, "-m", "rrseg", "train", str(config), "--device", device, "--overwrite",
                           "--set", *overrides, "train.progress=false"]
                proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env)
            procs[label] = (proc, time.perf_counter(), log, work_dir)
        last_report = time.perf_counter()
        while len(walls) < len(procs):
            time.sleep(0.2)
            for label, (proc, t0, log, _) in procs.items():
                if label in walls or proc.poll() is None:
                    continue
                walls[label] = time.perf_counter() - t0
                if proc.returncode != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    raise RRSegError(f"the {label} run failed (exit status {proc.returncode}); its output is in "
                                     f"{log}: {' / '.join(tail)}")
                logger.info("%s: finished in %.1f min (output: %s)", label, walls[label] / 60, log)
            if time.perf_counter() - last_report > PROGRESS_SECONDS and len(walls) < len(procs):
                last_report = time.perf_counter()
                logger.info("  " + ", ".join(f"{label} {_iteration(w)}/{iters}" for label, (_, _, _, w) in procs.items()
                                          if label not in walls))
    finally:
        for proc, *_ in procs.values():  # an error or Ctrl-C here: the other run must not go on alone
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: the trainer saves a checkpoint and exits
        for proc, *_ in procs.values():
            proc.wait()
    return walls


def run_demo(out: str | os.PathLike = "runs/demo", config: str | os.PathLike | None = None, seed: int = 0,
             iters: int | None = None, parallel: bool = PARALLEL_DEFAULT,
             dataset: dict[str, Any] | None = None, device: str = "auto") -> dict:
    """Generate (or reuse) the dataset, train CE and RR on the config's schedule (``iters`` overrides it),
    write ``out/report``; returns the summary (as in ``summary.json``). ``dataset``: make_synthetic options
    (num_classes, num_train, num_val, size), for tiny runs; ``device`` as ``rrseg train --device``."""
    t0 = time.perf_counter()
    out = ensure_writable_dir(out)
    root = prepare_dataset(out / "synthetic", dataset)
    dataset_seconds = time.perf_counter() - t0
    config = Path(config) if config else Path(str(DEMO_CONFIG))
    base = [f"data.train.root={root}", f"data.val.root={root}", f"loss.counts={root / 'counts.json'}",
            f"train.seed={seed}"]
    config_iters = load_config(config, base).schedule.iters
    base += [f"schedule.iters={iters}"] if iters else []
    cfg = load_config(config, base)  # checks the config (and the overrides) before anything trains
    planned = cfg.schedule.iters
    runs = [(label, out / key, [*base, *extra, f"work_dir={out / key}", f"name={label}"]) for label, key, extra in RUNS]

    if parallel:
        logger.info(f"training {' and '.join(r[0] for r in runs)} side by side, one thread each "
                    f"({cfg.model.name}, {planned} iterations per run)")
        # the two runs keep the cores busy: each loads its own batches rather than start a loader worker that
        # would compete with both (0.96x the wall time; the same batches either way, so the same figures)
        walls = _train_side_by_side(config, [(*r[:2], [*r[2], "data.workers=0"]) for r in runs], planned, device)
        threads = 1
    else:
        walls = {}
        threads = torch.get_num_threads()
        for i, (label, _, overrides) in enumerate(runs, 1):
            logger.info(f"[{i}/{len(runs)}] training {label} ({cfg.model.name}, {planned} iterations)")
            t = time.perf_counter()
            Trainer(load_config(config, overrides), resume=False, device=device, overwrite=True).train()
            walls[label] = time.perf_counter() - t
    reports = {label: json.loads((work_dir / "report.json").read_text()) for label, work_dir, _ in runs}

    rows = {name: summary_row(rep) for name, rep in reports.items()}
    report_dir = ensure_writable_dir(out / "report")
    plot_iou_vs_count(reports, report_dir / "iou_vs_count.png",
                      title="per-class IoU against region count: cross-entropy vs RR")
    plot_curves({label: work_dir for label, work_dir, _ in runs}, report_dir / "curves.png")
    # rare = the rare frequency group of the training region counts, as the reports' groups
    rare = reports[RUNS[0][0]].get("group_classes", {}).get("rare", [])
    shown = plot_predictions({label: work_dir / "inference.safetensors" for label, work_dir, _ in runs},
                             _val_dataset(cfg), rare, report_dir / "predictions.png", n=NUM_PREDICTIONS)
    summary = {
        "rows": rows,
        "iterations": planned,
        "config_iterations": config_iters,
        "seed": seed,
        "dataset": str(root),
        "dataset_seed": DATA_SEED,
        "config": str(config),
        "parallel": parallel,
        "threads_per_run": threads,
        "wall_seconds": {label: round(s, 1) for label, s in walls.items()},
        "dataset_seconds": round(dataset_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "rare_classes": [reports[RUNS[0][0]]["per_class"][k]["name"] for k in rare],
        "prediction_images": shown,
    }
    atomic_write_json(report_dir / "summary.json", summary)
    atomic_write_text(report_dir / "README.md", _markdown(summary, reports))
    logger.log(RESULT, "\n" + summary_table(rows))  # the results: kept by rrseg -q
    logger.log(RESULT, f"\nreport: {report_dir}/README.md (plots: iou_vs_count.png, curves.png, predictions.png); "
                f"{summary['total_seconds'] / 60:.1f} min in all")
    return summary


def _val_dataset(cfg: Any) -> Any:
    """The validation split as the trainer reads it, untransformed (the images and labels as they are)."""
    from rrseg.data import build_dataset

    v = cfg.data.val
    return build_dataset(v.type, v.root, v.split, transforms=None, **v.options)


def _markdown(summary: dict, reports: dict) -> str:
    rows = summary["rows"]
    rr, ce = rows.get("+ RR", {}), rows.get("cross-entropy", {})
    walls = ", ".join(f"{name} {s / 60:.1f} min" for name, s in summary["wall_seconds"].items())
    how = ("side by side, one thread each" if summary["parallel"]
           else f"one after the other, {summary['threads_per_run']} threads")
    lines = [
        "# rrseg demo: cross-entropy vs Region Rebalance on a synthetic long tail",
        "",
        f"Dataset: `{summary['dataset']}` (synthetic, {reports['cross-entropy']['num_classes']} classes, "
        f"seed {summary['dataset_seed']}). Same model, seed ({summary['seed']}), data order and schedule "
        f"({summary['iterations']} iterations) for both runs. Trained {how}: {walls}.",
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
    lines += [
        "", "![per-class IoU against region count](iou_vs_count.png)", "",
        f"Predictions of the final models on the first {len(summary['prediction_images'])} validation images, "
        "by file name, that contain a rare class (a fixed rule: never chosen by result); each row names the rare "
        "classes in the image (black: unlabelled). Rare classes: " + ", ".join(summary["rare_classes"]) + ".",
        "", "![image, ground truth, cross-entropy, RR](predictions.png)", "",
        "![training curves](curves.png)", "",
    ]
    return "\n".join(lines)
