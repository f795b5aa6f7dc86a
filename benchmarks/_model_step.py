"""Shared by models_cpu.py and gpu_models.py: the models measured and one training step as the engine runs it;
by pixel_loss_cpu.py and allocator_cpu.py: the demo's model, criterion and a batch (``demo_parts``).

A step is: forward in training mode, pixel CE on logits upsampled to the labels + 0.4 x auxiliary CE
(+ the RR term when attached), backward, optimiser step (SGD for the CNN families, AdamW for the
transformer families, as their mmseg configs). Labels are Voronoi-like maps with ~12 of 150 classes per
image and 5% ignored pixels; class counts follow a Zipf curve (RR's cost does not depend on their values).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_CLASSES = 150

# name, build options, optimiser
FAMILIES: dict[str, tuple[dict, str]] = {
    "upernet_swin_t": ({}, "adamw"),
    "deeplabv3plus_r50": ({}, "sgd"),
    "ocrnet_hr48": ({}, "sgd"),
    "upernet_convnext_t": ({}, "adamw"),
    "upernet_beit_b": ({"img_size": 512}, "adamw"),
    "upernet_swin_b": ({}, "adamw"),
    "upernet_beit_l": ({"img_size": 512}, "adamw"),
}
TINY: dict[str, tuple[dict, str]] = {
    "upernet_swin_tiny": ({}, "adamw"),
    "deeplabv3plus_tiny": ({}, "sgd"),
    "ocrnet_tiny": ({}, "sgd"),
    "upernet_convnext_tiny": ({}, "adamw"),
    "upernet_beit_tiny": ({"img_size": 64}, "adamw"),
}


def zipf_counts(num_classes: int = NUM_CLASSES, top: int = 11588) -> list[int]:
    """A long-tailed image-count curve shaped like ADE20K's (max 11588)."""
    return [max(1, int(top * (c + 1) ** -1.1)) for c in range(num_classes)]


def make_labels(
    batch: int, size: int, seed: int = 0, classes_per_image: int = 12, num_classes: int = NUM_CLASSES
) -> torch.Tensor:
    """Voronoi-like label maps: each pixel takes the class of its nearest of ``classes_per_image`` seeds."""
    g = torch.Generator().manual_seed(seed)
    grid = max(8, size // 8)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    maps = []
    for _ in range(batch):
        pts = torch.rand(classes_per_image, 2, generator=g) * grid
        cls = torch.randperm(num_classes, generator=g)[:classes_per_image]
        d = (ys[None] - pts[:, 0, None, None]) ** 2 + (xs[None] - pts[:, 1, None, None]) ** 2
        maps.append(cls[d.argmin(0)])
    labels = torch.stack(maps)[:, None].float()
    labels = F.interpolate(labels, size=(size, size), mode="nearest")[:, 0].long()
    ignore = torch.rand(labels.shape, generator=g) < 0.05
    labels[ignore] = 255
    return labels


def make_optimizer(model: torch.nn.Module, kind: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    return torch.optim.AdamW(params, lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)


def train_step(
    model,
    optimizer,
    images,
    labels,
    use_rr: bool,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One training step; returns the loss value (forcing completion of the step). With ``scaler`` (fp16) the
    loss is scaled and the step skipped on overflow, as the trainer does."""
    device_type = images.device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        out = model(images)
        logits = F.interpolate(out.logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=255)
        if out.aux_logits is not None:
            aux = F.interpolate(out.aux_logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + model.aux_loss_weight * F.cross_entropy(aux.float(), labels, ignore_index=255)
        if use_rr:
            loss = loss + model.rebalance(out, labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def count_params(model: torch.nn.Module) -> float:
    """Millions of parameters, without the training-only RR branch."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("rebalance.")) / 1e6


DEMO_CLASSES = 30


def demo_parts(rr: bool, batch: int = 16, size: int = 96) -> tuple:
    """The demo's training step at one thread: a ``(make, images, labels)`` triple, where ``make()`` builds a fresh
    ``(model, criterion)`` (seed 0; the demo config's model and criterion, RR's term with ``rr``; made in train
    mode) and the batch is random (seed 0) at ``batch`` x ``size``^2, 30 classes."""
    import numpy as np

    from rrseg.engine.components import build_criterion
    from rrseg.engine.config import load_config
    from rrseg.models import build_model
    from rrseg.rebalance import ClassCounts
    from rrseg.tools.demo import DEMO_CONFIG

    torch.set_num_threads(1)
    cfg = load_config(DEMO_CONFIG, [f"loss.region.type={'rr' if rr else 'none'}"])
    c = DEMO_CLASSES
    g = torch.Generator().manual_seed(0)
    counts = ClassCounts(np.arange(c, 0, -1) * 10, np.arange(c, 0, -1) * 1000)
    images = torch.randn(batch, 3, size, size, generator=g)
    labels = torch.randint(0, c, (batch, size, size), generator=g)

    def make() -> tuple:
        torch.manual_seed(0)
        model = build_model(cfg.model.name, num_classes=c)
        model.set_rebalance(cfg.loss.region.build(model.feature_channels, c, counts, 255))
        return model.train(), build_criterion(cfg, model, counts, c)

    return make, images, labels
