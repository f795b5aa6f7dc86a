"""Host synchronisations of the training step (issue 23 item 7): at most one per optimizer step, whether the loss
was finite (the non-finite policy's check); none per loss term or micro-batch. The loss values stay on the device
and are read once per ``train.log_interval``.

Counted on the CPU with the dispatch spy of the metrics tests (``tests/metrics/test_confusion.py``): it records
every ATen op that would make the host wait for a GPU (``.item()`` / ``bool()`` / ``float()``, nonzero, boolean
indexing, bincount, ...), with the rrseg function that called it.
"""

from __future__ import annotations

import math
import traceback
from collections import Counter

import pytest
import torch

from rrseg.engine.callbacks import Callback, StepLosses
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer
from rrseg.types import SegOutput
from tests.metrics.test_confusion import _HostSyncSpy
from tests.rebalance.test_pixel_losses import IGNORE, TERMS, make


class _Spy(_HostSyncSpy):
    """The metrics' spy, also noting the innermost rrseg function of each sync; on only while ``active``."""

    def __init__(self) -> None:
        super().__init__()
        self.where: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = len(self.syncs)
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if len(self.syncs) > before:
            ours = [f.name for f in traceback.extract_stack() if "/rrseg/" in f.filename.replace("\\", "/")]
            self.where.append(ours[-1] if ours else "?")
        return out


class _SpyOnSteps(Callback):
    """Turns the spy on for the training iterations only: from the first iteration's start to the last
    iteration's end (this callback runs after the standard ones, so every iteration's hooks are inside; the
    final evaluation and checkpoint are not)."""

    def __init__(self, spy: _Spy, iters: int) -> None:
        self.spy, self.iters, self.on = spy, iters, False

    def on_iteration_start(self, trainer):
        if trainer.iteration == 0:
            self.spy.__enter__()
            self.on = True

    def on_iteration_end(self, trainer, losses, lr):
        if trainer.iteration == self.iters:
            self.close(trainer)

    def close(self, trainer):  # also after an error: the spy never outlives the test
        if self.on:
            self.on = False
            self.spy.__exit__(None, None, None)


N, LOG_INTERVAL = 6, 4


@pytest.mark.parametrize(("pixel", "region", "accumulate"), [
    ("ce", "none", 1), ("ce", "rr", 2), ("weighted_ce", "none", 3), ("balanced_softmax", "rr", 1),
    ("blv", "none", 2),
])
def test_one_host_sync_per_optimizer_step(tiny_config, monkeypatch, pixel, region, accumulate):
    cfg = load_config(tiny_config(
        "syncs", loss={"pixel": {"type": pixel}, "region": {"type": region}},
        data={"batch_size": 2},
        # SGD: AdamW reads its step counters with .item(), CPU tensors also when the model is on a GPU (torch's
        # default, capturable=False), which the spy cannot tell apart from device reads here
        optim={"type": "sgd", "lr": 0.01, "accumulate": accumulate},
        schedule={"iters": N, "warmup_iters": 1}, eval={"interval": 0, "batch_size": 4},
        train={"log_interval": LOG_INTERVAL, "checkpoint_interval": 1000, "progress": False, "tensorboard": False}))
    spy = _Spy()
    trainer = Trainer(cfg, device="cpu", callbacks=[_SpyOnSteps(spy, N)])
    trainer.setup()
    # the data decoded and augmented beforehand: the data pipeline (host-side work, in loader workers on a
    # GPU machine) is not the step
    batches = iter(trainer.train_loader)
    trainer.train_loader = [next(batches) for _ in range(N * accumulate)]
    reads = []
    read = StepLosses.read

    def counted(steps):
        reads.append(len(steps))
        return read(steps)

    monkeypatch.setattr(StepLosses, "read", staticmethod(counted))
    trainer.train()

    where = Counter(spy.where)
    # the one per step: whether the step's loss was finite (all its micro-batches at once)
    assert where.pop("_first_non_finite") == N, spy.where
    if region == "rr":  # RR's label check: a named error on the CPU, an asynchronous device assert on a GPU
        assert where.pop("_check_labels") == N * accumulate, spy.where
    assert not where, (where, spy.syncs)  # nothing per loss term or micro-batch
    # the loss values: read once per train record, all the interval's steps together
    records = [r for r in _log(trainer) if r["event"] == "train"]
    assert [r["iteration"] for r in records] == [4, 6]
    assert reads == [4, 2]
    for r in records:
        names = {"loss", "loss_aux", f"loss_{'ce' if pixel == 'ce' else _short(pixel)}"}
        if region == "rr":
            names.add("loss_rr")
        assert names <= r.keys() and all(math.isfinite(r[k]) for k in names)
        assert r["loss"] == pytest.approx(sum(r[k] for k in names - {"loss"}), rel=1e-5)


def _short(pixel: str) -> str:
    return {"weighted_ce": "wce", "balanced_softmax": "bsm", "blv": "blv"}[pixel]


def _log(trainer: Trainer) -> list[dict]:
    import json

    return [json.loads(line) for line in (trainer.work_dir / "log.jsonl").read_text().splitlines()]


def test_step_losses_average_as_python_floats():
    """The averages over micro-batches: sum of value / micro-batches in float64 on the host, the arithmetic of
    the per-micro-batch float() reads they replace, to the bit."""
    rows = torch.tensor([[0.1, 2.0, 2.1], [1.0 / 3.0, 0.7, 1.0333333], [5.5, 1e-8, 5.5]])
    losses = StepLosses(["a", "b", "loss"], rows)
    expected: dict[str, float] = {}
    for row in rows:
        for k, v in zip(["a", "b", "loss"], row):
            expected[k] = expected.get(k, 0.0) + float(v) / 3
    assert dict(losses) == expected and list(losses) == ["a", "b", "loss"] and len(losses) == 3
    other = StepLosses(["a", "b", "loss"], rows.flip(0))
    assert StepLosses.read([losses, other, {"a": 1.0}]) == [expected, dict(other), {"a": 1.0}]


@pytest.mark.parametrize("all_ignored", [False, True], ids=["labelled", "all-ignored"])
@pytest.mark.parametrize("avg_non_ignore", [True, False])
@pytest.mark.parametrize("name", list(TERMS))
def test_pixel_losses_decide_all_ignored_on_the_device(name, avg_non_ignore, all_ignored):
    """No ``bool()`` / ``.item()`` on the labels and no boolean index: the all-ignored batch's 0 is selected on
    the device, and focal's ignored pixels weigh 0 rather than being selected out."""
    logits, labels = make(seed=3, logit_hw=(3, 4), label_hw=(6, 8))
    if all_ignored:
        labels[:] = IGNORE
    term = TERMS[name](avg_non_ignore)
    with _Spy() as spy:
        loss = term(SegOutput(logits), labels)
        loss.backward()
    assert spy.syncs == [], spy.syncs
    assert torch.isfinite(logits.grad).all()
    if all_ignored:
        assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
