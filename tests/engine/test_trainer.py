"""Training end to end: real subprocess runs of `rrseg train`, exact resume after SIGTERM, DDP with gloo."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rrseg.engine import checkpoint as ckpt

from .conftest import PYTHON


def rrseg(args, env, timeout=300, check=True):
    proc = subprocess.run([PYTHON, "-m", "rrseg", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"rrseg {args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def log(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # `rrseg train` in a subprocess: 6 iterations, 2 evaluations
def test_train_rr_writes_every_output(tiny_config, cli_env):
    cfg = tiny_config("rr", loss={"region": {"type": "rr"}, "counts": None})
    proc = rrseg(["train", cfg], cli_env)
    work = Path(yaml_work_dir(cfg))
    for name in ("config.yaml", "log.jsonl", "counts.json", "best.safetensors", "inference.safetensors",
                 "report.json", "report.md", "iou_vs_count.png", "checkpoints/latest"):
        assert (work / name).is_file(), name
    assert list((work / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (work / "checkpoints").glob("iter_*")) == ["iter_0000004", "iter_0000006"]
    records = log(work)
    train = [r for r in records if r["event"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all({"loss_ce", "loss_aux", "loss_rr", "lr"} <= r.keys() for r in train)
    assert [r["iteration"] for r in records if r["event"] == "eval"] == [3, 6]
    full = load_file(str(work / "checkpoints" / "iter_0000006" / "model.safetensors"))
    inference = load_file(str(work / "inference.safetensors"))
    assert any(k.startswith("rebalance.") for k in full)
    assert not any(k.startswith("rebalance.") for k in inference)
    assert inference.keys() == {k for k in full if not k.startswith("rebalance.")}
    report = json.loads((work / "report.json").read_text())
    assert set(report["groups"]) == {"frequent", "common", "rare"} and report["iteration"] == 6
    assert "mIoU" in proc.stdout  # the final table


def yaml_work_dir(cfg: Path) -> str:
    import yaml

    return yaml.safe_load(cfg.read_text())["work_dir"]


# `rrseg train` that receives SIGTERM during optimizer step argv[1] (1-based): the signal arrives mid-run at the
# same iteration on any machine, as a user's Ctrl-C or a scheduler's SIGTERM would (the trainer finishes the step,
# saves a checkpoint and exits). The hook is torch's global optimizer-step pre-hook, outside the trainer.
SIGTERM_AT_STEP = """
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_pre_hook
from rrseg.cli.main import main

stop_at, steps = int(sys.argv[1]), 0

def hook(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == stop_at:
        os.kill(os.getpid(), signal.SIGTERM)

register_optimizer_step_pre_hook(hook)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigterm_then_resume_is_bit_identical(tiny_config, cli_env):
    """An interrupted and resumed run ends with exactly the weights of an uninterrupted one (CPU)."""
    sections = {"schedule": {"iters": 10, "warmup_iters": 2}, "eval": {"interval": 4, "batch_size": 4},
                "loss": {"region": {"type": "rr"}}, "train": {"log_interval": 1, "checkpoint_interval": 3,
                                                              "progress": False}}
    straight = tiny_config("straight", **sections)
    rrseg(["train", straight], cli_env)

    cut = tiny_config("cut", **sections)
    work = Path(yaml_work_dir(cut))
    proc = subprocess.run([PYTHON, "-c", SIGTERM_AT_STEP, "5", "train", str(cut)], env=cli_env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "SIGTERM: checkpoint saved at iteration 5 (" in proc.stdout  # a step is never cut in half
    assert ckpt.load_state(work / "checkpoints" / "iter_0000005" / "state.pt")["iteration"] == 5
    resumed = rrseg(["train", cut, "--resume"], cli_env)
    assert "resumed from" in resumed.stdout and "at iteration 5" in resumed.stdout
    a = Path(yaml_work_dir(straight)) / "checkpoints" / "iter_0000010" / "model.safetensors"
    b = work / "checkpoints" / "iter_0000010" / "model.safetensors"
    assert same_weights(a, b)
    assert same_weights(Path(yaml_work_dir(straight)) / "best.safetensors", work / "best.safetensors")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ddp_matches_one_process(tiny_config, cli_env):
    """torchrun with 2 gloo processes x batch 2 against 1 process x batch 2 x 2 accumulation steps: the same
    global batch of 4, split into the same two groups of 2 images (so BatchNorm sees the same statistics).

    Both ranks end with identical parameters (exact), and these equal the 1-process run's within float
    round-off (tolerance: 1e-4 of the largest parameter change). Dropout (the classifiers' and the
    auxiliary head's) is off: its masks are drawn per process, so it cannot match.
    """
    sections = {"schedule": {"iters": 4, "warmup_iters": 0}, "eval": {"interval": 0, "batch_size": 4},
                "model": {"options": {"dropout": 0.0, "aux_head": False}}}
    one = tiny_config("one", data={"batch_size": 2}, optim={"type": "sgd", "lr": 0.01, "accumulate": 2}, **sections)
    two = tiny_config("two", data={"batch_size": 2}, optim={"type": "sgd", "lr": 0.01}, **sections)
    # the initial weights: one update at a learning rate far below float32's resolution of the weights
    # (schedule.iters is >= 1), the same seed
    init = tiny_config("init", schedule={"iters": 1, "warmup_iters": 0}, optim={"type": "sgd", "lr": 1e-30},
                       eval={"interval": 0}, model=sections["model"])
    rrseg(["train", one], cli_env)
    rrseg(["train", init], cli_env)
    proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "rrseg", "train", str(two)], env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    end = next(r for r in log(Path(yaml_work_dir(two))) if r["event"] == "end")
    assert len(end["param_sha256"]) == 2 and end["param_sha256"][0] == end["param_sha256"][1]
    w1 = load_file(str(Path(yaml_work_dir(one)) / "inference.safetensors"))
    w2 = load_file(str(Path(yaml_work_dir(two)) / "inference.safetensors"))
    w0 = load_file(str(Path(yaml_work_dir(init)) / "inference.safetensors"))
    params = [k for k in w1 if w1[k].is_floating_point() and "running" not in k and "num_batches" not in k]
    change = max(float((w1[k] - w0[k]).abs().max()) for k in params)
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in params)
    assert change > 1e-3 and diff <= 1e-4 * change, (diff, change)
