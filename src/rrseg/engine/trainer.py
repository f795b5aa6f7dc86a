"""Iteration-based training from a Config: DDP through torchrun, AMP, exact resume, periodic evaluation.

``Trainer(cfg).train()``: the run's parts come from :func:`rrseg.engine.components.build_components`; the loop
below only steps (learning rate, ``optim.accumulate`` micro-batches of ``data.batch_size`` per process, one
update); everything around it (progress, the JSONL log, TensorBoard, evaluation, checkpoints, the NaN policy,
signals) is a callback of :mod:`rrseg.engine.callbacks`. The loss is the sum of named terms (pixel loss,
auxiliary CE, the region term), each logged separately. Everything random is a function of the seed and the
iteration, so an interrupted and resumed run ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rrseg.data.base import image_sizes
from rrseg.engine import checkpoint as ckpt
from rrseg.engine.callbacks import Callback, TrainingStopped, default_callbacks
from rrseg.engine.components import Components, build_components
from rrseg.engine.config import Config, config_to_dict, resolved_work_dir
from rrseg.engine.distributed import DistInfo, barrier, cleanup, setup
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, atomic_write_text, check_writable, ensure_writable_dir, remove_stale_temps
from rrseg.metrics.report import format_report
from rrseg.output import RESULT

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "run_training"]


def settings_warnings(cfg: Config, sizes: Sequence[tuple[int, int]]) -> list[str]:
    """What in a config makes a run train badly without failing: a warm-up that never ends, evaluation or logging
    that never happens before the end, training images rescaled far from their size or cropped far from it
    (``sizes``: some training images' (height, width)). Each message names the keys to change."""
    out = []
    iters, sched = cfg.schedule.iters, cfg.schedule
    if sched.warmup_iters >= iters:
        out.append(f"schedule.warmup_iters ({sched.warmup_iters}) >= schedule.iters ({iters}): the learning rate "
                   "never leaves warm-up; set schedule.warmup_iters to a tenth of the iterations or less")
    if cfg.eval.interval >= iters:  # (0 says "only at the end" on purpose)
        out.append(f"eval.interval ({cfg.eval.interval}) >= schedule.iters ({iters}): the model is evaluated only "
                   "at the end, so best.safetensors is the last model; set eval.interval to a fraction of the "
                   "iterations (0 to evaluate only at the end without this warning)")
    if cfg.train.log_interval > iters:
        out.append(f"train.log_interval ({cfg.train.log_interval}) > schedule.iters ({iters}): no training record "
                   "is logged before the end")
    if sizes:
        h, w = statistics.median_high(s[0] for s in sizes), statistics.median_high(s[1] for s in sizes)
        long_side, short_side = max(cfg.data.scale), min(cfg.data.scale)
        factor = min(long_side / max(h, w), short_side / min(h, w))  # mmseg's keep-ratio rescale at ratio 1
        if not 0.5 <= factor <= 2.0:
            out.append(f"data.scale {list(cfg.data.scale)} rescales the training images (median {w}x{h}) by "
                       f"{factor:.2g}x before cropping: set data.scale near the images' size, e.g. "
                       f"[{max(h, w)}, {min(h, w)}]")
        ch, cw = cfg.data.crop_size
        rh, rw = h * factor, w * factor
        if ch * cw > 2 * rh * rw or ch * cw * 16 < rh * rw:
            out.append(f"data.crop_size {list(cfg.data.crop_size)} is far from the rescaled images "
                       f"({round(rw)}x{round(rh)}): most of each crop is padding or it sees a small part of an "
                       "image; set data.crop_size near the rescaled size")
    return out


# what a run writes in its work dir (and --overwrite removes)
RUN_OUTPUTS = ("log.jsonl", ckpt.CKPT_DIR, "best.safetensors", "inference.safetensors", "report.json", "report.md",
               "iou_vs_count.png", "iou_vs_pixel_count.png", "eval", "tb", "config.yaml", "counts.json")


class Trainer:
    """A training run. Every attribute exists after ``__init__``; the parts (``self.parts``, with the model,
    data and optimizer) are built by :meth:`setup`, which :meth:`train` and :meth:`evaluate` call."""

    def __init__(self, cfg: Config, resume: bool = False, device: str = "auto",
                 callbacks: Sequence[Callback] = (), overwrite: bool = False) -> None:
        self.cfg = cfg
        self.resume = resume
        self.overwrite = overwrite  # a work dir that holds a run is refused without it (or resume)
        self.device_request = device
        self.work_dir = Path(resolved_work_dir(cfg))
        self.info: DistInfo | None = None  # the process group and device, set by setup()
        self.parts: Components | None = None
        self.iteration = 0
        self.skipped = 0  # steps skipped for a non-finite loss in this process (nan_policy=skip)
        self.best: dict[str, Any] = {"mIoU": -1.0, "iteration": -1}
        self.history: list[dict] = []
        self.written: list[str] = []  # the report files of the finished run (rank 0)
        self.extra_callbacks = list(callbacks)
        self.callbacks: list[Callback] = []
        self._bn_state: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self) -> Components:
        """Build the parts once: process group, seed, data, counts, model, optimizer; write the work dir's
        config and counts; resume from the latest checkpoint when asked."""
        if self.parts is not None:
            return self.parts
        cfg = self.cfg
        self.info = info = setup(self.device_request)
        check_writable(self.work_dir)  # fail before any work; nothing is written until data and model are valid
        previous = [] if self.resume else self._previous_run()
        if previous and not self.overwrite:
            raise RRSegError(f"{self.work_dir} holds a run ({', '.join(previous[:3])}): continue it with --resume, "
                             "replace it with --overwrite, or choose another --work-dir")
        if cfg.train.deterministic and info.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        random.seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        parts = build_components(cfg, info, self.work_dir)
        if info.is_main:  # data, counts and model are valid: the first write to the work dir
            self._log_global_batch(parts)
            for message in settings_warnings(cfg, image_sizes(getattr(parts.train_ds, "image_files", []), 16)):
                logger.warning(message)
            ensure_writable_dir(self.work_dir)
            for name in previous:  # --overwrite: the previous run's outputs go, nothing else in the folder
                target = self.work_dir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            if previous:
                logger.info("--overwrite: removed the previous run's %s from %s", ", ".join(previous), self.work_dir)
            self._clean_crash_leftovers()
            atomic_write_text(self.work_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            if not cfg.loss.counts and not (self.work_dir / "counts.json").is_file():
                atomic_write_json(self.work_dir / "counts.json", parts.counts.to_json())
        barrier()
        self.parts = parts
        rng_state = self._load_latest() if self.resume else None
        parts.train_sampler.start = self.iteration * parts.samples_per_iter
        if rng_state is not None:
            ckpt.restore_rng(rng_state)
        return parts

    def _log_global_batch(self, parts: Components) -> None:
        """The run's global batch, and a warning when the config assumes another (``train.global_batch``)."""
        cfg, n = self.cfg, parts.samples_per_iter
        how = (f"{cfg.data.batch_size} images per process x {self.info.world_size} processes x "
               f"{cfg.optim.accumulate} accumulation steps")
        logger.info("global batch %d = %s", n, how)
        if cfg.train.global_batch and n != cfg.train.global_batch:
            logger.warning(
                "%s assumes a global batch of %d but this run's is %d (%s): its learning rate, schedule and RR's "
                "per-process pooling are the preset's at %d only; launch it as the config's comment says",
                cfg.name or "this config", cfg.train.global_batch, n, how, cfg.train.global_batch)

    def _previous_run(self) -> list[str]:
        """The outputs of an earlier run in the work dir (``RUN_OUTPUTS`` that exist), by name."""
        return [name for name in RUN_OUTPUTS if (self.work_dir / name).exists()]

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

    def _load_latest(self) -> dict | None:
        latest = ckpt.latest_checkpoint(self.work_dir)
        if latest is None:
            if self.info.is_main:
                logger.info("no checkpoint in %s; starting from scratch", self.work_dir)
            return None
        parts = self.parts
        state_dict, _ = ckpt.read_weights(latest / "model.safetensors")
        ckpt.load_weights(parts.model, state_dict, str(latest / "model.safetensors"))
        state = ckpt.load_state(latest / "state.pt")
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best = dict(state["best"])
        self.history = list(state.get("history", []))
        if self.info.is_main:
            logger.info("resumed from %s at iteration %d", latest, self.iteration)
        return state["rng"]

    # -- checkpoints, evaluation, the log ----------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """A training checkpoint of this iteration (written by rank 0; every rank waits for it)."""
        parts, path = self.setup(), None
        if self.info.is_main:
            state = {
                "optimizer": parts.optimizer.state_dict(),
                "scaler": parts.scaler.state_dict(),
                "iteration": self.iteration,
                "best": self.best,
                "history": self.history,
                "rng": ckpt.capture_rng(),
            }
            try:
                path = ckpt.save_training_checkpoint(self.work_dir, self.iteration, parts.model.state_dict(), state,
                                                     parts.metadata, self.cfg.train.keep_last)
            except OSError as e:
                previous = ckpt.latest_checkpoint(self.work_dir)
                kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint"
                raise RRSegError(f"{self.work_dir / ckpt.CKPT_DIR}: cannot write the checkpoint of iteration "
                                 f"{self.iteration} ({e.strerror or e}); {kept}") from None
        barrier()
        return path

    def evaluate(self) -> dict:
        """The evaluation report of the model as it is now, on the validation split (every rank takes part):
        the run's :class:`~rrseg.engine.evaluator.Evaluator` (``parts.evaluator``), as ``rrseg eval`` runs it."""
        parts = self.setup()
        report = parts.evaluator.report(parts.model, parts.val_loader)
        report["iteration"] = self.iteration
        report["name"] = self.cfg.name
        return report

    def run_evaluation(self) -> dict:
        """Evaluate, then hand the report to the callbacks (history, log, best checkpoint)."""
        report = self.evaluate()
        for cb in self.callbacks:
            cb.on_evaluation(self, report)
        return report

    def write_report(self, report: dict) -> list[str]:
        """report.json, report.md and the IoU-against-count plot(s) in the work dir (rank 0); the names of the
        files written."""
        if self.info.is_main:
            return self.parts.evaluator.write(self.work_dir, report, self.cfg.name,
                                              title=f"{self.cfg.name}: iteration {self.iteration}")
        return []

    def log(self, record: dict) -> None:
        """A record of the run's log, stamped with the time, for the callbacks that write it."""
        record = {"time": round(time.time(), 3), **record}
        for cb in self.callbacks:
            cb.on_record(self, record)

    # -- the loop ----------------------------------------------------------------------------------
    def train(self) -> dict | None:
        """Run to ``schedule.iters``; returns the final evaluation report (rank 0) or None."""
        try:
            parts = self.setup()
            self.callbacks = [*default_callbacks(self), *self.extra_callbacks]
            try:
                report = self._loop(parts)
            finally:
                for cb in self.callbacks:
                    cb.close(self)
        finally:
            cleanup()
        if report is not None:  # rank 0; after the progress bar has gone: the results come last
            written = [*self.written, "inference.safetensors"]
            if (self.work_dir / "best.safetensors").is_file():
                written.append("best.safetensors")
            logger.log(RESULT, format_report(report))
            logger.log(RESULT, "wrote %s/%s", self.work_dir, ", ".join(written))
        return report

    def _loop(self, parts: Components) -> dict | None:
        cfg, info = self.cfg, self.info
        total = cfg.schedule.iters
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.log({"event": "start", "iteration": self.iteration, "world_size": info.world_size,
                  "num_classes": parts.num_classes, "model": cfg.model.name, "resume": self.resume})
        data_iter = iter(parts.train_loader)
        parts.ddp.train()
        try:
            while self.iteration < total:
                for cb in self.callbacks:
                    cb.on_iteration_start(self)
                lr = parts.lr_at(self.iteration)
                losses = self._step(data_iter)  # None: skipped (non-finite, nan_policy=skip)
                self.iteration += 1
                for cb in self.callbacks:
                    cb.on_iteration_end(self, losses, lr)
            final_report = self.run_evaluation()
            self.save_checkpoint()
            self.log({"event": "end", "iteration": self.iteration, "param_sha256": self._fingerprints(),
                      "skipped_non_finite": self.skipped})
            if info.is_main:
                ckpt.save_weights(self.work_dir / "inference.safetensors", parts.model.inference_state_dict(),
                                  {**parts.metadata, "iteration": self.iteration})
                final_report["best"] = self.best
                self.written = self.write_report(final_report)
            barrier()  # the ranks leave together: gloo can abort a process that exits while a peer still works
        except TrainingStopped as stop:
            path = self.save_checkpoint()
            if info.is_main:
                logger.log(RESULT, "\n%s: checkpoint saved at iteration %d (%s); continue with --resume", stop,
                           self.iteration, path)
            raise SystemExit(128 + stop.signum) from None
        return final_report if info.is_main else None

    def _fingerprints(self) -> list[str]:
        """SHA-256 of every rank's parameters: all equal when DDP kept the replicas in sync. (Buffers such as
        BatchNorm running statistics follow each rank's last batch; rank 0's are the ones saved.)"""
        import hashlib

        digest = hashlib.sha256()
        for name, t in self.parts.model.named_parameters():
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        mine = digest.hexdigest()
        if not self.info.distributed:
            return [mine]
        gathered: list = [None] * self.info.world_size
        torch.distributed.all_gather_object(gathered, mine)
        return gathered

    def _step(self, data_iter) -> dict[str, float] | None:
        """One iteration: ``optim.accumulate`` micro-batches, one update. The loss terms (averaged over the
        micro-batches), or None when the loss was not finite (the step is undone; the policy decides)."""
        parts, device = self.parts, self.info.device
        accumulate = self.cfg.optim.accumulate
        totals: dict[str, float] = {}
        parts.optimizer.zero_grad(set_to_none=True)
        # BatchNorm statistics change in the forward pass: kept, so that a skipped step leaves no trace
        self._bn_state = [(b, b.detach().clone()) for b in parts.batchnorm_buffers]
        for micro in range(accumulate):
            batch = next(data_iter)
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            sync = micro == accumulate - 1 or not self.info.distributed
            ctx = parts.ddp.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=parts.amp_dtype or torch.float32,
                                    enabled=parts.amp_dtype is not None):
                    out = parts.ddp(images)
                    terms = parts.criterion(out, labels)
                loss = sum(terms.values())
                if not self._all_finite(loss):
                    for _ in range(accumulate - 1 - micro):  # the rest of this iteration's data: a resumed
                        next(data_iter)  # run, which starts at the iteration's first sample, stays in step
                    self._undo_step(terms)
                    return None
                parts.scaler.scale(loss / accumulate).backward()
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / accumulate
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach()) / accumulate
        if self.cfg.optim.clip_grad:
            parts.scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(parts.model.parameters(), self.cfg.optim.clip_grad)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        return totals

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite in every process. One decision for all ranks: if one rank skipped or
        stopped alone, the others would wait in the gradient all-reduce until the process-group timeout."""
        finite = torch.isfinite(loss.detach()).to(torch.int32)
        if self.info.distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite)

    def _undo_step(self, terms: dict) -> None:
        """The loss of iteration ``self.iteration + 1`` is NaN or infinite (in this process or another): undo
        the step (gradients and BatchNorm statistics), then the callbacks' policy skips it or stops the run."""
        values = {k: float(v.detach()) for k, v in terms.items()}
        detail = ", ".join(f"{k}={x:.4g}" for k, x in values.items())
        if self.info.distributed:
            here = not all(math.isfinite(x) for x in values.values())
            detail = (f"rank {self.info.rank}: {detail}" if here
                      else f"on another rank; rank {self.info.rank}: {detail}")
        self.parts.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buf, saved in self._bn_state:
                buf.copy_(saved)
        for cb in self.callbacks:
            cb.on_non_finite(self, values, detail)


def run_training(cfg: Config, resume: bool = False, device: str = "auto", overwrite: bool = False) -> dict | None:
    return Trainer(cfg, resume, device, overwrite=overwrite).train()

