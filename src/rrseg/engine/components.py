"""What a training run is made of, built from its config in one place: ``build_components(cfg, info)``.

Datasets and transforms, the class counts, the evaluator (with its frequency groups), the model (with its RR /
CeCo branch), the criterion, DDP, the optimizer with its learning-rate schedule, the AMP scaler, and the
loaders. The trainer (:mod:`rrseg.engine.trainer`) runs a loop over them; ``rrseg eval`` builds the same
datasets, counts, evaluator and validation loader through the functions here, so a number means the same thing
in both.

The build order is fixed (datasets, counts, model, criterion, optimizer, loaders): the model's random
initialisation follows the seed in that order, so the same seed gives the same run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrseg.engine.config import Config, config_to_dict
from rrseg.engine.distributed import DistInfo, on_main
from rrseg.engine.evaluator import Evaluator
from rrseg.engine.loader import InfiniteSampler, SeededTransformDataset, ShardSampler, collate
from rrseg.engine.optim import build_optimizer, set_lr
from rrseg.errors import RRSegError
from rrseg.rebalance import PIXEL_LOSSES, ClassCounts, Criterion, CrossEntropyLoss

logger = logging.getLogger(__name__)

__all__ = [
    "COMPILE_OPTIONS",
    "Components",
    "build_components",
    "build_criterion",
    "build_datasets",
    "build_evaluator",
    "build_train_loader",
    "build_val_loader",
    "compile_for_training",
    "convert_sync_bn",
    "cpp_compiler",
    "global_batch",
    "model_metadata",
    "resolve_counts",
]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# train.compile's inductor options: the random ops (dropout: the decode head's, RR's) from torch's generator as in
# eager mode, not inductor's own, so a compiled run draws the eager run's masks: the switch changes the speed,
# not the training
COMPILE_OPTIONS = {"fallback_random": True}


def build_datasets(cfg: Config) -> tuple[Any, Any, Any, Any]:
    """(train dataset, val dataset, train transforms, test transforms) from the config."""
    from rrseg.data import build_dataset
    from rrseg.data.transforms import test_transforms, train_transforms

    d = cfg.data
    test_tf = test_transforms(scale=tuple(d.scale), mean=tuple(d.mean), std=tuple(d.std))
    # config_key: a folder dataset's messages name the key to change (data.train.options.labels_dir, ...)
    train = build_dataset(d.train.type, d.train.root, d.train.split, transforms=None, config_key="data.train",
                          **d.train.options)
    val = build_dataset(d.val.type, d.val.root, d.val.split, transforms=test_tf, config_key="data.val",
                        **d.val.options)
    ignore = getattr(train, "ignore_index", 255)
    if getattr(val, "ignore_index", 255) != ignore:
        raise RRSegError(f"data.val ({d.val.type} at {d.val.root}) ignores label {val.ignore_index} but "
                         f"data.train ({d.train.type} at {d.train.root}) ignores {ignore}; "
                         "train and validate on one kind of labels")
    # the crop's cat_max_ratio leaves out, and the padding writes, the training data's own ignore value
    # (ADE20K-Full: 65535; 255 is one of its classes)
    train_tf = train_transforms(
        crop_size=tuple(d.crop_size), scale=tuple(d.scale), ratio_range=tuple(d.ratio_range),
        cat_max_ratio=d.cat_max_ratio, mean=tuple(d.mean), std=tuple(d.std), ignore_index=ignore,
        flip_prob=d.flip_prob, photometric=d.photometric,
    )
    return train, val, train_tf, test_tf


def resolve_counts(cfg: Config, train_ds: Any, num_classes: int, work_dir: Path | None) -> ClassCounts:
    """The class counts, looked up in one order for training and ``rrseg eval``: ``loss.counts`` of the
    config; else the run's ``counts.json`` in ``work_dir`` (the trainer caches it there once set-up
    succeeded; ``rrseg eval`` passes the work dir its checkpoint belongs to); else counted over the training
    labels. Read or counted on rank 0 and shared with every rank."""
    if cfg.loss.counts:
        return ClassCounts.load(cfg.loss.counts, num_classes)

    def cached_or_counted() -> ClassCounts:
        cache = work_dir / "counts.json" if work_dir is not None else None
        if cache is not None and cache.is_file():
            return ClassCounts.load(cache, num_classes)
        from rrseg.data.stats import compute_stats

        counts, _ = compute_stats(
            train_ds.label_files, num_classes, getattr(train_ds, "reduce_zero_label", False),
            getattr(train_ds, "ignore_index", 255), workers=None,
            label_dtype=getattr(train_ds, "LABEL_DTYPE", None),
            label_dtype_hint=getattr(train_ds, "LABEL_DTYPE_HINT", ""),
        )
        return counts

    return on_main(cached_or_counted)


def build_evaluator(cfg: Config, num_classes: int, ignore_index: int, counts: ClassCounts, val_ds: Any,
                    device: torch.device) -> Evaluator:
    """The run's :class:`Evaluator`, one construction for the trainer and ``rrseg eval``: ``cfg.eval``, the
    validation data's class names, the training precision (``train.amp``). Its frequency groups are ranked
    here, once; a config that cannot make them (pixel groups without pixel counts, sizes that do not fit) is an
    RRSegError naming the key, before any training or inference."""
    return Evaluator(cfg.eval, num_classes, ignore_index, counts, getattr(val_ds, "class_names", None),
                     AMP_DTYPES[cfg.train.amp], device, counts_source=cfg.loss.counts)


def build_criterion(cfg: Config, model: nn.Module, counts: ClassCounts, num_classes: int,
                    ignore_index: int = 255) -> Criterion:
    """The pixel term, the auxiliary CE (when the model has an auxiliary head) and the model's region
    term (RR / CeCo), as one named sum."""
    pixel = cfg.loss.pixel  # the registered loss's options (rrseg.rebalance.PIXEL_LOSSES)
    gives = getattr(model, "training_output", "logits")  # per-pixel logits, or a mask classifier's masks
    if gives != pixel.OUTPUT:
        fits = [n for n, c in PIXEL_LOSSES.items() if gives == c.OUTPUT]
        raise RRSegError(f"loss.pixel.type {pixel.type!r} reads {pixel.OUTPUT}, but model {cfg.model.name!r} "
                         f"gives {gives} in training: set loss.pixel.type to {' or '.join(fits)}")
    terms: list[nn.Module] = [pixel.build(counts, num_classes, ignore_index)]
    aux_weight = cfg.loss.aux_weight if cfg.loss.aux_weight is not None else getattr(model, "aux_loss_weight", 0.0)
    if getattr(model, "auxiliary_head", None) is not None and aux_weight:
        terms.append(CrossEntropyLoss("loss_aux", aux_weight, source="aux_logits", ignore_index=ignore_index,
                                      avg_non_ignore=pixel.avg_non_ignore))
    if getattr(model, "rebalance", None) is not None:
        terms.append(model.rebalance)
    return Criterion(terms)


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """SyncBatchNorm for every BatchNorm of the model except the RR / CeCo branch (``model.rebalance``).

    The released RR head builds its reduce BatchNorm as a plain ``nn.BatchNorm2d`` (the model's SyncBN comes
    from ``norm_cfg`` and reaches only the ConvModules), so its statistics are those of the per-GPU batch that
    RR pools over, like the regions themselves.
    """
    rebalance = getattr(model, "rebalance", None)
    if not isinstance(rebalance, nn.Module):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if child is not rebalance:
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return model


def model_metadata(cfg: Config, num_classes: int, dataset: Any) -> dict:
    return {
        "format": "rrseg",
        "config": config_to_dict(cfg),
        "num_classes": num_classes,
        "class_names": list(getattr(dataset, "class_names", [str(i) for i in range(num_classes)])),
        "palette": [list(map(int, c)) for c in getattr(dataset, "palette", [])],
    }


def global_batch(cfg: Config, world_size: int) -> int:
    """The samples of one optimizer step over all processes: batch size x processes x accumulation steps."""
    return cfg.data.batch_size * world_size * cfg.optim.accumulate


def build_train_loader(cfg: Config, train_ds: Any, transforms: Callable | None, info: DistInfo,
                       iteration: int = 0) -> torch.utils.data.DataLoader:
    """The training loader from ``iteration`` on (0, or the iteration a run resumes from): infinite, this rank's
    blocks of each global batch, every sample augmented as a function of the seed and its position."""
    sampler = InfiniteSampler(len(train_ds), cfg.train.seed, info.rank, info.world_size,
                              start=iteration * global_batch(cfg, info.world_size), batch_size=cfg.data.batch_size)
    return torch.utils.data.DataLoader(
        SeededTransformDataset(train_ds, transforms, cfg.train.seed), batch_size=cfg.data.batch_size,
        sampler=sampler, num_workers=cfg.data.workers, collate_fn=collate,
        pin_memory=info.device.type == "cuda", persistent_workers=cfg.data.workers > 0,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def build_val_loader(cfg: Config, val_ds: Any, info: DistInfo) -> torch.utils.data.DataLoader:
    """The validation loader, this rank's share of the images (the confusion matrices are summed)."""
    return torch.utils.data.DataLoader(
        val_ds, batch_size=cfg.eval.batch_size, sampler=ShardSampler(len(val_ds), info.rank, info.world_size),
        num_workers=min(cfg.data.workers, 2), collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


@dataclass
class Components:
    """What a run trains and evaluates: built from a config by :func:`build_components`, or by hand (a model
    outside the registry) and given to ``Trainer(cfg, components=...)``, which builds the loaders from the
    datasets with the config's batch size, workers and seed. The last fields have defaults for hand-built parts.
    """

    train_ds: Any  # item i: {"image", "label", ...} before augmentation; ``train_transforms`` augments it
    val_ds: Any  # with the test transforms
    num_classes: int
    evaluator: Evaluator  # the validation: its groups ranked once, at build time
    model: nn.Module  # the bare model: what is saved and evaluated
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    set_lr: Callable[[int], float]  # sets the optimizer's learning rate of an iteration and returns it
    train_transforms: Callable | None = None  # (image, label) -> (image, label), random
    ignore_index: int = 255
    counts: ClassCounts | None = None  # cached in the work dir (counts.json) when the config names none
    # the model as trained: compiled with train.compile, in DistributedDataParallel when distributed; None: model
    ddp: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None  # None: no loss scaling
    amp_dtype: torch.dtype | None = None
    metadata: dict = field(default_factory=dict)  # stored with every checkpoint: the config, classes and palette
    # BatchNorm statistics (running mean / var / count): saved before each step so that a skipped step leaves
    # no trace; listed once (None: found in the model here), not walked through the modules at every step
    batchnorm_buffers: Sequence[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.ddp is None:
            self.ddp = self.model
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        if self.batchnorm_buffers is None:
            self.batchnorm_buffers = [b for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                                      for b in m.buffers(recurse=False)]


def build_components(cfg: Config, info: DistInfo, work_dir: Path | None = None) -> Components:
    """Build a run's parts from its config (seed the RNGs first: the model's initialisation draws from them).
    ``work_dir`` holds cached class counts of an earlier start of the run."""
    from rrseg.models import build_model, load_weights

    train_ds, val_ds, train_tf, _ = build_datasets(cfg)
    if cfg.data.check:
        on_main(lambda: _check_data(cfg, train_ds, val_ds))
    num_classes = cfg.model.num_classes or train_ds.num_classes
    if num_classes != train_ds.num_classes:
        raise RRSegError(f"model.num_classes is {num_classes} but the training data has "
                         f"{train_ds.num_classes} classes")
    ignore_index = getattr(train_ds, "ignore_index", 255)
    counts = resolve_counts(cfg, train_ds, num_classes, work_dir)
    evaluator = build_evaluator(cfg, num_classes, ignore_index, counts, val_ds, info.device)  # groups checked now

    model = build_model(cfg.model.name, num_classes=num_classes, **cfg.model.options)
    # the region branch (none, RR, CeCo) from its typed options: its parameters are made after the model's and
    # before any weights load (an rrseg checkpoint's rebalance.* loads into it); ignore_index is the training
    # data's, so that RR drops the pixels the pixel loss ignores (the release hard-codes 255)
    model.set_rebalance(cfg.loss.region.build(model.feature_channels, num_classes, counts, ignore_index))
    load_weights(model, cfg.model.pretrained, what=cfg.model.name)
    if cfg.model.pretrained is None and info.is_main:
        _warn_random_start(cfg.model.name, model)
    model.to(info.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)  # the 4-D weights; the trainer converts the images
    if cfg.train.sync_bn and info.distributed and info.device.type == "cuda":
        model = convert_sync_bn(model)
    # on the model's device: the pixel terms' buffers (class weights, priors) were made on the CPU
    criterion = build_criterion(cfg, model, counts, num_classes, ignore_index).to(info.device)
    ddp = model
    if cfg.train.compile:
        ddp = compile_for_training(model, criterion, info.device)
    if info.distributed:
        # an auxiliary head left out of the loss (aux weight 0) gets no gradient: let DDP know
        unused = getattr(model, "auxiliary_head", None) is not None and "loss_aux" not in {
            t.name for t in criterion.terms}
        ddp = nn.parallel.DistributedDataParallel(
            ddp, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    optimizer = build_optimizer(model, cfg.optim)
    return Components(
        train_ds=train_ds, val_ds=val_ds, num_classes=num_classes, evaluator=evaluator, model=model,
        criterion=criterion, optimizer=optimizer,
        set_lr=partial(set_lr, optimizer, base_lr=cfg.optim.lr, cfg=cfg.schedule), train_transforms=train_tf,
        ignore_index=ignore_index, counts=counts, ddp=ddp,
        scaler=torch.amp.GradScaler(info.device.type, enabled=cfg.train.amp == "fp16"),
        amp_dtype=AMP_DTYPES[cfg.train.amp],
        metadata={**model_metadata(cfg, num_classes, train_ds), "global_batch": global_batch(cfg, info.world_size)},
    )


def compile_for_training(model: nn.Module, criterion: Criterion, device: torch.device) -> nn.Module:
    """``train.compile``: the model's training forward pass compiled (returned; ``model`` itself stays the plain
    module, so its state dict, checkpoints, exports and evaluation are those of an uncompiled run) and
    ``criterion`` compiled in place (the loss terms and the RR / CeCo branch, whose shapes are static by design);
    with inductor's default backend, which needs a C++ compiler on the CPU (checked here: one message).

    The inner module is compiled before any DDP wrapping, as PyTorch advises ("Where to apply torch.compile?":
    compile the module DDP wraps; DDP's graph splitting at its gradient buckets then applies). Evaluation stays
    eager: its inputs change size (whole images, sliding windows, the last batch), each a new compilation, for a
    pass that runs a few times per run."""
    if device.type == "cpu" and cpp_compiler() is None:
        raise RRSegError("train.compile: torch.compile's inductor backend needs a C++ compiler on the CPU and none "
                         "was found ($CXX, g++); install one or set train.compile: false")
    if device.type == "cpu" and torch.are_deterministic_algorithms_enabled():
        # measured on the demo (one thread): compiled 1.5x eager's step time with it, 0.85x without
        logger.warning("train.compile with train.deterministic on the CPU: inductor's deterministic kernels (the "
                       "loss's backward) can make the compiled step slower than eager; set train.deterministic: "
                       "false where speed matters more than bit-exact runs")
    criterion.compile(options=COMPILE_OPTIONS)
    return torch.compile(model, options=COMPILE_OPTIONS)


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor backend uses on the CPU, found by inductor itself ($CXX, else g++;
    the search is private to torch, hence the guard: None when it says there is none)."""
    try:
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # moved in another torch: let torch.compile report it at the first step
        return "unknown"
    try:
        return get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return None


def _warn_random_start(name: str, model: nn.Module) -> None:
    """One WARNING when a config leaves ``model.pretrained`` unset for a model whose backbone has timm weights:
    it trains from random initialisation, which ``model.pretrained: none`` says on purpose."""
    from rrseg.models.weights import PAPER_WEIGHTS, usual_weights

    usual = usual_weights(name, model)
    if usual is None:  # no timm weights for this backbone (test-sized models, the demo's)
        return
    why = "the paper's start" if name in PAPER_WEIGHTS else "timm's default weights of its backbone"
    logger.warning("model.pretrained is not set: %s trains from random initialisation; set model.pretrained: %s "
                   "(%s) or none", name, usual, why)


def _check_data(cfg: Config, train_ds: Any, val_ds: Any) -> None:
    from rrseg.data.check import verify_samples
    from rrseg.output import show_progress_bar

    show = cfg.train.progress and show_progress_bar()  # a terminal, and not rrseg -q
    for dataset, what in ((train_ds, "training data"), (val_ds, "validation data")):
        verify_samples(dataset, workers=cfg.data.workers, progress=show, what=what)
