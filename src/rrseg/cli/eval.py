"""Evaluate a checkpoint on the validation split of a config: per class and per frequency group.

Writes report.json, report.md and iou_vs_count.png (with eval.group_by pixel or both, also
iou_vs_pixel_count.png) to --out (default: a folder `eval_<checkpoint>` next to the checkpoint). `--slide`
uses sliding-window inference (eval.crop_size / eval.stride), `--tta` multi-scale (0.5, 0.75, 1.0, 1.25, 1.5,
1.75) + flip. The evaluation is the trainer's (one Evaluator), in the config's precision (train.amp; `--set
train.amp=none` for float32). Prints the report's table (overall, per group, the worst classes) and the files
written, also with -q.

examples:
  rrseg eval configs/demo.yaml runs/demo/rr/best.safetensors
  rrseg eval configs/upernet_beit_b/ade20k_160k_rr.yaml work_dirs/upernet_beit_b_ade20k_160k_rr --slide --tta
  rrseg eval --import my_models my_config.yaml work_dirs/my_config   # a model registered in ./my_models.py
"""

from __future__ import annotations

import argparse

from rrseg.cli._extensions import add_import_argument

TTA_SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (model and validation data), or a packaged preset's name")
    p.add_argument("checkpoint", help=".safetensors file, checkpoint folder or work dir")
    p.add_argument("--tta", action="store_true", help="multi-scale + flip test-time augmentation")
    p.add_argument("--slide", action="store_true", help="sliding-window inference")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    p.add_argument("--out", help="output folder for the report")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_import_argument(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rrseg.engine import checkpoint as ckpt
    from rrseg.engine.components import build_datasets, build_evaluator, build_val_loader, resolve_counts
    from rrseg.engine.config import load_config
    from rrseg.engine.distributed import setup
    from rrseg.engine.inference import load_into
    from rrseg.errors import RRSegError
    from rrseg.io import check_writable
    from rrseg.metrics.report import format_report
    from rrseg.models import build_model

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
    # the trainer's look-up: loss.counts, else the counts.json of the run the checkpoint belongs to, else counted;
    # the trainer's evaluator (eval.group_by / group_sizes checked as it is built, before any inference)
    counts = resolve_counts(cfg, train_ds, num_classes, ckpt.work_dir_of(file))
    evaluator = build_evaluator(cfg, num_classes, getattr(val_ds, "ignore_index", 255), counts, val_ds, info.device)
    report = evaluator.report(model, build_val_loader(cfg, val_ds, info))
    report.update(name=cfg.name, checkpoint=str(file), eval=dict(mode=cfg.eval.mode, scales=cfg.eval.scales,
                                                                  flip=cfg.eval.flip))
    if info.is_main:
        files = evaluator.write(out, report, cfg.name, title=f"{cfg.name}: {file}")
        print(format_report(report))
        print(f"wrote {out}/{', '.join(files)}")
    return 0
