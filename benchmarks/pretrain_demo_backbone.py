"""The recipe of the demo's pretrained backbone (``rrseg:demo_small_backbone``), as ImageNet is the paper's.

1. A class-balanced synthetic set whose classes are not the demo's (``make_synthetic(kind="pretrain")``:
   24 classes, each in the same number of images; textures from another family and near-complementary
   colour pairs, so no class shares a colour-and-texture design with the demo's long tail; checked by
   tests/data/test_synthetic.py). 2000 training + 200 validation images of 128x96, seed 0.
2. The demo's model (``deeplabv3plus_small``) trained on it from scratch with plain cross-entropy, the demo
   config's crop and augmentation, AdamW lr 0.002 (pinned below), ``--iters`` iterations (default 1500), seed 0.
3. The backbone's weights (``backbone.model.*``, timm names) written as safetensors to
   ``src/rrseg/models/pretrained/demo_small_backbone.safetensors`` (package data, ~5 MB), with this recipe
   and the pretraining validation mIoU in the file's metadata. Decoder and classifier are not kept.

  python benchmarks/pretrain_demo_backbone.py                 # about 10 min on 2 CPU cores
  python benchmarks/pretrain_demo_backbone.py --dry-run       # tiny: checks the recipe end to end
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from rrseg.data.synthetic import make_synthetic
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer
from rrseg.tools.demo import DEMO_CONFIG

PACKAGED = Path(__file__).resolve().parents[1] / "src/rrseg/models/pretrained/demo_small_backbone.safetensors"
DATASET = {"num_classes": 24, "num_train": 2000, "num_val": 200, "size": (128, 96), "seed": 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/pretrain", help="dataset and training work dir go here")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--weights", default=str(PACKAGED), help="where the backbone weights are written")
    p.add_argument("--dry-run", action="store_true", help="tiny dataset and 4 iterations; writes into --out")
    args = p.parse_args()
    out = Path(args.out)
    dataset = dict(DATASET)
    if args.dry_run:
        dataset.update(num_train=48, num_val=8)
        args.iters, args.weights = 4, str(out / "demo_small_backbone.safetensors")
    t0 = time.perf_counter()
    root = out / "data"
    if not (root / "counts.json").is_file():
        make_synthetic(root, kind="pretrain", workers=1, **dataset)
    work = out / f"train_{args.iters}"
    cfg = load_config(str(DEMO_CONFIG), [
        f"data.train.root={root}", f"data.val.root={root}", f"loss.counts={root / 'counts.json'}",
        f"schedule.iters={args.iters}", f"work_dir={work}", "name=pretrain-demo-backbone", "train.seed=0",
        "train.tensorboard=false",
        # pinned: the recipe as it was run (the demo's own settings later moved on, and start from this file)
        "model.pretrained=null", "optim.lr=0.002", "schedule.warmup_iters=50", "data.batch_size=16",
    ])
    done = work / "report.json"  # a finished run of the same recipe is reused (e.g. after an interrupted export)
    report = json.loads(done.read_text()) if done.is_file() else Trainer(cfg, overwrite=True).train()
    state = load_file(str(work / "inference.safetensors"))
    prefix = "backbone.model."
    backbone = {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}
    meta = {
        "recipe": "benchmarks/pretrain_demo_backbone.py",
        "model": cfg.model.name,
        "dataset": json.dumps({**dataset, "kind": "pretrain"}),
        "iterations": str(args.iters),
        "pretrain_val_mIoU": f"{100 * report['overall']['mIoU']:.2f}",
    }
    Path(args.weights).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.weights).with_suffix(".tmp")
    save_file(backbone, str(tmp), metadata=meta)
    tmp.replace(args.weights)
    size_mb = Path(args.weights).stat().st_size / 1e6
    print(f"{len(backbone)} backbone tensors ({size_mb:.1f} MB) -> {args.weights}; pretraining val mIoU "
          f"{meta['pretrain_val_mIoU']}; {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", stream=sys.stdout)  # rrseg's messages, as the CLI shows them
    logging.getLogger("rrseg").setLevel(logging.INFO)
    main()
