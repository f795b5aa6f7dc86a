"""The trainer as parts and callbacks: attributes after __init__, evaluate() before train(), the hooks' order,
a user callback, and the TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrseg.engine import checkpoint as ckpt
from rrseg.engine.callbacks import Callback, default_callbacks
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_start(self, trainer):
        self.calls.append(("start", trainer.iteration))

    def on_iteration_start(self, trainer):
        self.calls.append(("begin", trainer.iteration))

    def on_iteration_end(self, trainer, losses, lr):
        self.calls.append(("end", trainer.iteration, sorted(losses), lr))

    def on_record(self, trainer, record):
        self.calls.append(("record", record["event"], record["iteration"]))

    def on_evaluation(self, trainer, report):
        self.calls.append(("evaluation", report["iteration"]))

    def close(self, trainer):
        self.calls.append(("close",))


def test_attributes_exist_after_init_and_evaluate_works_before_train(tiny_config):
    trainer = Trainer(load_config(tiny_config("fresh")), device="cpu")
    assert trainer.parts is None and trainer.info is None and trainer.callbacks == []
    assert (trainer.iteration, trainer.skipped, trainer.best, trainer.history) == (0, 0, {"mIoU": -1.0,
                                                                                          "iteration": -1}, [])
    report = trainer.evaluate()  # builds the parts, evaluates the untrained model
    assert trainer.parts is not None and report["iteration"] == 0
    assert len(report["per_class"]) == trainer.parts.num_classes == 6
    assert trainer.setup() is trainer.parts  # built once


@pytest.mark.slow  # trains 4 iterations
def test_hooks_run_in_order_and_a_user_callback_sees_everything(tiny_config):
    cfg = load_config(tiny_config("hooks", eval={"interval": 3, "batch_size": 4}, schedule={"iters": 4,
                                                                                                "warmup_iters": 1}))
    rec = Recorder()
    trainer = Trainer(cfg, device="cpu", callbacks=[rec])
    report = trainer.train()
    kinds = [c[0] for c in rec.calls]
    assert kinds[0] == "start" and kinds[-1] == "close"
    assert [c[1] for c in rec.calls if c[0] == "begin"] == [0, 1, 2, 3]
    ends = [c for c in rec.calls if c[0] == "end"]
    assert [c[1] for c in ends] == [1, 2, 3, 4]
    assert all(c[2] == ["loss", "loss_aux", "loss_ce"] for c in ends)
    assert [c[1] for c in rec.calls if c[0] == "evaluation"] == [3, 4]  # periodic, then the final one
    records = [(c[1], c[2]) for c in rec.calls if c[0] == "record"]
    assert records == [("start", 0), ("train", 1), ("train", 2), ("train", 3), ("eval", 3), ("train", 4),
                       ("eval", 4), ("end", 4)]
    # the JSONL log is a callback too: the same records, in the same order
    lines = [json.loads(line) for line in (trainer.work_dir / "log.jsonl").read_text().splitlines()]
    assert [(r["event"], r["iteration"]) for r in lines] == records
    assert report["iteration"] == 4 and trainer.history[-1]["iteration"] == 4


def test_default_callbacks_follow_the_config(tiny_config):
    trainer = Trainer(load_config(tiny_config("cbs", train={"tensorboard": False, "progress": False})), device="cpu")
    trainer.setup()
    names = [type(c).__name__ for c in default_callbacks(trainer)]
    assert names == ["Signals", "NonFinitePolicy", "JsonlLog", "LossAverages", "Evaluation", "Checkpointing"]


def test_the_progress_bar_is_progress(tiny_config, caplog):
    """``train.progress`` on: the bar is in the set when the ``rrseg`` logger shows INFO (the CLI without -q,
    ``logging.basicConfig(level=logging.INFO)``), and not at the RESULT level (-q) or above."""
    import logging

    from rrseg.output import RESULT

    trainer = Trainer(load_config(tiny_config("bar", train={"tensorboard": False, "progress": True})), device="cpu")
    trainer.setup()
    shown = {}
    for level in (logging.DEBUG, logging.INFO, RESULT, logging.WARNING):
        caplog.set_level(level, logger="rrseg")
        shown[level] = "Progress" in [type(c).__name__ for c in default_callbacks(trainer)]
    assert shown == {logging.DEBUG: True, logging.INFO: True, RESULT: False, logging.WARNING: False}


@pytest.mark.slow  # trains 6 iterations
def test_tensorboard_gets_losses_lr_and_the_eval_summary(tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(tiny_config("tb", train={"tensorboard": True, "progress": False}))
    trainer = Trainer(cfg, device="cpu")
    trainer.train()
    acc = EventAccumulator(str(trainer.work_dir / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_ce", "train/loss_aux", "train/lr", "val/mIoU", "val/aAcc",
            "val/rare_mIoU"} <= tags
    assert "train/sec_per_iter" not in tags and not any(t.endswith("_mFPR") for t in tags)
    assert [e.step for e in acc.Scalars("val/mIoU")] == [3, 6]
    logged = [r for r in map(json.loads, (trainer.work_dir / "log.jsonl").read_text().splitlines())
              if r["event"] == "train"]
    assert np.allclose([e.value for e in acc.Scalars("train/loss")], [r["loss"] for r in logged])


@pytest.mark.parametrize(("file", "work"), [("w/best.safetensors", "w"), ("w/inference.safetensors", "w"),
                                            ("w/checkpoints/iter_0000006/model.safetensors", "w"),
                                            ("elsewhere/x.safetensors", "elsewhere")])
def test_work_dir_of_a_weights_file(file, work):
    assert ckpt.work_dir_of(Path("/r") / file) == Path("/r") / work


def _reject(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def test_jsonl_log_is_strict_json_with_non_finite_values_flagged(tmp_path):
    """log.jsonl holds strict JSON: a NaN / infinite value (a skipped step's loss terms, a group's mIoU with no
    class present) is null and its key listed in "nonfinite"; a record without one has no "nonfinite". The
    skip policy's record carries the terms' values, so a skipped step's log line names them."""
    from types import SimpleNamespace

    from rrseg.engine.callbacks import JsonlLog, NonFinitePolicy

    log = JsonlLog()
    trainer = SimpleNamespace(work_dir=tmp_path, iteration=4, skipped=0,
                              cfg=SimpleNamespace(train=SimpleNamespace(nan_policy="skip")))
    trainer.log = lambda record: log.on_record(trainer, {"time": 1.0, **record})
    NonFinitePolicy().on_non_finite(trainer, {"loss_ce": float("nan"), "loss_aux": 0.5, "loss_rr": float("inf")},
                                    "loss_ce=nan, loss_aux=0.5, loss_rr=inf")
    trainer.log({"event": "eval", "iteration": 5, "mIoU": 0.25, "rare_mIoU": float("nan"),
                 "groups": {"rare": [np.float64("nan"), 1.0]}})
    trainer.log({"event": "train", "iteration": 6, "loss_ce": 1.5, "lr": 1e-3})
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    skip, evaluation, train = (json.loads(line, parse_constant=_reject) for line in lines)
    assert skip == {"time": 1.0, "event": "skip_non_finite", "iteration": 5, "terms": "loss_ce=nan, loss_aux=0.5, "
                    "loss_rr=inf", "loss_ce": None, "loss_aux": 0.5, "loss_rr": None,
                    "nonfinite": ["loss_ce", "loss_rr"]}
    assert evaluation["rare_mIoU"] is None and evaluation["groups"] == {"rare": [None, 1.0]}
    assert evaluation["nonfinite"] == ["rare_mIoU", "groups"] and evaluation["mIoU"] == 0.25
    assert "nonfinite" not in train and train["loss_ce"] == 1.5
    assert trainer.skipped == 1


def test_curves_plot_a_logged_null_as_a_gap(tmp_path):
    """The training curves read log.jsonl back: a null (a non-finite value) is a gap, not an error."""
    from rrseg.tools.experiment import plot_curves

    records = [{"event": "start", "iteration": 0}, {"event": "train", "iteration": 1, "loss_ce": 2.0},
               {"event": "train", "iteration": 2, "loss_ce": None, "nonfinite": ["loss_ce"]},
               {"event": "train", "iteration": 3, "loss_ce": 1.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_curves({"run": tmp_path}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
