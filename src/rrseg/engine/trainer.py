"""Iteration-based training from a Config: DDP through torchrun, AMP, exact resume, periodic evaluation.

``Trainer(cfg).train()``: the run's parts come from :func:`rrseg.engine.components.build_components` (or are
given ready-made: ``Trainer(cfg, components=...)``); the loop below only steps (learning rate,
``optim.accumulate`` micro-batches of ``data.batch_size`` per process, one update); everything around it
(progress, the JSONL log, TensorBoard, evaluation, checkpoints, the final outputs, the NaN policy, signals) is a
callback of :mod:`rrseg.engine.callbacks`, which keeps its own state in the checkpoints. The loss is the sum of
named terms (pixel loss, auxiliary CE, the region term), each logged separately. Everything random is a function
of the seed and the iteration, so an interrupted and resumed run ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml

from rrseg.allocator import tune_malloc
from rrseg.data.base import image_sizes
from rrseg.engine import checkpoint as ckpt
from rrseg.engine.callbacks import Callback, Export, StepLosses, TrainingStopped, default_callbacks
from rrseg.engine.components import Components, build_components, build_train_loader, build_val_loader, global_batch
from rrseg.engine.config import Config, config_to_dict, resolved_work_dir
from rrseg.engine.distributed import DistInfo, barrier, cleanup, setup
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, atomic_write_text, check_writable, ensure_writable_dir, remove_stale_temps
from rrseg.metrics.report import format_report
from rrseg.output import RESULT

logger = logging.getLogger(__name__)

__all__ = ["Trainer"]

C = TypeVar("C", bound=Callback)


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
    data and optimizer: built from the config, or ``components`` as given) and the loaders are made ready by
    :meth:`setup`, which :meth:`train` and :meth:`evaluate` call. Ready-made components are used as they are:
    their model on the device the run uses (``device``), wrapped for DDP by whoever built them."""

    def __init__(self, cfg: Config, resume: bool = False, device: str = "auto",
                 callbacks: Sequence[Callback] = (), overwrite: bool = False,
                 components: Components | None = None) -> None:
        self.cfg = cfg
        self.resume = resume
        self.overwrite = overwrite  # a work dir that holds a run is refused without it (or resume)
        self.device_request = device
        self.work_dir = Path(resolved_work_dir(cfg))
        self.info: DistInfo | None = None  # the process group and device, set by setup()
        self._given = components  # ready-made parts (None: built from the config)
        self.parts: Components | None = None
        self.train_loader: torch.utils.data.DataLoader | None = None  # from the start iteration on (setup)
        self.val_loader: torch.utils.data.DataLoader | None = None
        self.iteration = 0
        # train.channels_last: the images too (build_components converts the model's weights)
        self._memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
        self.extra_callbacks = list(callbacks)
        self.callbacks: list[Callback] = []
        self._callback_states: dict[str, dict] = {}  # read from the checkpoint resumed, until the callbacks exist
        self._announced: list[dict] = []  # evaluations for on_evaluation, delivered after the current hook
        self._bn_state: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self) -> Components:
        """Build the parts once: process group, seed, data, counts, model, optimizer; write the work dir's
        config and counts; resume from the latest checkpoint when asked; then the loaders, from the iteration
        the run starts at."""
        if self.parts is not None:
            return self.parts
        cfg = self.cfg
        self.info = info = setup(self.device_request)
        check_writable(self.work_dir)  # fail before any work; nothing is written until data and model are valid
        previous = [] if self.resume else self._previous_run()
        if previous and not self.overwrite:
            raise RRSegError(f"{self.work_dir} holds a run ({', '.join(previous[:3])}): continue it with --resume, "
                             "replace it with --overwrite, or choose another --work-dir")
        if info.device.type == "cpu":
            tune_malloc()  # the step's activations reuse heap memory (rrseg.allocator; the rrseg command set it too)
            if cfg.train.deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
                # which also fills every new tensor with NaN, a guard against kernels that read memory before
                # writing it: none in rrseg's training does (the demo's parameters are the same bit for bit without
                # the fill) and it costs 1-3 % of a CPU training step (and of the loader workers, which inherit it)
                torch.utils.deterministic.fill_uninitialized_memory = False
        random.seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        parts = self._given if self._given is not None else build_components(cfg, info, self.work_dir)
        if self._given is not None and cfg.train.compile and info.is_main:
            logger.warning("train.compile: ready-made components are used as they are, uncompiled; compile them with "
                           "rrseg.engine.components.compile_for_training and pass its module as Components(ddp=...)")
        if info.is_main:  # data, counts and model are valid: the first write to the work dir
            self._log_global_batch()
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
            if parts.counts is not None and not cfg.loss.counts and not (self.work_dir / "counts.json").is_file():
                atomic_write_json(self.work_dir / "counts.json", parts.counts.to_json())
        barrier()
        self.parts = parts
        rng_state = self._load_latest() if self.resume else None
        self.train_loader = build_train_loader(cfg, parts.train_ds, parts.train_transforms, info, self.iteration)
        self.val_loader = build_val_loader(cfg, parts.val_ds, info)
        if rng_state is not None:
            ckpt.restore_rng(rng_state)
        return parts

    def _log_global_batch(self) -> None:
        """The run's global batch, and a warning when the config assumes another (``train.global_batch``)."""
        cfg, n = self.cfg, global_batch(self.cfg, self.info.world_size)
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
        if "callbacks" in state:
            self._callback_states = dict(state["callbacks"])
        else:  # written before the callbacks kept their own state: the best score and history were the trainer's
            self._callback_states = {"Evaluation": {"best": state["best"], "history": state.get("history", [])}}
        if self.info.is_main:
            logger.info("resumed from %s at iteration %d", latest, self.iteration)
        return state["rng"]

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        """The callbacks under the names their state is saved by: the class name (a second one of a class: #2)."""
        seen: Counter[str] = Counter()
        out = []
        for cb in self.callbacks:
            name = type(cb).__name__
            seen[name] += 1
            out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", cb))
        return out

    def callback(self, kind: type[C]) -> C:
        """The run's (first) callback of a kind, e.g. ``trainer.callback(Evaluation).best``."""
        for cb in self.callbacks:
            if isinstance(cb, kind):
                return cb
        raise LookupError(f"this run has no {kind.__name__} callback")

    # -- checkpoints, evaluation, the log ----------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """A training checkpoint of this iteration, the callbacks' states with it (written by rank 0; every rank
        waits for it)."""
        parts, path = self.setup(), None
        if self.info.is_main:
            state = {
                "optimizer": parts.optimizer.state_dict(),
                "scaler": parts.scaler.state_dict(),
                "iteration": self.iteration,
                "callbacks": {name: own for name, cb in self._keyed_callbacks() if (own := cb.state_dict())},
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
        report = parts.evaluator.report(parts.model, self.val_loader)
        report["iteration"] = self.iteration
        report["name"] = self.cfg.name
        return report

    def announce_evaluation(self, report: dict) -> None:
        """An evaluation's report for the callbacks' ``on_evaluation``, called once the hook running now has run
        on every callback (a hook never starts inside another)."""
        self._announced.append(report)

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
            self.setup()
            self.callbacks = [*default_callbacks(self), *self.extra_callbacks]
            self._restore_callbacks()
            try:
                self._loop()
            finally:
                for cb in self.callbacks:
                    cb.close(self)
        finally:
            cleanup()
        export = self.callback(Export)
        if export.report is not None:  # rank 0; after the progress bar has gone: the results come last
            logger.log(RESULT, format_report(export.report))
            logger.log(RESULT, "wrote %s/%s", self.work_dir, ", ".join(export.written))
        return export.report

    def _restore_callbacks(self) -> None:
        """Give the callbacks their state from the checkpoint resumed."""
        states = self._callback_states
        for name, cb in self._keyed_callbacks():
            if name in states:
                cb.load_state_dict(states.pop(name))
        if states and self.info.is_main:
            logger.warning("the checkpoint holds the state of callbacks this run does not have (%s); it is not used",
                           ", ".join(sorted(states)))

    def _emit(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every callback in order, then deliver the evaluations announced meanwhile."""
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)
        while self._announced:
            report = self._announced.pop(0)
            for cb in self.callbacks:
                cb.on_evaluation(self, report)

    def _loop(self) -> None:
        cfg, info, parts = self.cfg, self.info, self.parts
        total = cfg.schedule.iters
        self._emit("on_train_start")
        self.log({"event": "start", "iteration": self.iteration, "world_size": info.world_size,
                  "num_classes": parts.num_classes,
                  "model": cfg.model.name if self._given is None else type(parts.model).__name__,
                  "resume": self.resume})
        data_iter = iter(self.train_loader)
        parts.ddp.train()
        try:
            while self.iteration < total:
                self._emit("on_iteration_start")
                lr = parts.set_lr(self.iteration)
                losses = self._step(data_iter)  # None: skipped (non-finite, nan_policy=skip)
                self.iteration += 1
                self._emit("on_iteration_end", losses, lr)
            self._emit("on_train_end")  # the final evaluation, checkpoint, inference weights and report
            barrier()  # the ranks leave together: gloo can abort a process that exits while a peer still works
        except TrainingStopped as stop:
            path = self.save_checkpoint()
            if info.is_main:
                logger.log(RESULT, "\n%s: checkpoint saved at iteration %d (%s); continue with --resume", stop,
                           self.iteration, path)
            raise SystemExit(128 + stop.signum) from None

    def fingerprints(self) -> list[str]:
        """SHA-256 of every rank's parameters: all equal when DDP kept the replicas in sync. (Buffers such as
        BatchNorm running statistics follow each rank's last batch; rank 0's are the ones saved.)"""
        digest = hashlib.sha256()
        for name, t in self.parts.model.named_parameters():
            digest.update(name.encode())
            # reshape(-1): a channels_last 1x1 kernel counts as contiguous but keeps a last stride other than 1
            digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        mine = digest.hexdigest()
        if not self.info.distributed:
            return [mine]
        gathered: list = [None] * self.info.world_size
        torch.distributed.all_gather_object(gathered, mine)
        return gathered

    def _step(self, data_iter) -> StepLosses | None:
        """One iteration: ``optim.accumulate`` micro-batches, one update. The loss terms (on the device, averaged
        over the micro-batches when read: :class:`StepLosses`), or None when the loss was not finite (the step
        is undone; the policy decides).

        The host waits for the device once per step: whether every micro-batch's loss was finite, read before
        the update. A micro-batch after a non-finite one still runs (its data is this iteration's anyway); the
        undo takes back what it changed (gradients, BatchNorm statistics, the RNG it drew from)."""
        parts, device = self.parts, self.info.device
        accumulate = self.cfg.optim.accumulate
        names: list[str] = []
        values: list[torch.Tensor] = []  # per micro-batch: its terms and their sum, [terms + 1]
        finite: list[torch.Tensor] = []  # per micro-batch: whether its loss is finite
        rng: list[dict] = []  # per micro-batch but the last: the RNG states after its forward pass
        parts.optimizer.zero_grad(set_to_none=True)
        # BatchNorm statistics change in the forward pass: kept, so that a skipped step leaves no trace
        self._bn_state = [(b, b.detach().clone()) for b in parts.batchnorm_buffers]
        for micro in range(accumulate):
            batch = next(data_iter)
            images = batch["image"].to(device, non_blocking=True, memory_format=self._memory_format)
            labels = batch["label"].to(device, non_blocking=True)
            sync = micro == accumulate - 1 or not self.info.distributed
            ctx = parts.ddp.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=parts.amp_dtype or torch.float32,
                                    enabled=parts.amp_dtype is not None):
                    out = parts.ddp(images)
                    terms = parts.criterion(out, labels)
                loss = sum(terms.values())
                if micro < accumulate - 1:  # (a skipped step leaves the RNG as if it had stopped here)
                    rng.append(ckpt.capture_rng())
                names = [*terms, "loss"]
                # float64 holds every term's value exactly, as float(v) would
                values.append(torch.stack([v.detach().reshape(()).double() for v in (*terms.values(), loss)]))
                finite.append(torch.isfinite(loss.detach()))
                parts.scaler.scale(loss / accumulate).backward()
        bad = self._first_non_finite(torch.stack(finite))  # the step's one host synchronisation
        if bad is not None:
            self._undo_step(dict(zip(names[:-1], values[bad][:-1].tolist())), rng[bad] if bad < len(rng) else None)
            return None
        if self.cfg.optim.clip_grad:
            parts.scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(parts.model.parameters(), self.cfg.optim.clip_grad)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        return StepLosses(names, torch.stack(values))

    def _first_non_finite(self, finite: torch.Tensor) -> int | None:
        """The first micro-batch whose loss is NaN or infinite in some process (``finite``: a flag per
        micro-batch), or None. One decision for all ranks: if one rank skipped or stopped alone, the others
        would wait in the gradient all-reduce until the process-group timeout. Reads one value from the device
        when every loss is finite."""
        finite = finite.to(torch.int32)
        if self.info.distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if bool(finite.all()):
            return None
        return finite.tolist().index(0)

    def _undo_step(self, values: dict[str, float], rng: dict | None = None) -> None:
        """The loss of iteration ``self.iteration + 1`` is NaN or infinite (in this process or another; ``values``:
        this process's terms in the first such micro-batch): undo the step (gradients, BatchNorm statistics and,
        with ``rng``, the RNG states as they were after that micro-batch's forward pass), then the callbacks'
        policy skips it or stops the run."""
        detail = ", ".join(f"{k}={x:.4g}" for k, x in values.items())
        if self.info.distributed:
            here = not all(math.isfinite(x) for x in values.values())
            detail = (f"rank {self.info.rank}: {detail}" if here
                      else f"on another rank; rank {self.info.rank}: {detail}")
        self.parts.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buf, saved in self._bn_state:
                buf.copy_(saved)
        if rng is not None:
            ckpt.restore_rng(rng)
        self._emit("on_non_finite", values, detail)

