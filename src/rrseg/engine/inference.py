"""Models for inference from rrseg checkpoints: the architecture comes from the checkpoint's metadata."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rrseg.engine import checkpoint as ckpt
from rrseg.engine.config import Config, parse_config
from rrseg.errors import RRSegError

__all__ = ["class_palette", "load_for_inference", "load_into", "predict_label"]


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


def class_palette(palette: Sequence[Sequence[int]] | None, num_classes: int) -> list[list[int]]:
    """One RGB colour per class: the given palette, completed by fixed pseudo-random colours for classes
    without one (so a prediction can always be drawn)."""
    colours = [[int(v) for v in c] for c in (palette or [])][:num_classes]
    if len(colours) < num_classes:
        rng = np.random.default_rng(0)
        colours += rng.integers(0, 256, (num_classes - len(colours), 3)).tolist()
    return colours


def predict_label(model: nn.Module, image: np.ndarray, cfg: Config, num_classes: int,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """The predicted class map [H, W] (int64) of one RGB uint8 image [H, W, 3], at the image's size, with the
    config's test resize, normalisation and test-time augmentation (as evaluation does)."""
    from torchvision import tv_tensors

    from rrseg.data.transforms import test_transforms
    from rrseg.engine.evaluator import predict_probs

    tf = test_transforms(scale=tuple(cfg.data.scale), mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))
    x, _ = tf(tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()),
              tv_tensors.Mask(torch.zeros(image.shape[:2], dtype=torch.uint8)))
    probs = predict_probs(model, torch.as_tensor(x).float()[None].to(device), cfg.eval, num_classes,
                          out_size=image.shape[:2])
    return probs.argmax(1)[0].cpu().numpy()
