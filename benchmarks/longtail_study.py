"""The long-tail study: RR against the other rebalancing methods under one trainer, 3 seeds each.

Every method is a config switch of the demo config (same synthetic dataset, model, schedule and data
order); only the loss changes. Phase 1 runs all single methods; phase 2 composes RR with the pixel-level
loss that reached the best mean overall mIoU in phase 1 (RR is an auxiliary term, so it adds to any pixel
loss). Finished runs are skipped, so the study can be interrupted and restarted.

  python benchmarks/longtail_study.py --out runs/study [--seeds 0 1 2] [--iters 600]
  python benchmarks/longtail_study.py --out runs/study --report-only   # tables from finished runs
  # two halves side by side on a 2-core machine (one thread each), then the tables:
  OMP_NUM_THREADS=1 python benchmarks/longtail_study.py --out runs/study --methods ce wce-log ...


Writes OUT/results.json and OUT/results.md (mean and standard deviation over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rrseg.engine.config import load_config
from rrseg.engine.demo import DEMO_CONFIG
from rrseg.engine.experiment import summary_row
from rrseg.engine.trainer import Trainer
from rrseg.io import atomic_write_json, atomic_write_text

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
# Why RR does or does not help on the rare classes: longer schedule, RR loss weight (one table of its own).
INVESTIGATION = {
    "ce-3x": ["schedule.iters=1800"],
    "rr-3x": ["schedule.iters=1800", "loss.region.type=rr"],
    "wce-invsqrt-3x": ["schedule.iters=1800", *PIXEL_METHODS["wce-invsqrt"]],
    "rr+wce-invsqrt-3x": ["schedule.iters=1800", *PIXEL_METHODS["wce-invsqrt"], "loss.region.type=rr"],
    "rr-w0.5": ["loss.region.type=rr", "loss.region.loss_weight=0.5"],
    "rr-w2": ["loss.region.type=rr", "loss.region.loss_weight=2.0"],
}
KEYS = ("overall_mIoU", "frequent_mIoU", "common_mIoU", "rare_mIoU", "rare_mPrecision", "rare_mFPR")


def run_one(out: Path, method: str, overrides: list[str], seed: int, base: list[str]) -> dict:
    work = out / method / f"seed{seed}"
    done = work / "report.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = load_config(str(DEMO_CONFIG), [*base, *overrides, f"train.seed={seed}", f"work_dir={work}",
                                         f"name={method}", "train.progress=false", "train.tensorboard=false"])
    t = time.perf_counter()
    report = Trainer(cfg).train()
    print(f"{method} seed {seed}: mIoU {100 * report['overall']['mIoU']:.2f}, rare "
          f"{100 * report['groups']['rare']['mIoU']:.2f} ({time.perf_counter() - t:.0f} s)", flush=True)
    return report


def aggregate(results: dict[str, list[dict]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    table = {}
    for method, reports in results.items():
        if not reports:
            continue
        rows = [summary_row(r) for r in reports]
        table[method] = {
            k: (statistics.mean(r[k] for r in rows), statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0,
                len(rows))
            for k in KEYS
        }
    return table


def markdown(table: dict, iters: int, seeds: list[int], best_pixel: str | None) -> str:
    heads = ["runs", "mIoU", "frequent", "common", "rare", "rare precision", "rare FPR (x1e-3)"]
    lines = ["| method | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for method, stats in table.items():
        cells = [str(stats[KEYS[0]][2])]
        for k in KEYS:
            m, s, n = stats[k]
            scale = 1000 if k.endswith("FPR") else 100
            cells.append(f"{scale * m:.2f} ± {scale * s:.2f}" if n > 1 else f"{scale * m:.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    note = (f"\nMean ± standard deviation over seeds {seeds}; {iters} iterations per run; figures in %, FPR per "
            f"mille. Composite: RR + {best_pixel} (the best pixel-level loss by mean overall mIoU).")
    return "\n".join(lines) + "\n" + note + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/study")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--investigation-seeds", type=int, nargs="+", default=[0],
                   help="seeds of the investigation runs (longer schedule, loss weight); default: 0 only "
                        "(with --report-only: every finished run of these seeds)")
    p.add_argument("--iters", type=int, help="iterations per run (default: the demo config's)")
    p.add_argument("--data", help="synthetic dataset folder (default: OUT/synthetic, generated if missing)")
    p.add_argument("--methods", nargs="*", help="only these methods")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.data) if args.data else out / "synthetic"
    if not (root / "counts.json").is_file():
        from rrseg.data.synthetic import make_synthetic

        make_synthetic(root, seed=0)
    base = [f"data.train.root={root}", f"data.val.root={root}", f"loss.counts={root / 'counts.json'}"]
    if args.iters:
        base.append(f"schedule.iters={args.iters}")
    iters = load_config(str(DEMO_CONFIG), base).schedule.iters

    def collect(methods: dict[str, list[str]], filtered: bool = True, seeds: list[int] | None = None
                ) -> dict[str, list[dict]]:
        res = {}
        for method, overrides in methods.items():
            if filtered and args.methods and method not in args.methods:
                continue
            reports = []
            for seed in seeds or args.seeds:
                done = out / method / f"seed{seed}" / "report.json"
                if args.report_only:
                    if done.is_file():
                        reports.append(json.loads(done.read_text()))
                else:
                    reports.append(run_one(out, method, overrides, seed, base))
            if reports:
                res[method] = reports
        return res

    results = collect({**PIXEL_METHODS, **REGION_METHODS})
    investigation = collect(INVESTIGATION, seeds=args.investigation_seeds)
    pixel = {m: statistics.mean(r["overall"]["mIoU"] for r in results[m]) for m in PIXEL_METHODS if m in results}
    best_pixel = max((m for m in pixel if m != "ce"), key=pixel.get, default=None)
    if best_pixel:
        composite = {f"rr + {best_pixel}": PIXEL_METHODS[best_pixel] + REGION_METHODS["rr"]}
        results.update(collect({k.replace(" ", ""): v for k, v in composite.items()}, filtered=False))
    table = aggregate(results)
    serial = {m: {k: list(v) for k, v in s.items()} for m, s in table.items()}
    atomic_write_json(out / "results.json",
                      {"iterations": iters, "seeds": args.seeds, "best_pixel": best_pixel, "table": serial})
    text = markdown(table, iters, args.seeds, best_pixel)
    if investigation:
        same_seeds = [s for s in args.investigation_seeds if s in args.seeds]
        pick = {m: [r for r, s in zip(results.get(m, []), args.seeds) if s in same_seeds] for m in ("ce", "rr")}
        extra = aggregate({"ce": pick["ce"], **investigation, "rr": pick["rr"]})
        text += "\n### Investigation: schedule length (3x = 1800 iterations) and RR loss weight\n\n"
        text += markdown(extra, iters, args.investigation_seeds, best_pixel).split("\nMean")[0] + "\n"
        text += f"\nSeeds {args.investigation_seeds}; ce and rr rows: the same seeds from the main table.\n"
    atomic_write_text(out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
