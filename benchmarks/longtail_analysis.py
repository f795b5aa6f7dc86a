"""Where the rare classes' pixels go: the study's trained models on the demo's validation split.

For each method and seed of the long-tail study (``benchmarks/longtail_study.py``; its run folders hold
``inference.safetensors``), evaluate once more and keep the confusion matrix, then ask, for the rare group:

- recall (mAcc) and precision: pixel weighting buys recall, RR should keep precision;
- of the rare pixels missed, the share predicted as the class's look-alike twin (the synthetic set has six rare
  "X-like" classes, a small hue shift and one texture property away from a frequent class X), as a frequent,
  common or other rare class;
- of the pixels wrongly predicted as rare, the share whose label is frequent or common;
- IoU of the rare look-alikes against the other rare classes, and of rare "stuff" against rare "things".

  python benchmarks/longtail_analysis.py --runs runs/study --data runs/study/synthetic \\
      --methods ce rr wce-invsqrt rr+wce-invsqrt --out benchmarks/results/longtail_analysis
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from rrseg.data.folder import FolderDataset
from rrseg.data.transforms import test_transforms
from rrseg.engine.evaluator import Evaluator
from rrseg.engine.inference import load_for_inference
from rrseg.engine.loader import collate
from rrseg.io import atomic_write_json, atomic_write_text


def analyse(mat: np.ndarray, groups: dict[str, list[int]], design: list[dict]) -> dict[str, float]:
    rare, frequent, common = groups["rare"], groups["frequent"], groups["common"]
    tp = np.diag(mat).astype(np.float64)
    label_area, pred_area = mat.sum(1).astype(np.float64), mat.sum(0).astype(np.float64)
    iou = tp / np.maximum(label_area + pred_area - tp, 1)
    recall = tp / np.maximum(label_area, 1)
    predicted = pred_area > 0
    precision = np.where(predicted, tp / np.maximum(pred_area, 1), np.nan)
    missed = {"twin": 0.0, "frequent": 0.0, "common": 0.0, "other rare": 0.0}
    for c in rare:
        row = mat[c].astype(np.float64)
        twin = design[c].get("twin_of")
        if twin is not None:
            missed["twin"] += row[twin]
        missed["frequent"] += sum(row[k] for k in frequent if k != twin)
        missed["common"] += sum(row[k] for k in common if k != twin)
        missed["other rare"] += sum(row[k] for k in rare if k != c)
    n_missed = max(sum(missed.values()), 1.0)
    fp_from = {"frequent": 0.0, "common": 0.0, "rare": 0.0}
    for c in rare:
        col = mat[:, c].astype(np.float64)
        for name, members in (("frequent", frequent), ("common", common), ("rare", rare)):
            fp_from[name] += sum(col[k] for k in members if k != c)
    n_fp = max(sum(fp_from.values()), 1.0)
    twins = [c for c in rare if design[c].get("twin_of") is not None]
    plain = [c for c in rare if c not in twins]
    stuff = [c for c in rare if design[c]["kind"] == "stuff"]
    things = [c for c in rare if design[c]["kind"] == "thing"]
    return {
        "rare_IoU": 100 * iou[rare].mean(),
        "rare_recall": 100 * recall[rare].mean(),
        "rare_precision": 100 * float(np.nanmean(precision[rare])),
        "rare_predicted_classes": int(predicted[rare].sum()),
        **{f"missed_to_{k}": 100 * v / n_missed for k, v in missed.items()},
        "missed_share_of_rare_pixels": 100 * n_missed / max(label_area[rare].sum(), 1),
        **{f"false_rare_from_{k}": 100 * v / n_fp for k, v in fp_from.items()},
        "twin_IoU": 100 * iou[twins].mean(),
        "other_rare_IoU": 100 * iou[plain].mean(),
        "rare_stuff_IoU": 100 * iou[stuff].mean(),
        "rare_thing_IoU": 100 * iou[things].mean(),
    }


def confusion(run: Path, data: Path) -> tuple[np.ndarray, dict]:
    model, meta, cfg = load_for_inference(run / "inference.safetensors", "cpu")
    d = cfg.data
    ds = FolderDataset(data, "val", transforms=test_transforms(scale=tuple(d.scale), mean=tuple(d.mean),
                                                               std=tuple(d.std)))
    loader = torch.utils.data.DataLoader(ds, batch_size=50, collate_fn=collate)
    cm = Evaluator(cfg.eval, int(meta["num_classes"]), ds.ignore_index, device="cpu").confusion(model, loader)
    report = json.loads((run / "report.json").read_text())
    return cm.mat.cpu().numpy(), report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/study")
    p.add_argument("--data", required=True, help="the study's synthetic dataset")
    p.add_argument("--methods", nargs="+", default=["ce", "rr", "wce-invsqrt", "rr+wce-invsqrt"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/results/longtail_analysis", help="writes OUT.json and OUT.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    design = json.loads((data / "design.json").read_text())
    rows: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in args.seeds:
            run = Path(args.runs) / f"{method}_{args.iters}it" / f"seed{seed}"
            if not (run / "inference.safetensors").is_file():
                print(f"skipped {run}: not finished")
                continue
            mat, report = confusion(run, data)
            groups = {g: [int(c) for c in cs] for g, cs in report["group_classes"].items()}
            row = analyse(mat, groups, design)
            # the evaluation here must be the study's own (same model, same data): a check, not a new number
            assert abs(row["rare_IoU"] - 100 * report["groups"]["rare"]["mIoU"]) < 1e-6, run
            rows.setdefault(method, []).append({"seed": seed, **row})
            print(f"{method} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    keys = list(next(iter(rows.values()))[0])[1:]
    mean = {m: {k: statistics.mean(r[k] for r in rs) for k in keys} for m, rs in rows.items()}
    atomic_write_json(Path(f"{args.out}.json"), {"iters": args.iters, "seeds": args.seeds, "runs": rows,
                                                 "mean": mean})
    head = "| | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows)
    lines = [f"Means over seeds {args.seeds} ({args.iters} iterations); shares in % of the rare pixels missed / of "
             "the pixels wrongly predicted as rare.\n", head]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{mean[m][k]:.2f}" for m in rows) + " |")
    atomic_write_text(Path(f"{args.out}.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
