"""The training loop's callbacks: each one job, called at fixed points of :class:`rrseg.engine.trainer.Trainer`.

The loop itself only steps: set the learning rate, run the micro-batches, update. Everything around it is a
callback, called in list order at each hook; a hook runs on every callback before the next one starts (only a
record of the log is handed on at once, so that the log keeps the order of events):

- ``on_train_start(trainer)``: before the first iteration (also of a resumed run);
- ``on_iteration_start(trainer)``: before each iteration (``Signals`` stops the run here);
- ``on_iteration_end(trainer, losses, lr)``: after each iteration; ``losses`` is None for a step skipped for a
  non-finite loss;
- ``on_record(trainer, record)``: every record of the run's log (``trainer.log``): start, train, eval, skip, end;
- ``on_evaluation(trainer, report)``: after each evaluation (periodic and final), once the hook in which
  ``Evaluation`` evaluated has run on every callback (``trainer.announce_evaluation``);
- ``on_non_finite(trainer, terms, detail)``: a NaN / infinite loss (after the step was undone);
- ``on_train_end(trainer)``: after the last iteration: the final evaluation (``Evaluation``), checkpoint
  (``Checkpointing``) and the exported model and report (``Export``), in that order;
- ``close(trainer)``: at the end, also after an error.

A callback's state (``state_dict`` / ``load_state_dict``: the best score and the evaluations so far, the loss
sums since the last record, the number of skipped steps) is saved in every training checkpoint, under the
callback's class name, and restored on resume, so a resumed run carries on as if it had not stopped.

``default_callbacks`` gives the standard set; ``Trainer(cfg, callbacks=[...])`` adds one of yours after them.
Callbacks that write files run on rank 0 only; the others run on every rank (they take part in collectives).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from rrseg.engine import checkpoint as ckpt
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, jsonable
from rrseg.output import show_progress

if TYPE_CHECKING:
    from rrseg.engine.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = [
    "Callback",
    "Checkpointing",
    "Evaluation",
    "Export",
    "JsonlLog",
    "LossAverages",
    "NonFinitePolicy",
    "Progress",
    "Signals",
    "StepLosses",
    "TensorBoard",
    "TrainingStopped",
    "default_callbacks",
    "strict_record",
]


class TrainingStopped(Exception):
    """SIGTERM / SIGINT arrived: the trainer saves a checkpoint and exits with 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StepLosses(Mapping[str, float]):
    """One optimizer step's loss terms and their sum ``"loss"``, each averaged over the step's micro-batches.

    The values stay on the device as the criterion gave them (``values``: [micro-batches, terms + 1], detached)
    until one is read: ``losses["loss"]`` or ``dict(losses)`` waits for the device (once per step); a callback
    that reads every step makes the training loop wait every step. :class:`LossAverages` reads the steps of a
    ``train.log_interval`` together (:meth:`read`): one wait per record. The averages are computed on the host,
    in float64: the sum over the micro-batches of ``value / micro-batches``.
    """

    def __init__(self, names: Sequence[str], values: torch.Tensor) -> None:
        self.names = tuple(names)
        self.values = values
        self._floats: dict[str, float] | None = None

    @staticmethod
    def read(steps: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
        """The averages of each of ``steps``, fetched from the device with one transfer for all of them."""
        todo = [s for s in steps if isinstance(s, StepLosses) and s._floats is None]
        if len({(s.values.shape, s.values.device) for s in todo}) == 1:
            rows = torch.stack([s.values for s in todo]).tolist()
        else:
            rows = [s.values.tolist() for s in todo]
        for step, micro_rows in zip(todo, rows):
            step._floats = _micro_average(step.names, micro_rows)
        return [dict(s._floats) if isinstance(s, StepLosses) else dict(s) for s in steps]

    def __getitem__(self, name: str) -> float:
        if self._floats is None:
            self.read([self])
        return self._floats[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"StepLosses({list(self.names)}, {self.values.shape[0]} micro-batches)"


def _micro_average(names: Sequence[str], rows: list[list[float]]) -> dict[str, float]:
    """``{name: sum over rows of value / len(rows)}``, in that order of operations."""
    out: dict[str, float] = {}
    for row in rows:
        for name, value in zip(names, row):
            out[name] = out.get(name, 0.0) + value / len(rows)
    return out


class Callback:
    """Base class: every hook does nothing, and there is no state to save."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_iteration_start(self, trainer: Trainer) -> None: ...

    def on_iteration_end(self, trainer: Trainer, losses: dict[str, float] | None, lr: float) -> None: ...

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_evaluation(self, trainer: Trainer, report: dict) -> None: ...

    def on_non_finite(self, trainer: Trainer, terms: dict[str, float], detail: str) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...

    def close(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this callback: plain values (``torch.load(weights_only=True)`` loads them)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class JsonlLog(Callback):
    """Appends every record to ``log.jsonl`` in the work dir, one JSON object per line, in strict JSON: a NaN or
    infinite value (a group's mIoU with no class present, a non-finite loss) is written as null and its key
    listed in the record's ``"nonfinite"`` (see :func:`strict_record`)."""

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        path = trainer.work_dir / "log.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(strict_record(record), allow_nan=False) + "\n")
        except OSError as e:
            raise RRSegError(f"{path}: cannot write ({e.strerror or e})") from None


def strict_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as strict JSON can hold it: NaN / infinite floats (also in nested values) become None, and the
    top-level keys that held one are listed in ``"nonfinite"`` (absent when there are none)."""
    flagged = [k for k, v in record.items() if _has_nonfinite(v)]
    out = jsonable(record)
    if flagged:
        out["nonfinite"] = flagged
    return out


def _has_nonfinite(value: Any) -> bool:
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        value = value.tolist()
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_nonfinite(v) for v in value)
    return False


class TensorBoard(Callback):
    """Training losses and the learning rate (``train/...``) and the evaluation summary (``val/...``) in
    ``work_dir/tb``; a resumed run purges the steps after its checkpoint."""

    NOT_LOSSES = frozenset({"time", "event", "iteration", "lr", "sec_per_iter"})

    def __init__(self) -> None:
        self.writer = None

    def on_train_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(trainer.work_dir / "tb"), purge_step=trainer.iteration or None)

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record.get("iteration", trainer.iteration)
        if record["event"] == "train":
            for k, v in record.items():
                if k not in self.NOT_LOSSES:
                    self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/lr", record["lr"], step)
        elif record["event"] == "eval":
            for k, v in record.items():
                summary = k in ("mIoU", "aAcc") or k.endswith("_mIoU")
                if summary and isinstance(v, float) and math.isfinite(v):
                    self.writer.add_scalar(f"val/{k}", v, step)

    def close(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Progress(Callback):
    """A rich progress bar with the loss and learning rate (or the number of skipped steps). In the standard
    set when ``train.progress`` is on and the ``rrseg`` logger shows progress (INFO; not under ``rrseg -q``)."""

    def __init__(self) -> None:
        self.bar = None
        self.task = None

    def on_train_start(self, trainer: Trainer) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
        self.task = self.bar.add_task(trainer.cfg.name or "train", total=trainer.cfg.schedule.iters,
                                      completed=trainer.iteration, status="")
        self.bar.start()

    def on_iteration_end(self, trainer: Trainer, losses: dict[str, float] | None, lr: float) -> None:
        status = (f"loss {losses['loss']:.3f} lr {lr:.2e}" if losses is not None
                  else f"{trainer.callback(NonFinitePolicy).skipped} steps skipped")
        self.bar.update(self.task, completed=trainer.iteration, status=status)

    def close(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class LossAverages(Callback):
    """Every ``train.log_interval`` iterations (and at the last), a ``train`` record: the loss terms averaged
    over the iterations since the last one (skipped steps left out), the learning rate and seconds per step.
    The steps' losses stay on the device until the record: one wait for the device per record, none per step."""

    def __init__(self) -> None:
        self.steps: list[Mapping[str, float]] = []  # since the last record (StepLosses), skipped ones left out
        self.running: dict[str, float] = {}  # sums read back from a checkpoint taken between two records
        self.count = 0  # the steps in ``running``
        self.seconds = 0.0  # the time of the iterations in ``running`` up to ``t_last``
        self.t_last = time.perf_counter()
        self.overflow_warned = 0

    def on_train_start(self, trainer: Trainer) -> None:
        self.t_last = time.perf_counter()

    def on_iteration_end(self, trainer: Trainer, losses: Mapping[str, float] | None, lr: float) -> None:
        if losses is not None:
            self.steps.append(losses)
        it = trainer.iteration
        count = self.count + len(self.steps)
        if count and (it % trainer.cfg.train.log_interval == 0 or it == trainer.cfg.schedule.iters):
            running = self._sums()
            dt = self.seconds + time.perf_counter() - self.t_last
            trainer.log({"event": "train", "iteration": it, "lr": lr, "sec_per_iter": dt / count,
                         **{k: v / count for k, v in running.items()}, **self._region_overflow(trainer)})
            self.steps, self.running, self.count, self.seconds = [], {}, 0, 0.0
            self.t_last = time.perf_counter()

    def _region_overflow(self, trainer: Trainer) -> dict[str, int]:
        """``{"region_overflow": n}`` once RR's branch has left n regions without a slot in this process (see
        ``RROptions.slots``), with a warning when n grows; read only from a branch that uses slots."""
        branch = getattr(trainer.parts.model, "rebalance", None)
        if not getattr(branch, "uses_slots", False):
            return {}
        n = int(branch.overflow)
        if n > self.overflow_warned:
            logger.warning("the RR branch left %d regions out of its %d slots so far (the most frequent classes "
                           "of the batches with more regions); raise loss.region.slots", n, branch.slots)
            self.overflow_warned = n
        return {"region_overflow": n} if n else {}

    def _sums(self) -> dict[str, float]:
        """The loss sums of ``running`` and ``steps`` (the record's one wait for the device)."""
        running = dict(self.running)
        for step in StepLosses.read(self.steps) if self.steps else ():
            for k, v in step.items():
                running[k] = running.get(k, 0.0) + v
        return running

    def state_dict(self) -> dict[str, Any]:
        # a checkpoint between two records: the resumed run's next record averages the same iterations
        return {"running": self._sums(), "count": self.count + len(self.steps),
                "seconds": self.seconds + time.perf_counter() - self.t_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running, self.count, self.seconds = dict(state["running"]), int(state["count"]), float(state["seconds"])
        self.steps = []


class Evaluation(Callback):
    """Evaluates every ``eval.interval`` iterations and at the end of training (``on_train_end``; 0: only
    there); after each evaluation, on rank 0: the history, an ``eval`` record, ``eval/iter_N.json`` and, on a new
    best mIoU, ``best.safetensors``. Its state: ``best`` and ``history``; ``last`` is the last report."""

    def __init__(self) -> None:
        self.best: dict[str, Any] = {"mIoU": -1.0, "iteration": -1}
        self.history: list[dict] = []
        self.last: dict | None = None

    def on_iteration_end(self, trainer: Trainer, losses: dict[str, float] | None, lr: float) -> None:
        interval, it = trainer.cfg.eval.interval, trainer.iteration
        if interval and it % interval == 0 and it < trainer.cfg.schedule.iters:  # the last one is on_train_end's
            self.evaluate(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        self.evaluate(trainer)

    def evaluate(self, trainer: Trainer) -> dict:
        """Evaluate the model now (every rank takes part), keep the result, announce it to the callbacks."""
        report = trainer.evaluate()
        if trainer.info.is_main:
            self._keep(trainer, report)
        self.last = report
        trainer.announce_evaluation(report)
        return report

    def _keep(self, trainer: Trainer, report: dict) -> None:
        groups = report.get("groups", {})
        summary = {"iteration": trainer.iteration, "mIoU": report["overall"]["mIoU"],
                   "aAcc": report["overall"]["aAcc"], **{f"{g}_mIoU": v["mIoU"] for g, v in groups.items()}}
        self.history.append(summary)
        trainer.log({"event": "eval", **summary, **{f"{g}_mFPR": v["mFPR"] for g, v in groups.items()}})
        atomic_write_json(trainer.work_dir / "eval" / f"iter_{trainer.iteration:07d}.json", report)
        miou = report["overall"]["mIoU"]
        if math.isfinite(miou) and miou > self.best["mIoU"]:
            self.best = {"mIoU": miou, "iteration": trainer.iteration}
            parts = trainer.parts
            ckpt.save_weights(trainer.work_dir / "best.safetensors", parts.model.state_dict(),
                              {**parts.metadata, "iteration": trainer.iteration, "mIoU": miou})

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.history = dict(state["best"]), [dict(h) for h in state["history"]]


class Checkpointing(Callback):
    """A training checkpoint every ``train.checkpoint_interval`` iterations and at the end of training."""

    def on_iteration_end(self, trainer: Trainer, losses: dict[str, float] | None, lr: float) -> None:
        it = trainer.iteration
        if it % trainer.cfg.train.checkpoint_interval == 0 and it < trainer.cfg.schedule.iters:  # see on_train_end
            trainer.save_checkpoint()

    def on_train_end(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()  # after the final evaluation: its best and history are in it


class Export(Callback):
    """At the end of training: the ``end`` record (every rank's parameter fingerprint, the skipped steps), then on
    rank 0 ``inference.safetensors`` (the model without its training-only parts) and the final report's files
    (report.json, report.md, the plots), written last: a work dir with report.json holds a finished run.
    ``report`` (rank 0: the final evaluation with the run's best) and ``written`` (the files) are what
    ``Trainer.train`` returns and names."""

    def __init__(self) -> None:
        self.report: dict | None = None
        self.written: list[str] = []

    def on_train_end(self, trainer: Trainer) -> None:
        parts, evaluation = trainer.parts, trainer.callback(Evaluation)
        trainer.log({"event": "end", "iteration": trainer.iteration, "param_sha256": trainer.fingerprints(),
                     "skipped_non_finite": trainer.callback(NonFinitePolicy).skipped})
        if not trainer.info.is_main:
            return
        model = parts.model
        weights = model.inference_state_dict() if hasattr(model, "inference_state_dict") else model.state_dict()
        ckpt.save_weights(trainer.work_dir / "inference.safetensors", weights,
                          {**parts.metadata, "iteration": trainer.iteration})
        self.report = {**evaluation.last, "best": dict(evaluation.best)}
        self.written = [*trainer.write_report(self.report), "inference.safetensors"]
        if (trainer.work_dir / "best.safetensors").is_file():
            self.written.append("best.safetensors")


class NonFinitePolicy(Callback):
    """``train.nan_policy``: ``skip`` logs the skipped step and goes on (``skipped`` counts them over the run);
    ``stop`` saves the last good state and ends the run with a one-line error."""

    def __init__(self) -> None:
        self.skipped = 0

    def on_non_finite(self, trainer: Trainer, terms: dict[str, float], detail: str) -> None:
        if trainer.cfg.train.nan_policy == "skip":
            self.skipped += 1
            # the terms' values too: log.jsonl writes the non-finite ones as null, listed in "nonfinite"
            trainer.log({"event": "skip_non_finite", "iteration": trainer.iteration + 1, "terms": detail, **terms})
            return
        path = trainer.save_checkpoint()
        saved = f"is saved in {path}" if path else "is saved by rank 0"
        raise RRSegError(f"non-finite loss in iteration {trainer.iteration + 1} ({detail}); the last good state "
                         f"(iteration {trainer.iteration}) {saved}; continue with --resume after a fix, "
                         f"or set train.nan_policy=skip to skip such steps")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state["skipped"])


class Signals(Callback):
    """SIGTERM / SIGINT end the run at the next iteration boundary (the trainer saves a checkpoint then);
    the previous handlers come back at the end."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict = {}

    def on_train_start(self, trainer: Trainer) -> None:
        def handler(signum, frame):
            self.received = signum

        for s in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self.previous[s] = signal.signal(s, handler)

    def on_iteration_start(self, trainer: Trainer) -> None:
        if self.received is not None:
            raise TrainingStopped(self.received)

    def close(self, trainer: Trainer) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.previous = {}


def default_callbacks(trainer: Trainer) -> list[Callback]:
    """The standard set, in the order they run: signals, the non-finite policy, then per iteration the progress
    bar, the loss averages, evaluation and checkpoints, and at the end the export; the log's writers (JSONL,
    TensorBoard) on rank 0."""
    cfg, main = trainer.cfg, trainer.info.is_main
    callbacks: list[Callback] = [Signals(), NonFinitePolicy()]
    if main:
        callbacks.append(JsonlLog())
        if cfg.train.tensorboard:
            callbacks.append(TensorBoard())
        if cfg.train.progress and show_progress():  # a bar is progress: not with rrseg -q (rrseg.output)
            callbacks.append(Progress())
    callbacks += [LossAverages(), Evaluation(), Checkpointing(), Export()]
    return callbacks
