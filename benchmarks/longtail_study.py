"""The long-tail study: RR against the other rebalancing methods under one trainer, at the demo's settings.

Every method is a config switch of the demo config (the demo's dataset, model, schedule and data order per
seed); only the loss changes. The default set: every pixel-level loss and every region-level method, then
RR added to the pixel loss with the best mean overall mIoU over the seeds (RR is an auxiliary term, so it
adds to any pixel loss; the ranking waits until every pixel loss has all its seeds). `--methods` picks
any of them (`rr+<pixel loss>` composes RR with a pixel loss); `--iters N` runs them on another schedule
(e.g. the 1800-iteration rows), kept apart from the demo-schedule rows.

Each finished run writes a small JSON to the results folder (method, seed, iterations, the summary row,
wall time, overrides, the config's SHA-256): commit benchmarks/results/longtail/ and an interrupted study
continues in the next session where it stopped (runs with a JSON are skipped; a run stopped by Ctrl-C or
SIGTERM resumes from its checkpoint if its work dir is still there). Results of another demo config
(another SHA-256) are ignored and rerun. A code change that alters results is not detected: delete the
JSONs it makes stale (git rm) to rerun them. The tables come from the JSONs only.

  python benchmarks/longtail_study.py --out runs/study --results-dir benchmarks/results/longtail
  python benchmarks/longtail_study.py --results-dir benchmarks/results/longtail --methods ce rr --iters 1800
  python benchmarks/longtail_study.py --results-dir benchmarks/results/longtail --report-only
  # two halves side by side on a 2-core machine, one thread each (make the dataset first, once):
  rrseg make-synthetic runs/study/synthetic
  OMP_NUM_THREADS=1 python benchmarks/longtail_study.py --results-dir R --methods ce wce-log wce-invsqrt focal &
  OMP_NUM_THREADS=1 python benchmarks/longtail_study.py --results-dir R --methods bsm-pixel bsm-region blv rr &

Writes RESULTS/results.md and RESULTS/results.json (mean and standard deviation over seeds, one table per
schedule length).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from rrseg.engine.checkpoint import latest_checkpoint
from rrseg.engine.config import ConfigError, config_to_dict, load_config, parse_config
from rrseg.engine.trainer import Trainer
from rrseg.io import atomic_write_json, atomic_write_text
from rrseg.tools.demo import DEMO_CONFIG, prepare_dataset
from rrseg.tools.experiment import summary_row

PIXEL_METHODS = {
    "ce": [],
    # divided by the labelled pixels' weight sum, the rule the study's results were run with
    "wce-log": ["loss.pixel.type=weighted_ce", "loss.pixel.weight_scheme=log", "loss.pixel.divide_by_weight_sum=true"],
    "wce-invsqrt": ["loss.pixel.type=weighted_ce", "loss.pixel.weight_scheme=inv_sqrt",
                    "loss.pixel.divide_by_weight_sum=true"],
    "focal": ["loss.pixel.type=focal", "loss.pixel.gamma=2.0"],
    "bsm-pixel": ["loss.pixel.type=balanced_softmax", "loss.pixel.prior=pixel"],
    "bsm-region": ["loss.pixel.type=balanced_softmax", "loss.pixel.prior=region"],
    "blv": ["loss.pixel.type=blv", "loss.pixel.sigma=4.0"],
}
REGION_METHODS = {
    "rr": ["loss.region.type=rr"],
    "rr-trainable": ["loss.region.type=rr", "loss.region.trainable=true"],
    "rr-per-image": ["loss.region.type=rr", "loss.region.per_image=true"],
    "ceco": ["loss.region.type=ceco", "loss.region.loss_weight=0.8"],
}
# RR's loss weight: run only when named
VARIANTS = {
    "rr-w0.5": ["loss.region.type=rr", "loss.region.loss_weight=0.5"],
    "rr-w2": ["loss.region.type=rr", "loss.region.loss_weight=2.0"],
}
KEYS = ("overall_mIoU", "frequent_mIoU", "common_mIoU", "rare_mIoU", "rare_mPrecision", "rare_mFPR")


def overrides_of(method: str) -> list[str]:
    """The config overrides of a method name; ``rr+<pixel loss>`` is RR added to that pixel loss."""
    named = {**PIXEL_METHODS, **REGION_METHODS, **VARIANTS}
    if method in named:
        return list(named[method])
    if method.startswith("rr+") and method[3:] in PIXEL_METHODS:
        return [*PIXEL_METHODS[method[3:]], *REGION_METHODS["rr"]]
    raise SystemExit(f"unknown method {method!r}: one of {', '.join(named)} or rr+<pixel loss>")


def config_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def result_path(results: Path, method: str, iters: int, seed: int) -> Path:
    return results / f"{method}_{iters}it_seed{seed}.json"


def read_results(results: Path, sha: str) -> tuple[list[dict], int]:
    """The results of this demo config (by SHA-256), and how many others were ignored."""
    found, stale = [], 0
    for path in sorted(results.glob("*_seed*.json")):
        rec = json.loads(path.read_text())
        if rec.get("config_sha256") == sha:
            found.append(rec)
        else:
            stale += 1
    return found, stale


def same_config(saved: Path, cfg) -> bool:
    """Whether a work dir's config.yaml is ``cfg``, compared as parsed (so that a dump written before the loss
    sections held only their loss's options still matches)."""
    try:
        data = yaml.safe_load(saved.read_text())
        return isinstance(data, dict) and config_to_dict(parse_config(data)) == config_to_dict(cfg)
    except (ConfigError, yaml.YAMLError):
        return False


def run_one(out: Path, results: Path, config: Path, sha: str, method: str, iters: int, seed: int,
            base: list[str], overrides: list[str] | None = None, device: str = "auto") -> dict:
    """One run, unless its JSON (for this config, ``sha``) exists; writes the JSON as soon as the run has finished.
    ``overrides``: the method's own (default: this study's :func:`overrides_of`)."""
    path = result_path(results, method, iters, seed)
    if path.is_file():
        rec = json.loads(path.read_text())
        if rec.get("config_sha256") == sha:
            return rec
        print(f"{path.name}: made with another config; running it again", flush=True)
    work = out / f"{method}_{iters}it" / f"seed{seed}"
    overrides = overrides_of(method) if overrides is None else overrides
    cfg = load_config(config, [*base, f"schedule.iters={iters}", *overrides, f"train.seed={seed}",
                               f"work_dir={work}", f"name={method}", "train.progress=false",
                               "train.tensorboard=false"])
    # continue a run stopped by a signal, but only one of exactly this config
    saved = work / "config.yaml"
    resume = latest_checkpoint(work) is not None and saved.is_file() and same_config(saved, cfg)
    t = time.perf_counter()
    report = Trainer(cfg, resume=resume, device=device, overwrite=not resume).train()  # another config: redone
    wall = time.perf_counter() - t
    rec = {"method": method, "seed": seed, "iters": iters, "row": summary_row(report), "wall_seconds": round(wall, 1),
           "resumed": resume, "threads": torch.get_num_threads(), "overrides": overrides, "model": cfg.model.name,
           "config": config.name, "config_sha256": sha, "torch": torch.__version__}
    atomic_write_json(path, rec)
    print(f"{method} ({iters} it) seed {seed}: mIoU {100 * rec['row']['overall_mIoU']:.2f}, rare "
          f"{100 * rec['row']['rare_mIoU']:.2f} ({wall:.0f} s)", flush=True)
    return rec


def _value(v: float | None) -> float:
    return math.nan if v is None else float(v)


def aggregate(records: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Mean, standard deviation (0 for one run) and number of runs of each summary key, over the runs where it is
    defined (rare precision is not for a run that predicts no rare pixel; NaN when no run defines it)."""
    out = {}
    for k in KEYS:
        vals = [v for v in (_value(r["row"].get(k)) for r in records) if not math.isnan(v)]
        out[k] = (statistics.mean(vals) if vals else math.nan, statistics.stdev(vals) if len(vals) > 1 else 0.0,
                  len(vals))
    return out


def best_pixel(by_method: dict[str, list[dict]], seeds: list[int]) -> tuple[str | None, list[str]]:
    """The pixel loss (not plain CE) with the best mean overall mIoU, once every pixel loss has all ``seeds``;
    else (None, the pixel losses still missing seeds)."""
    missing = [m for m in PIXEL_METHODS if not set(seeds) <= {r["seed"] for r in by_method.get(m, [])}]
    if missing:
        return None, missing
    means = {m: statistics.mean(_value(r["row"]["overall_mIoU"]) for r in by_method[m] if r["seed"] in seeds)
             for m in PIXEL_METHODS if m != "ce"}
    return max(means, key=means.get), []


def table(by_method: dict[str, list[dict]]) -> str:
    heads = ["runs", "mIoU", "frequent", "common", "rare", "rare precision", "rare FPR (x1e-3)", "wall (min)"]
    lines = ["| method | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for method, recs in by_method.items():
        stats = aggregate(recs)
        cells = [str(len(recs))]
        for k in KEYS:
            m, s, n = stats[k]
            scale = 1000 if k.endswith("FPR") else 100
            cell = "n/a" if n == 0 else f"{scale * m:.2f} ± {scale * s:.2f}" if n > 1 else f"{scale * m:.2f}"
            cells.append(cell if n in (0, len(recs)) else f"{cell} ({n} of {len(recs)} runs)")
        cells.append(f"{statistics.mean(r['wall_seconds'] for r in recs) / 60:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference(by_method: dict[str, list[dict]], a: str, b: str) -> str | None:
    """``a - b`` on the rare group and overall, against twice the larger standard deviation (issue 12's test)."""
    if a not in by_method or b not in by_method:
        return None
    sa, sb = aggregate(by_method[a]), aggregate(by_method[b])
    parts = []
    for k, what in (("rare_mIoU", "rare"), ("overall_mIoU", "overall")):
        d = 100 * (sa[k][0] - sb[k][0])
        bar = 200 * max(sa[k][1], sb[k][1])
        parts.append(f"{what} {d:+.2f} (2 x larger sd {bar:.2f}: {'clear' if d > bar else 'not clear'})")
    return f"{a} - {b}: " + ", ".join(parts) + f"; runs {len(by_method[a])} and {len(by_method[b])}."


def order(methods: set[str]) -> list[str]:
    fixed = [*PIXEL_METHODS, *REGION_METHODS, *VARIANTS]
    return [m for m in fixed if m in methods] + sorted(m for m in methods if m not in fixed)


def report(records: list[dict], seeds: list[int], config_iters: int, stale: int) -> tuple[str, dict]:
    """Markdown and JSON: one table per schedule length, the demo's own first."""
    text, data = [], {}
    for iters in sorted({r["iters"] for r in records}, key=lambda i: (i != config_iters, i)):
        recs = [r for r in records if r["iters"] == iters and r["seed"] in seeds]
        by_method = {m: sorted((r for r in recs if r["method"] == m), key=lambda r: r["seed"])
                     for m in order({r["method"] for r in recs})}
        best, missing = best_pixel(by_method, seeds)
        what = "the demo's schedule" if iters == config_iters else "another schedule"
        text += [f"### {iters} iterations per run ({what})", "", table(by_method), ""]
        notes = [difference(by_method, "rr", "ce")]
        if best:
            notes.append(f"Best pixel-level loss by mean overall mIoU over seeds {seeds}: {best}.")
            notes.append(difference(by_method, f"rr+{best}", best))
        elif any(m in by_method for m in PIXEL_METHODS):
            notes.append(f"Pixel-loss ranking incomplete: not every seed of {seeds} has run for "
                         f"{', '.join(missing)}.")
        text += [n for n in notes if n] + [""]
        data[str(iters)] = {"best_pixel": best, "table": {m: {k: list(v) for k, v in aggregate(rs).items()}
                                                          for m, rs in by_method.items()}}
    text.append(f"Mean ± standard deviation over seeds (of {seeds}); figures in %, FPR per mille; wall: mean "
                f"minutes per run." + (f" {stale} result files of another demo config ignored." if stale else ""))
    return "\n".join(text) + "\n", data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/study", help="work dirs of the runs and the dataset (default runs/study)")
    p.add_argument("--results-dir", help="per-run result JSONs and the tables (default OUT/results); commit it")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iters", type=int, help="iterations per run (default: the demo config's)")
    p.add_argument("--data", help="the demo's synthetic dataset (default OUT/synthetic, generated if missing)")
    p.add_argument("--methods", nargs="+", help="only these methods (names below, or rr+<pixel loss>)")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="the demo config (default: the built-in one)")
    p.add_argument("--report-only", action="store_true", help="only the tables, from the result JSONs")
    args = p.parse_args()
    out = Path(args.out)
    results = Path(args.results_dir) if args.results_dir else out / "results"
    results.mkdir(parents=True, exist_ok=True)
    config = Path(args.config)
    sha = config_sha256(config)
    config_iters = load_config(config).schedule.iters
    iters = args.iters or config_iters

    if not args.report_only:
        root = prepare_dataset(Path(args.data) if args.data else out / "synthetic")
        base = [f"data.train.root={root}", f"data.val.root={root}", f"loss.counts={root / 'counts.json'}"]
        for method in args.methods or [*PIXEL_METHODS, *REGION_METHODS]:
            overrides_of(method)  # unknown names fail before anything runs
        for method in args.methods or [*PIXEL_METHODS, *REGION_METHODS]:
            for seed in args.seeds:
                run_one(out, results, config, sha, method, iters, seed, base)
        if not args.methods:  # phase 2: RR + the best pixel loss, once the ranking is complete
            records = [r for r in read_results(results, sha)[0] if r["iters"] == iters and r["seed"] in args.seeds]
            best, _ = best_pixel({m: [r for r in records if r["method"] == m] for m in PIXEL_METHODS}, args.seeds)
            if best:
                for seed in args.seeds:
                    run_one(out, results, config, sha, f"rr+{best}", iters, seed, base)
    records, stale = read_results(results, sha)
    text, data = report(records, args.seeds, config_iters, stale)
    atomic_write_json(results / "results.json", {"config": config.name, "config_sha256": sha, "seeds": args.seeds,
                                                 "config_iterations": config_iters, "by_iterations": data})
    atomic_write_text(results / "results.md", text)
    print(text)


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", stream=sys.stdout)  # rrseg's messages, as the CLI shows them
    logging.getLogger("rrseg").setLevel(logging.INFO)
    main()
