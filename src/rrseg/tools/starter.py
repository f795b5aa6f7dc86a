"""A starter config for a user's own dataset folder (``rrseg init DATA_DIR``): sized from the data, not ADE20K.

What is read from the data (:func:`rrseg.data.folder.inspect_folder`): the layout, the splits (or the
automatic split), the class count and ignore index, and the images' sizes (headers only). What follows:

- data: the folder's splits; ``scale`` = the median image's own size (``[long, short]``) up to a short side of
  512, then mmseg's 512; ``crop_size`` = the largest multiple of 32 that fits the rescaled short side (at most
  512); the random rescale range of the demo (0.75-1.5) for small images, mmseg's (0.5-2.0) for larger ones;
- model: the demo's small DeepLabV3+ with its shipped backbone for small sets (up to 5000 images with a short
  side up to 256), which trains on a CPU; else UPerNet Swin-T from its ImageNet weights (the paper's main model,
  for a GPU) with the released Swin recipe;
- schedule: ``iters`` (default 1000 for the small model, 40000 for Swin), a warm-up of 5 % of them (at most 1500),
  evaluation and checkpoints every fifth of the run, a log record every hundredth (at most every 50);
- loss: cross-entropy + Region Rebalance, the class counts counted from the training labels at the first start.

Every choice is written in the file as a comment, so the file is also the explanation.
"""

from __future__ import annotations

import os
from pathlib import Path
from statistics import median_high

from rrseg.data.folder import FolderSummary, inspect_folder
from rrseg.models.weights import PAPER_WEIGHTS

__all__ = ["SMALL_IMAGES", "SMALL_SET", "starter_config", "summary_lines"]

SMALL_SET = 5000  # images: up to this many (with small images) get the CPU-sized model
SMALL_IMAGES = 256  # short side, pixels


def _pick(splits: dict[str, int], names: tuple[str, ...], avoid: str | None = None) -> str | None:
    for name in names:
        if name in splits and name != avoid:
            return name
    return next((s for s in splits if s != avoid), None)


def starter_config(root: str | os.PathLike, iters: int | None = None, name: str | None = None,
                   summary: FolderSummary | None = None) -> tuple[str, FolderSummary]:
    """(the starter config's YAML text, what was found) for the dataset folder ``root``."""
    s = summary or inspect_folder(root)
    root = Path(s.root)
    name = name or root.name
    if not s.image_sizes:
        h, w = 512, 512
    else:
        h, w = median_high(hw[0] for hw in s.image_sizes), median_high(hw[1] for hw in s.image_sizes)
    long_side, short_side = max(h, w), min(h, w)
    if short_side > 512:
        scale = [round(long_side * 512 / short_side), 512]
    else:
        scale = [long_side, short_side]
    crop = max(32, min(512, scale[1]) // 32 * 32)
    small = s.num_samples <= SMALL_SET and short_side <= SMALL_IMAGES
    iters = iters or (1000 if small else 40000)
    warmup = max(1, min(1500, round(iters * 0.05)))
    every_fifth = max(1, iters // 5)
    log_every = max(1, min(50, iters // 100))
    train_split = _pick(s.splits, ("train", "training"))
    val_split = _pick(s.splits, ("val", "validation", "test"), avoid=train_split) or train_split
    split_how = {
        "auto": f"no split in the data: the automatic split, {s.val_fraction:g} of the images for validation "
                f"(by name hash, seed {s.split_seed})",
        "lists": "the split list files",
        "folders": "the split folders",
    }.get(s.mode, s.mode)
    options = f"{{val_fraction: {s.val_fraction:g}}}" if s.mode == "auto" else "{}"
    sizes = f"{w}x{h}" if s.image_sizes else "unknown (no image read)"
    counts = ", ".join(f"{k}: {v}" for k, v in s.splits.items())
    lines = [
        f"# Starter config for {root} (rrseg init), from what the data holds:",
        f"#   {s.layout}",
        f"#   {s.num_classes} classes ({s.classes_from}), ignore index {s.ignore_index}; images per split: {counts}",
        f"#   median image size {sizes}; {split_how}",
        f"# Train: rrseg train {name}.yaml   (into work_dirs/{name}; `rrseg config show {name}.yaml`: every key)",
        f"name: {name}",
        "model:",
    ]
    if small:
        lines += [
            "  # a small set of small images: the demo's model (1.4M parameters; trains on a CPU) from its shipped",
            "  # backbone (pretrained on a separate synthetic set)",
            "  name: deeplabv3plus_small",
            "  pretrained: rrseg:demo_small_backbone",
        ]
    else:
        lines += [
            "  # UPerNet Swin-T from its ImageNet-1K weights (downloaded by timm once): the paper's main model; a GPU",
            "  name: upernet_swin_t",
            f"  pretrained: {PAPER_WEIGHTS['upernet_swin_t']}",
            "  options: {drop_path_rate: 0.3}",
        ]
    lines += [
        f"  num_classes: 0            # 0: from the data ({s.num_classes})",
        "data:",
        f"  train: {{type: folder, root: {root}, split: {train_split}, options: {options}}}",
        f"  val: {{type: folder, root: {root}, split: {val_split}, options: {options}}}",
        f"  batch_size: {16 if small else 4}             # per process",
        "  workers: 2",
        f"  scale: {scale}         # (long, short) side the images are rescaled to before the random ratio",
        f"  ratio_range: {[0.75, 1.5] if small else [0.5, 2.0]}",
        f"  crop_size: [{crop}, {crop}]      # a multiple of 32 that fits the rescaled images",
        "optim:",
    ]
    if small:
        lines += ["  type: adamw", "  lr: 0.008", "  weight_decay: 0.01      # the demo's"]
    else:
        lines += ["  type: adamw", "  lr: 0.00006", "  weight_decay: 0.01",
                  "  no_decay: swin_release  # the released Swin recipe"]
    lines += [
        "schedule:",
        f"  iters: {iters}",
        f"  warmup_iters: {warmup}         # 5 % of the run (at most 1500)",
        f"  warmup_ratio: {0.001 if small else 1e-06}",
        "  power: 1.0",
        "eval:",
        f"  interval: {every_fifth}             # a fifth of the run; best.safetensors keeps the best",
        f"  batch_size: {16 if small else 1}",
        "train:",
        f"  log_interval: {log_every}",
        f"  checkpoint_interval: {every_fifth}",
        "loss:",
        "  region: {type: rr}       # Region Rebalance as released (training only; inference unchanged)",
        "  counts: null             # counted from the training labels at the first start (work_dir/counts.json)",
    ]
    return "\n".join(lines) + "\n", s


def summary_lines(s: FolderSummary) -> list[str]:
    """What ``rrseg init`` prints about the data it read."""
    out = [f"{s.root}: {s.layout}",
           f"{s.num_classes} classes ({s.classes_from}), ignore index {s.ignore_index}; "
           + ", ".join(f"{k}: {v} images" for k, v in s.splits.items())]
    if s.num_problems:
        out.append(f"{s.num_problems} problem(s) pairing images and labels, e.g.: {s.problems[0]}")
    return out
