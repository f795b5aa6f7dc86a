"""Optimizers with parameter groups, and the iteration-based learning-rate schedule.

Weight-decay groups follow ``optim.no_decay`` (:data:`rrseg.engine.config.NoDecayRule`): mmseg's BEiT / ConvNeXt
rule (no decay on 1-D parameters, biases, position embeddings, relative position tables), the released Swin
configs' name keys, or decay on everything. Optional layer-wise lr decay (BEiT, ConvNeXt) through the model's
``layer_id(name)`` and ``num_layers``; an lr multiplier for everything outside the backbone (the heads), and one
for the backbone.
The schedule is a pure function of the iteration (linear warm-up, then poly decay), so resuming needs no
scheduler state beyond the iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from rrseg.engine.config import NoDecayRule, OptimConfig, ScheduleConfig

__all__ = ["SWIN_RELEASE_KEYS", "build_optimizer", "lr_at", "no_weight_decay", "param_groups", "set_lr"]

NO_DECAY_KEYWORDS = (
    "absolute_pos_embed",
    "relative_position_bias_table",
    "pos_embed",
    "cls_token",
    "rel_pos",
    "position_embedding",
)


# The released Swin configs' paramwise_cfg.custom_keys with decay_mult 0 (mmcv matches them as substrings of the
# parameter name).
SWIN_RELEASE_KEYS = ("norm", "absolute_pos_embed", "relative_position_bias_table")


def _no_decay(name: str, param: nn.Parameter, extra: set[str]) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_KEYWORDS) or name in extra


def no_weight_decay(model: nn.Module, rule: NoDecayRule) -> set[str]:
    """Names of the trainable parameters that get no weight decay under ``rule`` (see ``optim.no_decay``).

    ``swin_release`` tests the keys on the backbone's names only: timm's Swin names its LayerNorms ``norm1``,
    ``norm2``, ``patch_embed.norm``, ``downsample.norm`` as mmseg's does (and rrseg's output norms are
    ``backbone.norms.i``, mmseg's ``norm{i}``). In the heads mmseg's BatchNorms are ConvModule ``bn`` and match
    no key, while smp's UPerNet decoder has ``conv_norm_relu`` blocks that the plain substring test would exempt,
    convolution weights included; so nothing outside the backbone is exempt. A model without a ``backbone``
    gets the plain substring test on every name.
    """
    if rule not in ("norm_bias", "swin_release", "norm_embed", "none"):
        raise ValueError(f"no_decay rule must be 'norm_bias', 'swin_release', 'norm_embed' or 'none', got {rule!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if rule == "none":
        return set()
    if rule == "norm_embed":
        return _norm_embed(model)
    if rule == "norm_bias":
        extra = {str(n) for n in model.no_weight_decay()} if hasattr(model, "no_weight_decay") else set()
        return {n for n, p in named if _no_decay(n, p, extra)}
    backbone = getattr(model, "backbone", None)
    within = {f"backbone.{n}" for n, _ in backbone.named_parameters()} if isinstance(backbone, nn.Module) else None
    return {n for n, _ in named if (within is None or n in within) and any(k in n for k in SWIN_RELEASE_KEYS)}


# detectron2's / Mask2Former's build_optimizer: parameters of these modules get WEIGHT_DECAY_NORM (0)
NORM_MODULES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm,
                nn.LocalResponseNorm)


def _norm_embed(model: nn.Module) -> set[str]:
    """The release's rule of Mask2Former's ``build_optimizer`` (train_net.py): the parameters of normalisation
    modules and of ``nn.Embedding`` (WEIGHT_DECAY_NORM, WEIGHT_DECAY_EMBED: 0), and parameters named
    relative_position_bias_table or absolute_pos_embed; everything else decays, biases included."""
    out = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and (isinstance(module, (*NORM_MODULES, nn.Embedding))
                                    or "relative_position_bias_table" in name or "absolute_pos_embed" in name):
                out.add(f"{module_name}.{name}" if module_name else name)
    return out


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Trainable parameters split by (weight decay, lr scale); each group carries ``lr_scale``."""
    exempt = no_weight_decay(model, cfg.no_decay)
    backbone_names: set[str] = set()
    if hasattr(model, "backbone") and isinstance(model.backbone, nn.Module):
        backbone_names = {f"backbone.{n}" for n, _ in model.backbone.named_parameters()}
    layer_decay = cfg.layer_decay
    use_layers = layer_decay is not None and hasattr(model, "layer_id") and hasattr(model, "num_layers")
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = name in exempt
        scale = 1.0
        if use_layers:
            # mmseg's LayerDecayOptimizerConstructor: the heads (the last id) keep the full lr
            scale *= layer_decay ** (model.num_layers - 1 - model.layer_id(name))
        if backbone_names and name not in backbone_names:
            scale *= cfg.head_lr_mult
        elif backbone_names:
            scale *= cfg.backbone_lr_mult
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
    fused = True if cfg.fused else None  # None: torch's default (for-loop on the CPU, foreach on CUDA)
    if cfg.type == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.type == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                 fused=fused)
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
