"""Optimizers with parameter groups, and the iteration-based learning-rate schedule.

Groups follow mmsegmentation's habits: no weight decay on norm layers, biases, position embeddings and
relative position tables; optional layer-wise lr decay (BEiT) through the model's ``layer_id(name)`` and
``num_layers``; an lr multiplier for everything outside the backbone (the heads).
The schedule is a pure function of the iteration (linear warm-up, then poly decay), so resuming needs no
scheduler state beyond the iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from rrseg.engine.config import OptimConfig, ScheduleConfig

__all__ = ["build_optimizer", "lr_at", "param_groups", "set_lr"]

NO_DECAY_KEYWORDS = (
    "absolute_pos_embed",
    "relative_position_bias_table",
    "pos_embed",
    "cls_token",
    "rel_pos",
    "position_embedding",
)


def _no_decay(name: str, param: nn.Parameter, extra: set[str]) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_KEYWORDS) or name in extra


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Trainable parameters split by (weight decay, lr scale); each group carries ``lr_scale``."""
    extra: set[str] = set()
    if hasattr(model, "no_weight_decay"):
        extra = {str(n) for n in model.no_weight_decay()}
    backbone_names: set[str] = set()
    if hasattr(model, "backbone") and isinstance(model.backbone, nn.Module):
        backbone_names = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()}
    layer_decay = cfg.layer_decay
    use_layers = layer_decay is not None and hasattr(model, "layer_id") and hasattr(model, "num_layers")
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = cfg.no_decay_norm_bias and _no_decay(name, p, extra)
        scale = 1.0
        if use_layers:
            # mmseg's LayerDecayOptimizerConstructor: the heads (the last id) keep the full lr
            scale *= layer_decay ** (model.num_layers - 1 - model.layer_id(name))
        if backbone_names and name not in backbone_names:
            scale *= cfg.head_lr_mult
        key = (no_decay, scale)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                "lr_scale": scale,
                "lr": cfg.lr * scale,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[1], k[0]))]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    for g in groups:
        g.pop("names")
    if cfg.type == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.type == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.type!r}")


def lr_at(iteration: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """mmsegmentation's poly schedule with linear warm-up: lr at ``iteration`` (0-based)."""
    progress = min(iteration, cfg.iters) / max(cfg.iters, 1)
    lr = (base_lr - cfg.min_lr) * (1.0 - progress) ** cfg.power + cfg.min_lr
    if cfg.warmup_iters > 0 and iteration < cfg.warmup_iters:
        k = (1.0 - iteration / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
        lr *= 1.0 - k
    return lr


def set_lr(optimizer: torch.optim.Optimizer, iteration: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Set every group's lr for ``iteration``; returns the unscaled lr."""
    lr = lr_at(iteration, base_lr, cfg)
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr
