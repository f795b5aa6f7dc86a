"""Models for inference from rrseg checkpoints: the architecture comes from the checkpoint's metadata."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from rrseg.engine import checkpoint as ckpt
from rrseg.engine.config import Config, parse_config
from rrseg.errors import RRSegError

__all__ = ["load_for_inference", "load_into"]


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights for inference; training-only ``rebalance.*`` entries neither need to be in the
    checkpoint nor are taken from it."""
    state = {k: v for k, v in state.items() if not k.startswith("rebalance.")}
    state.update({k: v for k, v in model.state_dict().items() if k.startswith("rebalance.")})
    ckpt.load_weights(model, state, source, strict=True)


def load_for_inference(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict, Config]:
    """(model in eval mode, metadata, config) from a checkpoint file, checkpoint folder or work dir."""
    from rrseg.models import build_model

    file = ckpt.find_checkpoint(path)
    state, meta = ckpt.read_weights(file)
    if meta.get("format") != "rrseg" or "config" not in meta:
        raise RRSegError(f"{file}: not an rrseg checkpoint (no model config in its metadata); "
                         f"use `rrseg eval CONFIG CHECKPOINT` with the config instead")
    cfg = parse_config(meta["config"])
    model = build_model(cfg.model.name, num_classes=int(meta["num_classes"]), **cfg.model.options)
    load_into(model, state, str(file))
    return model.to(device).eval(), meta, cfg


def metadata_value(meta: dict[str, Any], key: str, default: Any) -> Any:
    value = meta.get(key)
    return default if value in (None, "", []) else value
