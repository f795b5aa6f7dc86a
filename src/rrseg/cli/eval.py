"""Evaluate a checkpoint on the validation split of a config: per class and per frequency group.

Writes report.json, report.md and iou_vs_count.png (with eval.group_by pixel or both, also
iou_vs_pixel_count.png) to --out (default: a folder `eval_<checkpoint>` next to the checkpoint). `--slide`
uses sliding-window inference (eval.crop_size / eval.stride), `--tta` multi-scale (0.5, 0.75, 1.0, 1.25, 1.5,
1.75) + flip.

examples:
  rrseg eval configs/demo.yaml runs/demo/rr/best.safetensors
  rrseg eval configs/upernet_beit_b/ade20k_160k_rr.yaml work_dirs/beit_rr --slide --tta
"""

from __future__ import annotations

import argparse

TTA_SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (model and validation data)")
    p.add_argument("checkpoint", help=".safetensors file, checkpoint folder or work dir")
    p.add_argument("--tta", action="store_true", help="multi-scale + flip test-time augmentation")
    p.add_argument("--slide", action="store_true", help="sliding-window inference")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    p.add_argument("--out", help="output folder for the report")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from rrseg.engine import checkpoint as ckpt
    from rrseg.engine.config import load_config
    from rrseg.engine.distributed import setup
    from rrseg.engine.evaluator import evaluate
    from rrseg.engine.inference import load_into
    from rrseg.engine.loader import ShardSampler, collate
    from rrseg.engine.trainer import build_datasets, eval_groups
    from rrseg.errors import RRSegError
    from rrseg.io import atomic_write_json, atomic_write_text, check_writable
    from rrseg.metrics.report import build_report, format_report, markdown_report, plot_iou_vs_count
    from rrseg.models import build_model
    from rrseg.rebalance import ClassCounts

    overrides = list(args.set)
    if args.slide:
        overrides.append("eval.mode=slide")
    if args.tta:
        overrides += [f"eval.scales={TTA_SCALES}", "eval.flip=true"]
    cfg = load_config(args.config, overrides)
    file = ckpt.find_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else file.parent / f"eval_{file.stem}"
    check_writable(out)  # fail now, but create nothing until the report is written
    info = setup(args.device)
    train_ds, val_ds, _, _ = build_datasets(cfg)
    num_classes = cfg.model.num_classes or val_ds.num_classes
    model = build_model(cfg.model.name, num_classes=num_classes, **cfg.model.options)
    state, meta = ckpt.read_weights(file)
    try:
        load_into(model, state, str(file))
    except RRSegError as e:  # say which model the checkpoint holds, when its metadata tells
        config = meta.get("config")
        trained = config.get("model", {}).get("name") if isinstance(config, dict) else None
        if not trained or trained == cfg.model.name:
            raise
        raise RRSegError(f"{e} (the checkpoint holds a {trained}, the config builds a {cfg.model.name})") from None
    model.to(info.device).eval()
    counts = None
    if cfg.loss.counts:
        counts = ClassCounts.load(cfg.loss.counts, num_classes)
    elif (file.parent / "counts.json").is_file():
        counts = ClassCounts.load(file.parent / "counts.json", num_classes)
    elif (file.parent.parent.parent / "counts.json").is_file():  # work_dir/checkpoints/iter_x/model.safetensors
        counts = ClassCounts.load(file.parent.parent.parent / "counts.json", num_classes)
    else:
        from rrseg.data.stats import compute_stats

        counts, _ = compute_stats(train_ds.label_files, num_classes, getattr(train_ds, "reduce_zero_label", False),
                                  getattr(train_ds, "ignore_index", 255))
    eval_groups(cfg, counts)  # eval.group_by / group_sizes checked before the evaluation
    loader = torch.utils.data.DataLoader(val_ds, batch_size=cfg.eval.batch_size, collate_fn=collate,
                                         sampler=ShardSampler(len(val_ds), info.rank, info.world_size),
                                         num_workers=min(cfg.data.workers, 2))
    cm = evaluate(model, loader, num_classes, cfg.eval, info.device, getattr(val_ds, "ignore_index", 255))
    report = build_report(cm.compute(), getattr(val_ds, "class_names", None), counts.image_counts,
                          tuple(cfg.eval.group_sizes) if cfg.eval.group_sizes else None,
                          pixel_counts=counts.pixel_counts, group_by=cfg.eval.group_by)
    report.update(name=cfg.name, checkpoint=str(file), eval=dict(mode=cfg.eval.mode, scales=cfg.eval.scales,
                                                                  flip=cfg.eval.flip))
    if info.is_main:
        atomic_write_json(out / "report.json", report)
        atomic_write_text(out / "report.md", markdown_report(report, title=f"{cfg.name}: {file}"))
        plots = ["iou_vs_count.png"]
        plot_iou_vs_count({cfg.name: report}, out / plots[0])
        if cfg.eval.group_by != "region":
            plots.append("iou_vs_pixel_count.png")
            plot_iou_vs_count({cfg.name: report}, out / plots[1], count="pixel")
        print(format_report(report))
        print(f"wrote {out}/report.json, report.md, {', '.join(plots)}")
    return 0
