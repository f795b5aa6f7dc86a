"""Data pipeline throughput against the demo model's appetite, and a learnability check of the synthetic data.

Part 1 (issue 3, section 5): images per second of the ADE20K training pipeline (rrseg.data.train_transforms
with mmseg's defaults: rescale of (2048, 512) by 0.5-2.0, 512x512 crop with cat_max_ratio 0.75, flip,
photometric distortion, normalisation, padding) on synthetic 683x512 JPEG/PNG pairs in the ADEChallengeData2016
layout, through a DataLoader with 1 and 2 workers; the same for the demo's own pipeline (the synthetic
dataset, 96x128 crops); and next to it the train-step time of the demo model (forward, backward, AdamW
step), so that one can read whether one loader worker feeds the model (target: at least 2x what it consumes).

Part 2 (--learn-minutes N): trains the demo model with plain cross-entropy on the synthetic dataset for N
minutes and reports validation IoU per frequency group and how often each rare look-alike is taken for its
frequent original: the data should be learnable (frequent classes reach a meaningful IoU within minutes)
while the rare classes stay hard.

The demo model is ``rrseg.models.build_model("deeplabv3plus_tiny")`` when rrseg.models provides it, else a
stand-in of the same backbone (timm BasicBlock ResNet 16-128 wide, one block per stage, deep stem, output
stride 8) with a small convolutional head; the output says which one ran.

usage:
  python benchmarks/data_pipeline.py                       # part 1, writes nothing
  python benchmarks/data_pipeline.py --learn-minutes 3 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# OpenMP threads that spin while waiting make a 2-thread step up to 10x slower when other processes share the
# two cores (measured here: 5.7 s vs 0.52 s per demo step); passive waiting avoids it. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rrseg.data import ADE20KDataset, FolderDataset, seg_collate, test_transforms, train_transforms
from rrseg.data.synthetic import design_classes, make_synthetic, render_image


# ---- data -------------------------------------------------------------------------------------------------
def write_ade_like(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 683x512 JPEG/PNG pairs in the ADEChallengeData2016 layout (labels 0 = other, 1..150)."""
    ade = root / "ADEChallengeData2016"
    img_dir, lbl_dir = ade / "images" / "training", ade / "annotations" / "training"
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    designs = design_classes(150, 20210, 2000)
    counts = np.array([d.train_images for d in designs], np.float64)
    rng = np.random.default_rng(seed)
    for i in range(count):
        present = sorted(set(rng.choice(150, size=8, replace=False, p=counts / counts.sum()).tolist()) | {0})
        image, label = render_image(designs, present, (683, 512), np.random.default_rng([seed, i]))
        raw = np.where(label == 255, 0, label.astype(np.int64) + 1).astype(np.uint8)
        Image.fromarray(image).save(img_dir / f"ADE_train_{i:08d}.jpg", quality=90)
        Image.fromarray(raw, mode="L").save(lbl_dir / f"ADE_train_{i:08d}.png")
    return ade


def loader_rate(dataset, workers: int, batch: int, batches: int, warmup: int = 2, worker_init_fn=None) -> float:
    """Images per second delivered by a DataLoader (after ``warmup`` batches that start the workers)."""
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batch * (warmup + batches))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                         collate_fn=seg_collate, drop_last=True, worker_init_fn=worker_init_fn)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += b["image"].shape[0]
    rate = n / (time.perf_counter() - t0)
    del it, loader
    return rate


# ---- the demo model ---------------------------------------------------------------------------------------
class StandInModel(nn.Module):
    """deeplabv3plus_tiny's backbone (BasicBlock ResNet 16-128, deep stem, output stride 8) + a small head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        from timm.models.resnet import BasicBlock, ResNet

        self.backbone = ResNet(block=BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=8,
                               stem_type="deep", output_stride=8, num_classes=0, global_pool="")
        self.head = nn.Sequential(nn.Conv2d(128, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(64, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))


def build_demo_model(num_classes: int) -> tuple[nn.Module, str]:
    try:
        from rrseg.models import build_model

        return build_model("deeplabv3plus_tiny", num_classes=num_classes), "rrseg.models deeplabv3plus_tiny"
    except (ImportError, AttributeError, KeyError, ValueError):
        return StandInModel(num_classes), "stand-in (timm ResNet 16-128 OS8 + conv head)"


def seg_loss(out, labels: torch.Tensor) -> torch.Tensor:
    def ce(logits: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels, ignore_index=255)

    if isinstance(out, torch.Tensor):
        return ce(out)
    loss = ce(out.logits)
    if getattr(out, "aux_logits", None) is not None:
        loss = loss + 0.4 * ce(out.aux_logits)
    return loss


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def step_time(model: nn.Module, num_classes: int, batch: int, size: tuple[int, int], steps: int = 8) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, *size)
    y = torch.randint(0, num_classes, (batch, *size))
    model.train()
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = seg_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ---- learnability -----------------------------------------------------------------------------------------
def learnability(root: Path, minutes: float, batch: int, workers: int, loss_kind: str = "ce",
                 max_steps: int | None = None) -> dict:
    """Train the demo model for ``minutes`` with cross-entropy ("ce") or balanced softmax on region counts
    ("balanced": logits + log prior, a simple rebalancing baseline), then score the validation split."""
    torch.manual_seed(0)
    train = FolderDataset(root, "train", train_transforms(crop_size=(96, 128), scale=(128, 96)))
    val = FolderDataset(root, "val", test_transforms(scale=None))
    c = train.num_classes
    model, model_name = build_demo_model(c)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(train, batch_size=batch, shuffle=True, num_workers=workers,
                                         collate_fn=seg_collate, drop_last=True, persistent_workers=workers > 0)
    counts = json.loads((root / "counts.json").read_text())["image_counts"]
    prior = torch.log(torch.tensor(counts, dtype=torch.float32).clamp(min=1) / sum(counts))
    budget = minutes * 60.0
    t0 = time.perf_counter()
    steps, losses = 0, []
    model.train()
    def progress() -> float:  # share of the schedule done: by steps when given, else by wall-clock time
        return steps / max_steps if max_steps else (time.perf_counter() - t0) / budget

    while progress() < 1.0:
        for b in loader:
            frac = min(1.0, progress())
            for g in opt.param_groups:
                g["lr"] = 2e-3 * (1.0 - frac) ** 0.9
            out = model(b["image"])
            if loss_kind == "balanced":
                shift = prior[None, :, None, None]
                out = out + shift if isinstance(out, torch.Tensor) else type(out)(
                    out.logits + shift, out.features, None if out.aux_logits is None else out.aux_logits + shift)
            loss = seg_loss(out, b["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            losses.append(float(loss.detach()))
            if progress() >= 1.0:
                break
    train_s = time.perf_counter() - t0
    model.eval()
    conf = torch.zeros(c, c, dtype=torch.int64)
    with torch.no_grad():
        for i in range(0, len(val), 32):
            items = [val[j] for j in range(i, min(len(val), i + 32))]
            batch_ = seg_collate(items)
            pred = predict(model, batch_["image"]).argmax(1)
            lab = batch_["label"]
            keep = lab != 255
            conf += torch.bincount(lab[keep] * c + pred[keep], minlength=c * c).reshape(c, c)
    tp = conf.diag().double()
    iou = (tp / (conf.sum(0) + conf.sum(1) - conf.diag()).double().clamp(min=1)).numpy()
    design = json.loads((root / "design.json").read_text())
    order = np.argsort([-d["train_images"] for d in design], kind="stable")
    n_freq, n_common = round(c * 20 / 150), round(c * 55 / 150)
    groups = {"frequent": order[:n_freq], "common": order[n_freq:n_freq + n_common], "rare": order[n_freq + n_common:]}
    look_alikes = {}
    for k, d in enumerate(design):
        if d["twin_of"] is not None:
            row = conf[k].double()
            look_alikes[d["name"]] = {
                "iou": float(iou[k]),
                "taken_for_original": float(row[d["twin_of"]] / max(1.0, float(row.sum()))),
                "original": design[d["twin_of"]]["name"],
            }
    return {
        "model": model_name,
        "loss": loss_kind,
        "minutes": minutes,
        "train_seconds": round(train_s, 1),
        "steps": steps,
        "batch": batch,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "mIoU": float(iou.mean()),
        "groups": {g: float(iou[idx].mean()) for g, idx in groups.items()},
        "per_class": {design[k]["name"]: {"images": design[k]["train_images"], "iou": float(iou[k])} for k in order},
        "look_alikes": look_alikes,
    }


def pipeline_part(tmp: Path, syn: Path, args: argparse.Namespace) -> dict:
    results: dict = {}
    t0 = time.perf_counter()
    ade = write_ade_like(tmp / "ade", args.pairs)
    results["ade_pairs_written_s"] = round(time.perf_counter() - t0, 1)
    ade_ds = ADE20KDataset(ade, "train", train_transforms())
    demo_ds = FolderDataset(syn, "train", train_transforms(crop_size=(96, 128), scale=(128, 96)))
    rows = []
    for workers in (1, 2):
        ade_rate = loader_rate(ade_ds, workers, batch=8, batches=args.batches)
        demo_rate = loader_rate(demo_ds, workers, batch=args.demo_batch, batches=args.batches * 4)
        rows.append({"workers": workers, "ade20k_pipeline_img_s": ade_rate, "demo_pipeline_img_s": demo_rate})
        print(f"{workers} worker(s): ADE20K pipeline {ade_rate:.1f} img/s, demo pipeline {demo_rate:.1f} img/s",
              flush=True)
    results["loaders"] = rows
    model, model_name = build_demo_model(demo_ds.num_classes)
    demo_step = step_time(model, demo_ds.num_classes, args.demo_batch, (96, 128))
    ade_model, _ = build_demo_model(150)
    ade_step = step_time(ade_model, 150, 8, (512, 512), steps=3)
    results["model"] = model_name
    results["demo_step_s"] = demo_step
    results["demo_model_img_s"] = args.demo_batch / demo_step
    results["ade_step_s"] = ade_step
    results["ade_model_img_s"] = 8 / ade_step
    print(f"model: {model_name}; demo step (batch {args.demo_batch}, 96x128): {demo_step * 1000:.0f} ms = "
          f"{args.demo_batch / demo_step:.1f} img/s; 512x512 step (batch 8): {ade_step * 1000:.0f} ms = "
          f"{8 / ade_step:.1f} img/s", flush=True)
    one = rows[0]["demo_pipeline_img_s"] / results["demo_model_img_s"]
    results["one_worker_supply_ratio_demo"] = one
    results["one_worker_supply_ratio_ade"] = rows[0]["ade20k_pipeline_img_s"] / results["ade_model_img_s"]
    print(f"one worker supplies {one:.1f}x what the demo model consumes (target >= 2x); ADE20K-style: "
          f"{results['one_worker_supply_ratio_ade']:.1f}x", flush=True)
    return results


def learnability_part(syn: Path, args: argparse.Namespace, loss_kind: str) -> dict:
    res = learnability(syn, args.learn_minutes, args.demo_batch, workers=1, loss_kind=loss_kind,
                       max_steps=args.learn_steps)
    print(f"learnability ({res['model']}, {res['loss']}, {res['train_seconds']:.0f} s, {res['steps']} steps): "
          f"mIoU {res['mIoU']:.3f}; " + ", ".join(f"{g} {v:.3f}" for g, v in res["groups"].items()), flush=True)
    for name, la in res["look_alikes"].items():
        print(f"  look-alike {name}: IoU {la['iou']:.3f}, {100 * la['taken_for_original']:.0f}% of its "
              f"pixels taken for {la['original']}", flush=True)
    print("  per class (train images: IoU): " + ", ".join(
        f"{k} {v['images']}: {v['iou']:.2f}" for k, v in res["per_class"].items()), flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=48, help="synthetic 683x512 pairs (default 48)")
    ap.add_argument("--batches", type=int, default=6, help="timed batches per loader setting (default 6)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the model (default 2)")
    ap.add_argument("--demo-batch", type=int, default=16, help="demo batch size (default 16)")
    ap.add_argument("--learn-minutes", type=float, default=0.0, help="also run the learnability check (minutes)")
    ap.add_argument("--learn-losses", default="ce", help="comma-separated: ce, balanced (default ce)")
    ap.add_argument("--learn-steps", type=int, default=None,
                    help="train for this many steps instead of --learn-minutes of wall-clock time")
    ap.add_argument("--skip-pipeline", action="store_true", help="only the learnability check")
    ap.add_argument("--synthetic", help="existing synthetic dataset folder (default: generate one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                     "torch": torch.__version__, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.synthetic:
            syn = Path(args.synthetic)
        else:
            t0 = time.perf_counter()
            syn = make_synthetic(tmp / "synthetic", verbose=False, workers=len(os.sched_getaffinity(0)))
            results["synthetic_generation_s"] = round(time.perf_counter() - t0, 1)
        results["synthetic_statistics"] = json.loads((syn / "synthetic.json").read_text())
        if not args.skip_pipeline:
            results.update(pipeline_part(tmp, syn, args))
        if args.learn_minutes > 0 or args.learn_steps:
            results["learnability"] = [
                learnability_part(syn, args, loss_kind.strip()) for loss_kind in args.learn_losses.split(",")
            ]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
