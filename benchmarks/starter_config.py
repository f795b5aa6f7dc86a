"""Does `rrseg init`'s starter config train well as it stands? (issue 22 item 1)

Three runs of 200 iterations, CPU, one after the other, each written to OUT/<run>/ (a finished run is reused):

- demo_rr: the demo's settings (src/rrseg/configs/demo.yaml + RR) at 200 iterations, on the demo's dataset;
- starter_synthetic: `rrseg init` on that same dataset (its split folders), --iters 200;
- starter_own: `rrseg init` on a dataset of another size and class count in a user's own layout: images/ + masks/
  with no split folders and no dataset.yaml (written here from `rrseg make-synthetic --classes 12 --size 160x120`:
  its files moved into flat folders), so the starter takes the automatic validation split and counts the classes.

Writes OUT/starter_config.json (mIoU and groups per run, seconds per iteration) and prints a table.

    python benchmarks/starter_config.py [--out runs/starter] [--iters 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from rrseg.data.synthetic import make_synthetic
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer
from rrseg.tools.demo import DEMO_CONFIG, prepare_dataset
from rrseg.tools.experiment import summary_row
from rrseg.tools.starter import starter_config


def own_layout(out: Path) -> Path:
    """images/ + masks/, flat (no split folders), no dataset.yaml: a user's own folder."""
    root = out / "own"
    if (root / "masks").is_dir():
        return root
    tmp = out / "own_source"
    shutil.rmtree(tmp, ignore_errors=True)
    make_synthetic(tmp, num_classes=12, num_train=800, num_val=200, size=[160, 120], seed=3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for split in ("train", "val"):
        for f in sorted((tmp / "images" / split).iterdir()):
            f.rename(root / "images" / f"{split}_{f.name}")
        for f in sorted((tmp / "labels" / split).iterdir()):
            f.rename(root / "masks" / f"{split}_{f.name}")
    shutil.rmtree(tmp)
    return root


def run(name: str, cfg, out: Path) -> dict:
    result = out / name / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    t = time.perf_counter()
    report = Trainer(cfg, overwrite=True).train()
    wall = time.perf_counter() - t
    rec = {"run": name, "iters": cfg.schedule.iters, "row": summary_row(report), "seconds": round(wall, 1),
           "sec_per_iter": round(wall / cfg.schedule.iters, 3), "num_classes": report.get("num_classes")}
    result.write_text(json.dumps(rec, indent=1))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/starter")
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    synthetic = prepare_dataset(out / "synthetic")
    common = ["train.progress=false", "train.tensorboard=false"]
    records = []
    demo = load_config(DEMO_CONFIG, ["loss.region.type=rr", f"schedule.iters={args.iters}",
                                     f"data.train.root={synthetic}", f"data.val.root={synthetic}",
                                     f"loss.counts={synthetic / 'counts.json'}", f"work_dir={out / 'demo_rr'}",
                                     "name=demo_rr", *common])
    records.append(run("demo_rr", demo, out))
    for name, root in (("starter_synthetic", synthetic), ("starter_own", own_layout(out))):
        text, _ = starter_config(root, iters=args.iters, name=name)
        path = out / f"{name}.yaml"
        path.write_text(text)
        cfg = load_config(path, [f"work_dir={out / name}", *common])
        records.append(run(name, cfg, out))
    (out / "starter_config.json").write_text(json.dumps(records, indent=1))
    print("| run | iterations | mIoU | frequent | common | rare | s / iteration |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        row = {k: 100 * v for k, v in r["row"].items()}
        print(f"| {r['run']} | {r['iters']} | {row['overall_mIoU']:.2f} | {row['frequent_mIoU']:.2f} | "
              f"{row['common_mIoU']:.2f} | {row['rare_mIoU']:.2f} | {r['sec_per_iter']} |")


if __name__ == "__main__":
    main()
