"""The trainer as parts and callbacks: attributes after __init__, evaluate() before train(), the hooks' order,
a user callback, the end of a run (on_train_end), the callbacks' state in checkpoints (also of the old layout),
ready-made components with a model outside the registry, and the TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rrseg.engine import checkpoint as ckpt
from rrseg.engine.callbacks import Callback, Evaluation, LossAverages, NonFinitePolicy, default_callbacks
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer
from rrseg.types import SegOutput


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

    def on_train_end(self, trainer):
        self.calls.append(("train_end", trainer.iteration))

    def close(self, trainer):
        self.calls.append(("close",))


def test_attributes_exist_after_init_and_evaluate_works_before_train(tiny_config):
    trainer = Trainer(load_config(tiny_config("fresh")), device="cpu")
    assert trainer.parts is None and trainer.info is None and trainer.callbacks == []
    assert trainer.iteration == 0 and trainer.train_loader is None and trainer.val_loader is None
    report = trainer.evaluate()  # builds the parts and loaders, evaluates the untrained model
    assert trainer.parts is not None and report["iteration"] == 0
    assert trainer.train_loader.sampler.start == 0
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
    # the final evaluation is announced once on_train_end has run on every callback
    assert kinds[0] == "start" and kinds[-3:] == ["train_end", "evaluation", "close"]
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
    assert report["iteration"] == 4 and trainer.callback(Evaluation).history[-1]["iteration"] == 4


def test_default_callbacks_follow_the_config(tiny_config):
    trainer = Trainer(load_config(tiny_config("cbs", train={"tensorboard": False, "progress": False})), device="cpu")
    trainer.setup()
    names = [type(c).__name__ for c in default_callbacks(trainer)]
    assert names == ["Signals", "NonFinitePolicy", "JsonlLog", "LossAverages", "Evaluation", "Checkpointing",
                     "Export"]


def test_the_end_of_a_run_happens_once(tiny_config, monkeypatch):
    """``schedule.iters`` a multiple of both intervals: the last iteration's evaluation and checkpoint are
    on_train_end's, each done once, before the export (end record, inference weights, report files) runs once; the
    final checkpoint holds the final evaluation in the callbacks' state."""
    saved, weights = [], []
    save_checkpoint, save_weights = ckpt.save_training_checkpoint, ckpt.save_weights

    def counting_checkpoint(work_dir, iteration, *args, **kwargs):
        saved.append(iteration)
        return save_checkpoint(work_dir, iteration, *args, **kwargs)

    def counting_weights(path, *args, **kwargs):
        weights.append(Path(path).name)
        return save_weights(path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_training_checkpoint", counting_checkpoint)
    monkeypatch.setattr(ckpt, "save_weights", counting_weights)
    cfg = load_config(tiny_config("once", schedule={"iters": 2, "warmup_iters": 0}, eval={"interval": 1,
                                                                                        "batch_size": 4},
                                  train={"checkpoint_interval": 1, "progress": False, "tensorboard": False}))
    rec = Recorder()
    trainer = Trainer(cfg, device="cpu", callbacks=[rec])
    reports = []
    write_report = trainer.write_report
    trainer.write_report = lambda report: reports.append(report) or write_report(report)
    report = trainer.train()
    assert [c[1] for c in rec.calls if c[0] == "evaluation"] == [1, 2]
    assert [c[1] for c in rec.calls if c[0] == "train_end"] == [2]
    assert saved == [1, 2] and weights.count("inference.safetensors") == 1 and reports == [report]
    records = [(c[1], c[2]) for c in rec.calls if c[0] == "record"]
    assert records == [("start", 0), ("train", 1), ("eval", 1), ("train", 2), ("eval", 2), ("end", 2)]
    state = ckpt.load_state(trainer.work_dir / "checkpoints" / "iter_0000002" / "state.pt")
    assert [h["iteration"] for h in state["callbacks"]["Evaluation"]["history"]] == [1, 2]
    assert report["best"] == trainer.callback(Evaluation).best
    assert json.loads((trainer.work_dir / "report.json").read_text())["best"] == report["best"]


class Stateful(Callback):
    """A user callback with state of its own: the iterations it has seen end, over the whole run."""

    def __init__(self) -> None:
        self.ends = 0

    def on_iteration_end(self, trainer, losses, lr):
        self.ends += 1

    def state_dict(self):
        return {"ends": self.ends}

    def load_state_dict(self, state):
        self.ends = state["ends"]


def _checkpointed_run(tiny_config, name: str):
    """A run's config (6 iterations) and a fresh trainer on it, set up, with its callbacks, at iteration 6."""
    cfg = load_config(tiny_config(name, train={"progress": False, "tensorboard": False}))
    trainer = Trainer(cfg, device="cpu", callbacks=[Stateful()])
    trainer.setup()
    trainer.callbacks = [*default_callbacks(trainer), *trainer.extra_callbacks]
    trainer.iteration = cfg.schedule.iters
    return cfg, trainer


def test_callback_state_round_trips_through_a_checkpoint(tiny_config):
    """Each callback's state (the best score and history, the skipped steps, the loss sums since the last record,
    a user callback's own) is saved in the checkpoint and given back to the callbacks of the run that resumes it,
    as it was. The resumed run is at its last iteration: it only ends (the final evaluation joins the history)."""
    cfg, first = _checkpointed_run(tiny_config, "state")
    evaluation = first.callback(Evaluation)
    evaluation.best = {"mIoU": 0.875, "iteration": 3}
    evaluation.history = [{"iteration": 3, "mIoU": 0.875, "aAcc": 0.9, "rare_mIoU": float("nan")}]
    first.callback(NonFinitePolicy).skipped = 2
    averages = first.callback(LossAverages)
    averages.running, averages.count = {"loss": 1.0 / 3.0, "loss_ce": 0.25}, 1
    first.callback(Stateful).ends = 6
    saved = {type(cb).__name__: cb.state_dict() for cb in first.callbacks}
    first.save_checkpoint()

    resumed = Trainer(cfg, device="cpu", resume=True, callbacks=[Stateful()])
    report = resumed.train()
    ev = resumed.callback(Evaluation)
    assert ev.best == {"mIoU": 0.875, "iteration": 3} and report["best"] == ev.best  # the untrained model is worse
    assert ev.history[0]["mIoU"] == 0.875 and np.isnan(ev.history[0]["rare_mIoU"])
    assert [h["iteration"] for h in ev.history] == [3, 6]
    assert resumed.callback(NonFinitePolicy).state_dict() == saved["NonFinitePolicy"] == {"skipped": 2}
    assert resumed.callback(LossAverages).running == {"loss": 1.0 / 3.0, "loss_ce": 0.25}
    assert resumed.callback(LossAverages).count == 1
    assert resumed.callback(Stateful).ends == 6
    end = [json.loads(line) for line in (resumed.work_dir / "log.jsonl").read_text().splitlines()][-1]
    assert end["event"] == "end" and end["skipped_non_finite"] == 2
    state = ckpt.load_state(resumed.work_dir / "checkpoints" / "iter_0000006" / "state.pt")
    assert state["callbacks"]["Stateful"] == {"ends": 6} and state["callbacks"]["Evaluation"]["best"] == ev.best
    assert "best" not in state and "history" not in state  # the callbacks' own, not the trainer's


def test_a_checkpoint_of_the_old_layout_resumes(tiny_config):
    """A checkpoint written before the callbacks kept their own state has the best score and the history at the
    top level of state.pt (and no "callbacks"): resuming it gives them to the Evaluation callback."""
    cfg, first = _checkpointed_run(tiny_config, "old")
    parts = first.parts
    best = {"mIoU": 0.75, "iteration": 4}
    history = [{"iteration": 2, "mIoU": 0.5, "aAcc": 0.8}, {"iteration": 4, "mIoU": 0.75, "aAcc": 0.85}]
    old_state = {"optimizer": parts.optimizer.state_dict(), "scaler": parts.scaler.state_dict(), "iteration": 6,
                 "best": best, "history": history, "rng": ckpt.capture_rng()}
    ckpt.save_training_checkpoint(first.work_dir, 6, parts.model.state_dict(), old_state, parts.metadata)

    resumed = Trainer(cfg, device="cpu", resume=True)
    report = resumed.train()
    ev = resumed.callback(Evaluation)
    assert report["best"] == ev.best == best
    assert ev.history[:2] == history and ev.history[2]["iteration"] == 6
    state = ckpt.load_state(resumed.work_dir / "checkpoints" / "iter_0000006" / "state.pt")
    assert state["callbacks"]["Evaluation"] == {"best": best, "history": ev.history}


class HandMade(torch.nn.Module):
    """A segmentation model outside rrseg's registry: SegOutput in training, logits in evaluation."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU())
        self.classifier = torch.nn.Conv2d(8, num_classes, 1)

    def forward(self, images):
        features = self.body(images)
        logits = self.classifier(features)
        return SegOutput(logits, features) if self.training else logits


def test_ready_made_components_train_a_model_outside_the_registry(tiny_config):
    """``Trainer(cfg, components=...)``: parts built by hand around an unregistered nn.Module train through the
    trainer (2 iterations: log, checkpoint, export), the config giving only the run's settings."""
    from functools import partial

    from rrseg.engine.components import Components, build_datasets
    from rrseg.engine.evaluator import Evaluator
    from rrseg.engine.optim import set_lr
    from rrseg.rebalance import ClassCounts, Criterion, CrossEntropyLoss

    cfg = load_config(tiny_config("own", schedule={"iters": 2, "warmup_iters": 0}, eval={"interval": 0,
                                                                                       "batch_size": 4},
                                  train={"checkpoint_interval": 2, "progress": False, "tensorboard": False}))
    train_ds, val_ds, train_tf, _ = build_datasets(cfg)
    counts = ClassCounts.load(cfg.loss.counts, 6)
    torch.manual_seed(0)
    model = HandMade(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    parts = Components(train_ds=train_ds, val_ds=val_ds, num_classes=6, evaluator=Evaluator(cfg.eval, 6, counts=counts),
                       model=model, criterion=Criterion([CrossEntropyLoss()]), optimizer=optimizer,
                       set_lr=partial(set_lr, optimizer, base_lr=0.1, cfg=cfg.schedule), train_transforms=train_tf,
                       counts=counts)
    trainer = Trainer(cfg, device="cpu", components=parts)
    report = trainer.train()
    assert trainer.parts is parts and report["iteration"] == 2 and len(report["per_class"]) == 6
    records = [json.loads(line) for line in (trainer.work_dir / "log.jsonl").read_text().splitlines()]
    assert records[0]["model"] == "HandMade"
    assert [r["iteration"] for r in records if r["event"] == "train"] == [1, 2]
    assert all(np.isfinite(r["loss_ce"]) for r in records if r["event"] == "train")
    assert not torch.equal(before["classifier.weight"], model.classifier.weight)
    assert not torch.equal(before["body.1.running_mean"], model.body[1].running_mean)  # trained, BN included
    exported, _ = ckpt.read_weights(trainer.work_dir / "inference.safetensors")
    assert exported.keys() == model.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in model.state_dict().items())
    assert ckpt.load_state(ckpt.latest_checkpoint(trainer.work_dir) / "state.pt")["iteration"] == 2


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

    from rrseg.engine.callbacks import JsonlLog

    log, policy = JsonlLog(), NonFinitePolicy()
    trainer = SimpleNamespace(work_dir=tmp_path, iteration=4,
                              cfg=SimpleNamespace(train=SimpleNamespace(nan_policy="skip")))
    trainer.log = lambda record: log.on_record(trainer, {"time": 1.0, **record})
    policy.on_non_finite(trainer, {"loss_ce": float("nan"), "loss_aux": 0.5, "loss_rr": float("inf")},
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
    assert policy.skipped == 1


def test_curves_plot_a_logged_null_as_a_gap(tmp_path):
    """The training curves read log.jsonl back: a null (a non-finite value) is a gap, not an error."""
    from rrseg.tools.experiment import plot_curves

    records = [{"event": "start", "iteration": 0}, {"event": "train", "iteration": 1, "loss_ce": 2.0},
               {"event": "train", "iteration": 2, "loss_ce": None, "nonfinite": ["loss_ce"]},
               {"event": "train", "iteration": 3, "loss_ce": 1.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_curves({"run": tmp_path}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
