"""Train a segmentation model from a YAML config (iteration-based, with periodic evaluation).

Configs are YAML data with `_base_` inheritance; `--set key.sub=value` overrides any key (checked against
the schema). The config is a file or a packaged preset's name (`rrseg config list`: the demo and the paper
presets, configs/ in a checkout); `rrseg config show` prints it resolved, docs/CONFIG.md lists every key.
The resolved config, a JSONL log, TensorBoard events, checkpoints (safetensors + state), best.safetensors,
inference.safetensors (no RR weights) and the final report land in the work dir (work_dir in the config,
else work_dirs/<name>, name defaulting to the config file's name). A work dir that
holds a run is never overwritten silently: `--resume` continues it exactly where it stopped, `--overwrite`
replaces it. Ctrl-C or SIGTERM saves a checkpoint. A model, dataset or loss of your own: `--import MODULE` imports
the module that registers it (docs/CONTRIBUTING.md), the config names it. segmentation_models_pytorch's
architectures are models by name (model.name: smp_unet, smp_fpn, smp_deeplabv3plus, smp_upernet, smp_segformer,
...; model.options: smp's keyword arguments, e.g. encoder_name).

Prints set-up messages and a progress bar (loss, learning rate) while it trains (train.progress), and at the
end the evaluation table and the files written; -q hides the progress and keeps the table and the files.

examples:
  rrseg train configs/demo.yaml
  rrseg train upernet_swin_t/ade20k_160k_rr            # a packaged preset by name, from any directory
  rrseg train configs/upernet_swin_t/ade20k_160k_rr.yaml --set data.batch_size=4 optim.lr=1e-4
  rrseg train configs/demo.yaml --work-dir runs/demo_rr --resume
  rrseg train --import my_models my_config.yaml      # model.name: my_model, registered in ./my_models.py
  rrseg train my_config.yaml --set model.name=smp_fpn model.options.encoder_name=tu-resnet50 model.pretrained=timm
  torchrun --nproc_per_node=4 -m rrseg train configs/upernet_swin_t/ade20k_160k_rr.yaml
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_endpoint=HOST:29500 -m rrseg train CFG
"""

from __future__ import annotations

import argparse

from rrseg.cli._extensions import add_import_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file, or a packaged preset's name (rrseg config list)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    p.add_argument("--work-dir", help="output folder (overrides work_dir in the config)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the work dir")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run a work dir holds (its logs, checkpoints and reports are removed first); "
                        "without it (or --resume) such a work dir is refused")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    add_import_argument(p)


def run(args: argparse.Namespace) -> int:
    from rrseg.engine.config import load_config
    from rrseg.engine.trainer import Trainer

    overrides = list(args.set) + ([f"work_dir={args.work_dir}"] if args.work_dir else [])
    cfg = load_config(args.config, overrides)
    if args.resume and args.overwrite:
        from rrseg.errors import RRSegError

        raise RRSegError("--resume and --overwrite exclude each other")
    Trainer(cfg, resume=args.resume, device=args.device, overwrite=args.overwrite).train()
    return 0
