"""Iteration-based training from a Config: DDP through torchrun, AMP, exact resume, periodic evaluation.

One iteration = ``optim.accumulate`` micro-batches of ``data.batch_size`` per process. The loss is the
sum of named terms (pixel loss, auxiliary CE, the region term), each logged separately. Everything random
is a function of the seed and the iteration, so an interrupted and resumed run ends bit-identical to an
uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from rrseg.engine import checkpoint as ckpt
from rrseg.engine.config import Config, config_to_dict
from rrseg.engine.distributed import barrier, cleanup, on_main, setup
from rrseg.engine.evaluator import evaluate
from rrseg.engine.loader import InfiniteSampler, SeededTransformDataset, ShardSampler, collate
from rrseg.engine.optim import build_optimizer, set_lr
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, atomic_write_text, check_writable, ensure_writable_dir, remove_stale_temps
from rrseg.metrics.groups import ranked_groups
from rrseg.metrics.report import build_report, format_report, markdown_report, plot_iou_vs_count
from rrseg.rebalance import ClassCounts, Criterion, CrossEntropyLoss

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "build_criterion", "build_datasets", "convert_sync_bn", "resolve_counts"]


# ------------------------------------------------------------------------------------------ building


def build_datasets(cfg: Config) -> tuple[Any, Any, Any, Any]:
    """(train dataset, val dataset, train transforms, test transforms) from the config."""
    from rrseg.data import build_dataset
    from rrseg.data.transforms import test_transforms, train_transforms

    d = cfg.data
    test_tf = test_transforms(scale=tuple(d.scale), mean=tuple(d.mean), std=tuple(d.std))
    train = build_dataset(d.train.type, d.train.root, d.train.split, transforms=None, **d.train.options)
    val = build_dataset(d.val.type, d.val.root, d.val.split, transforms=test_tf, **d.val.options)
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


def resolve_counts(cfg: Config, train_ds: Any, num_classes: int, work_dir: Path) -> ClassCounts:
    """Class counts from the config, else, on rank 0 and shared with every rank, from the work dir's
    ``counts.json`` (cached by an earlier start of the run) or counted over the training labels (the trainer
    caches them once set-up succeeded)."""
    if cfg.loss.counts:
        return ClassCounts.load(cfg.loss.counts, num_classes)

    def cached_or_counted() -> ClassCounts:
        cache = work_dir / "counts.json"
        if cache.is_file():
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


def eval_groups(cfg: Config, counts: ClassCounts) -> dict[str, np.ndarray]:
    """The frequency groups ``cfg.eval`` asks for (``group_by``, ``group_sizes``); an RRSegError naming the
    key when they cannot be made (pixel groups without pixel counts, sizes that do not fit)."""
    sizes = tuple(cfg.eval.group_sizes) if cfg.eval.group_sizes else None
    try:
        return ranked_groups(counts.image_counts, counts.pixel_counts, cfg.eval.group_by, sizes)
    except RRSegError as e:
        source = f" (counts: {cfg.loss.counts})" if cfg.loss.counts else ""
        raise RRSegError(f"config key 'eval.group_by': {e}{source}") from None
    except ValueError as e:
        raise RRSegError(f"config key 'eval.group_sizes': {e}") from None


def build_criterion(cfg: Config, model: nn.Module, counts: ClassCounts, num_classes: int,
                    ignore_index: int = 255) -> Criterion:
    """The pixel term, the auxiliary CE (when the model has an auxiliary head) and the model's region
    term (RR / CeCo), as one named sum."""
    pixel = cfg.loss.pixel  # the registered loss's options (rrseg.rebalance.PIXEL_LOSSES)
    terms: list[nn.Module] = [pixel.build(counts, num_classes, ignore_index)]
    aux_weight = cfg.loss.aux_weight if cfg.loss.aux_weight is not None else getattr(model, "aux_loss_weight", 0.0)
    if getattr(model, "auxiliary_head", None) is not None and aux_weight:
        terms.append(CrossEntropyLoss("loss_aux", aux_weight, source="aux_logits", ignore_index=ignore_index,
                                      avg_non_ignore=pixel.avg_non_ignore))
    if getattr(model, "rebalance", None) is not None:
        terms.append(model.rebalance)
    return Criterion(terms)


def rebalance_spec(cfg: Config, counts: ClassCounts, ignore_index: int = 255) -> dict | None:
    """The model's ``rebalance`` setting from ``loss.region``; ``ignore_index`` is the training data's, so that
    RR drops the pixels the pixel loss ignores (the release hard-codes 255)."""
    return cfg.loss.region.spec(counts, ignore_index)


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


# ------------------------------------------------------------------------------------------ trainer


class _Stop(Exception):
    pass


class Trainer:
    def __init__(self, cfg: Config, resume: bool = False, device: str = "auto") -> None:
        self.cfg = cfg
        self.resume = resume
        self.device_request = device
        self._signal: int | None = None

    # -- set-up ------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        self.info = info = setup(self.device_request)
        self.device = info.device
        self.work_dir = Path(cfg.work_dir)
        check_writable(self.work_dir)  # fail before any work; nothing is written until data and model are valid
        if cfg.train.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self._seed_everything(cfg.train.seed)

        from rrseg.models import build_model

        self.train_ds, self.val_ds, train_tf, _ = build_datasets(cfg)
        if cfg.data.check:
            on_main(self._check_data)
        self.num_classes = cfg.model.num_classes or self.train_ds.num_classes
        if self.num_classes != self.train_ds.num_classes:
            raise RRSegError(f"model.num_classes is {self.num_classes} but the training data has "
                             f"{self.train_ds.num_classes} classes")
        self.ignore_index = getattr(self.train_ds, "ignore_index", 255)
        self.counts = resolve_counts(cfg, self.train_ds, self.num_classes, self.work_dir)
        self.groups = eval_groups(cfg, self.counts)  # checked before training, not at the first evaluation

        model = build_model(cfg.model.name, num_classes=self.num_classes,
                            rebalance=rebalance_spec(cfg, self.counts, self.ignore_index),
                            pretrained=cfg.model.pretrained, **cfg.model.options)
        model.to(self.device)
        if cfg.train.sync_bn and info.distributed and self.device.type == "cuda":
            model = convert_sync_bn(model)
        self.model = model
        self.criterion = build_criterion(cfg, model, self.counts, self.num_classes, self.ignore_index)
        self.ddp = model
        if info.distributed:
            # an auxiliary head left out of the loss (aux weight 0) gets no gradient: let DDP know
            unused = getattr(model, "auxiliary_head", None) is not None and "loss_aux" not in {
                t.name for t in self.criterion.terms}
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
        self.optimizer = build_optimizer(model, cfg.optim)
        amp = cfg.train.amp
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.metadata = model_metadata(cfg, self.num_classes, self.train_ds)
        self._bn_buffers = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                            for b in m.buffers(recurse=False)]
        if info.is_main:  # data, counts and model are valid: the first write to the work dir
            ensure_writable_dir(self.work_dir)
            self._clean_crash_leftovers()
            atomic_write_text(self.work_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            if not cfg.loss.counts and not (self.work_dir / "counts.json").is_file():
                atomic_write_json(self.work_dir / "counts.json", self.counts.to_json())
        barrier()

        self.iteration = 0
        self.skipped = 0  # steps skipped for a non-finite loss in this process (nan_policy=skip)
        self.best = {"mIoU": -1.0, "iteration": -1}
        self.history: list[dict] = []
        rng_state = None
        if self.resume:
            rng_state = self._load_latest()

        global_batch = cfg.data.batch_size * info.world_size
        self.samples_per_iter = global_batch * cfg.optim.accumulate
        sampler = InfiniteSampler(len(self.train_ds), cfg.train.seed, info.rank, info.world_size,
                                  start=self.iteration * self.samples_per_iter, batch_size=cfg.data.batch_size)
        self.train_loader = torch.utils.data.DataLoader(
            SeededTransformDataset(self.train_ds, train_tf, cfg.train.seed), batch_size=cfg.data.batch_size,
            sampler=sampler, num_workers=cfg.data.workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", persistent_workers=cfg.data.workers > 0,
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        self.val_loader = torch.utils.data.DataLoader(
            self.val_ds, batch_size=cfg.eval.batch_size, sampler=ShardSampler(len(self.val_ds), info.rank,
                                                                               info.world_size),
            num_workers=min(cfg.data.workers, 2), collate_fn=collate,
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        if rng_state is not None:
            ckpt.restore_rng(rng_state)

    def _check_data(self) -> None:
        from rrseg.data.check import verify_samples

        show = self.cfg.train.progress and sys.stderr.isatty()
        for dataset, what in ((self.train_ds, "training data"), (self.val_ds, "validation data")):
            verify_samples(dataset, workers=self.cfg.data.workers, progress=show, what=what)

    def _clean_crash_leftovers(self) -> None:
        """What a killed run can leave: temporary files of atomic writes, a half-written checkpoint folder,
        a log line cut short (the next record would be glued to it)."""
        for folder in (self.work_dir, self.work_dir / "eval", self.work_dir / ckpt.CKPT_DIR):
            remove_stale_temps(folder)
        ckpt.remove_partial_checkpoints(self.work_dir)
        log = self.work_dir / "log.jsonl"
        if log.is_file() and log.stat().st_size:
            with open(log, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _load_latest(self) -> dict | None:
        latest = ckpt.latest_checkpoint(self.work_dir)
        if latest is None:
            if self.info.is_main:
                logger.info("no checkpoint in %s; starting from scratch", self.work_dir)
            return None
        state_dict, _ = ckpt.read_weights(latest / "model.safetensors")
        ckpt.load_weights(self.model, state_dict, str(latest / "model.safetensors"))
        state = ckpt.load_state(latest / "state.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best = dict(state["best"])
        self.history = list(state.get("history", []))
        if self.info.is_main:
            logger.info("resumed from %s at iteration %d", latest, self.iteration)
        return state["rng"]

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        path = None
        if self.info.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "iteration": self.iteration,
                "best": self.best,
                "history": self.history,
                "rng": ckpt.capture_rng(),
            }
            try:
                path = ckpt.save_training_checkpoint(self.work_dir, self.iteration, self.model.state_dict(), state,
                                                     self.metadata, self.cfg.train.keep_last)
            except OSError as e:
                previous = ckpt.latest_checkpoint(self.work_dir)
                kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint"
                raise RRSegError(f"{self.work_dir / ckpt.CKPT_DIR}: cannot write the checkpoint of iteration "
                                 f"{self.iteration} ({e.strerror or e}); {kept}") from None
        barrier()
        return path

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        cm = evaluate(self.model, self.val_loader, self.num_classes, self.cfg.eval, self.device,
                      self.ignore_index, self.amp_dtype)
        metrics = cm.compute()
        report = build_report(metrics, getattr(self.val_ds, "class_names", None), self.counts.image_counts,
                              tuple(self.cfg.eval.group_sizes) if self.cfg.eval.group_sizes else None,
                              pixel_counts=self.counts.pixel_counts, group_by=self.cfg.eval.group_by)
        report["iteration"] = self.iteration
        report["name"] = self.cfg.name
        return report

    def _after_eval(self, report: dict) -> None:
        if not self.info.is_main:
            return
        summary = {"iteration": self.iteration, "mIoU": report["overall"]["mIoU"], "aAcc": report["overall"]["aAcc"],
                   **{f"{g}_mIoU": v["mIoU"] for g, v in report.get("groups", {}).items()}}
        self.history.append(summary)
        self._log({"event": "eval", **summary, **{f"{g}_mFPR": v["mFPR"] for g, v in report.get("groups", {}).items()}})
        if self.tb is not None:
            for k, v in summary.items():
                if k != "iteration" and isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(f"val/{k}", v, self.iteration)
        atomic_write_json(self.work_dir / "eval" / f"iter_{self.iteration:07d}.json", report)
        miou = report["overall"]["mIoU"]
        if math.isfinite(miou) and miou > self.best["mIoU"]:
            self.best = {"mIoU": miou, "iteration": self.iteration}
            ckpt.save_weights(self.work_dir / "best.safetensors", self.model.state_dict(),
                              {**self.metadata, "iteration": self.iteration, "mIoU": miou})

    def write_report(self, report: dict) -> None:
        """report.json, report.md and the IoU-against-region-count plot in the work dir (with pixel groups,
        also the plot against pixel count)."""
        if not self.info.is_main:
            return
        atomic_write_json(self.work_dir / "report.json", report)
        atomic_write_text(self.work_dir / "report.md", markdown_report(report, title=f"{self.cfg.name}: "
                                                                      f"iteration {self.iteration}"))
        plot_iou_vs_count({self.cfg.name: report}, self.work_dir / "iou_vs_count.png")
        if self.cfg.eval.group_by != "region":
            plot_iou_vs_count({self.cfg.name: report}, self.work_dir / "iou_vs_pixel_count.png", count="pixel")

    # -- logging -----------------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.info.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        try:
            with open(self.work_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")
        except OSError as e:
            raise RRSegError(f"{self.work_dir / 'log.jsonl'}: cannot write ({e.strerror or e})") from None

    # -- signals -----------------------------------------------------------------------------------
    def _install_signals(self) -> dict:
        def handler(signum, frame):
            self._signal = signum

        old = {}
        for s in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                old[s] = signal.signal(s, handler)
        return old

    # -- the loop ----------------------------------------------------------------------------------
    def train(self) -> dict | None:
        """Run to ``schedule.iters``; returns the final evaluation report (rank 0) or None."""
        old_handlers = {}
        try:
            self._setup()
            old_handlers = self._install_signals()
            return self._train_loop()
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            cleanup()

    def _train_loop(self) -> dict | None:
        cfg, info = self.cfg, self.info
        total = cfg.schedule.iters
        self.tb = None
        if info.is_main and cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.work_dir / "tb"), purge_step=self.iteration or None)
        self._log({"event": "start", "iteration": self.iteration, "world_size": info.world_size,
                   "num_classes": self.num_classes, "model": cfg.model.name, "resume": self.resume})
        progress = None
        if info.is_main and cfg.train.progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            task = progress.add_task(cfg.name or "train", total=total, completed=self.iteration, status="")
            progress.start()
        data_iter = iter(self.train_loader)
        running: dict[str, float] = {}
        n_running = 0
        t_last = time.perf_counter()
        final_report = None
        self.ddp.train()
        try:
            while self.iteration < total:
                if self._signal is not None:
                    raise _Stop()
                lr = set_lr(self.optimizer, self.iteration, cfg.optim.lr, cfg.schedule)
                losses = self._step(data_iter)
                self.iteration += 1
                if losses is not None:  # None: skipped (non-finite, nan_policy=skip), but still evaluated/saved
                    for k, v in losses.items():
                        running[k] = running.get(k, 0.0) + v
                    n_running += 1
                    if progress is not None:
                        progress.update(task, completed=self.iteration,
                                        status=f"loss {losses['loss']:.3f} lr {lr:.2e}")
                elif progress is not None:
                    progress.update(task, completed=self.iteration, status=f"{self.skipped} steps skipped")
                if n_running and (self.iteration % cfg.train.log_interval == 0 or self.iteration == total):
                    dt = time.perf_counter() - t_last
                    rec = {k: v / n_running for k, v in running.items()}
                    self._log({"event": "train", "iteration": self.iteration, "lr": lr,
                               "sec_per_iter": dt / n_running, **rec})
                    if self.tb is not None:
                        for k, v in rec.items():
                            self.tb.add_scalar(f"train/{k}", v, self.iteration)
                        self.tb.add_scalar("train/lr", lr, self.iteration)
                    running, n_running, t_last = {}, 0, time.perf_counter()
                if cfg.eval.interval and self.iteration % cfg.eval.interval == 0 and self.iteration < total:
                    self._after_eval(self.evaluate())
                if self.iteration % cfg.train.checkpoint_interval == 0 and self.iteration < total:
                    self.save_checkpoint()
            final_report = self.evaluate()
            self._after_eval(final_report)
            self.save_checkpoint()
            self._log({"event": "end", "iteration": self.iteration, "param_sha256": self._fingerprints(),
                       "skipped_non_finite": self.skipped})
            if info.is_main:
                ckpt.save_weights(self.work_dir / "inference.safetensors", self.model.inference_state_dict(),
                                  {**self.metadata, "iteration": self.iteration})
                final_report["best"] = self.best
                self.write_report(final_report)
            barrier()  # the ranks leave together: gloo can abort a process that exits while a peer still works
        except _Stop:
            path = self.save_checkpoint()
            name = signal.Signals(self._signal).name
            if info.is_main:
                logger.info("\n%s: checkpoint saved at iteration %d (%s); continue with --resume", name, self.iteration,
                            path)
            raise SystemExit(128 + self._signal) from None
        finally:
            if progress is not None:
                progress.stop()
            if self.tb is not None:
                self.tb.close()
        if info.is_main:
            logger.info(format_report(final_report))
        return final_report if info.is_main else None

    def _fingerprints(self) -> list[str]:
        """SHA-256 of every rank's parameters: all equal when DDP kept the replicas in sync. (Buffers such as
        BatchNorm running statistics follow each rank's last batch; rank 0's are the ones saved.)"""
        import hashlib

        digest = hashlib.sha256()
        for name, t in self.model.named_parameters():
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        mine = digest.hexdigest()
        if not self.info.distributed:
            return [mine]
        gathered: list = [None] * self.info.world_size
        torch.distributed.all_gather_object(gathered, mine)
        return gathered

    def _step(self, data_iter) -> dict[str, float] | None:
        cfg = self.cfg
        accumulate = cfg.optim.accumulate
        totals: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        # BatchNorm statistics change in the forward pass: kept, so that a skipped step leaves no trace
        self._bn_state = [(b, b.detach().clone()) for b in self._bn_buffers]
        for micro in range(accumulate):
            batch = next(data_iter)
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            sync = micro == accumulate - 1 or not self.info.distributed
            ctx = self.ddp.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    out = self.ddp(images)
                    terms = self.criterion(out, labels)
                loss = sum(terms.values())
                if not self._all_finite(loss):
                    for _ in range(accumulate - 1 - micro):  # the rest of this iteration's data: a resumed
                        next(data_iter)  # run, which starts at the iteration's first sample, stays in step
                    return self._non_finite(terms)
                self.scaler.scale(loss / accumulate).backward()
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / accumulate
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) / accumulate
        if cfg.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return totals

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite in every process. One decision for all ranks: if one rank skipped or
        stopped alone, the others would wait in the gradient all-reduce until the process-group timeout."""
        finite = torch.isfinite(loss.detach()).to(torch.int32)
        if self.info.distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite)

    def _non_finite(self, terms: dict) -> None:
        """The loss of iteration ``self.iteration + 1`` is NaN or infinite (in this process or another):
        undo the step (gradients and BatchNorm statistics), then skip it (logged) or stop with a checkpoint of
        the last good state."""
        values = {k: float(v.detach()) for k, v in terms.items()}
        bad = ", ".join(f"{k}={x:.4g}" for k, x in values.items())
        if self.info.distributed:
            here = not all(math.isfinite(x) for x in values.values())
            bad = f"rank {self.info.rank}: {bad}" if here else f"on another rank; rank {self.info.rank}: {bad}"
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buf, saved in self._bn_state:
                buf.copy_(saved)
        if self.cfg.train.nan_policy == "skip":
            self.skipped += 1
            self._log({"event": "skip_non_finite", "iteration": self.iteration + 1, "terms": bad})
            return None
        path = self.save_checkpoint()
        saved = f"is saved in {path}" if path else "is saved by rank 0"
        raise RRSegError(f"non-finite loss in iteration {self.iteration + 1} ({bad}); the last good state "
                         f"(iteration {self.iteration}) {saved}; continue with --resume after a fix, "
                         f"or set train.nan_policy=skip to skip such steps")


def run_training(cfg: Config, resume: bool = False, device: str = "auto") -> dict | None:
    return Trainer(cfg, resume, device).train()

