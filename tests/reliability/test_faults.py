"""Fault injection on real runs of ``rrseg train``: kill -9 at random iterations, a checkpoint write that
fails half-way (a file size limit), and non-finite losses from real config values.

``RRSEG_FAULT_SEED`` fixes the kill iterations (otherwise drawn at random and shown on failure);
``RRSEG_FAULT_REPORT=FILE`` appends what the kill test measured to FILE (JSON lines; docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rrseg.engine import checkpoint as ckpt
from rrseg.tools.experiment import read_log
from tests.engine.test_trainer import same_weights

TOTAL, INTERVAL, KILLS = 16, 3, 5
SECTIONS = {
    "schedule": {"iters": TOTAL, "warmup_iters": 2},
    "loss": {"region": {"type": "rr"}},
    "eval": {"interval": 5, "batch_size": 4},
    "train": {"log_interval": 1, "checkpoint_interval": INTERVAL, "keep_last": 2, "progress": False,
              "tensorboard": False},
}


def work_dir(cfg: Path) -> Path:
    return Path(yaml.safe_load(cfg.read_text())["work_dir"])


def start(cfg: Path, env: dict, *extra: str, **kwargs) -> subprocess.Popen:
    # on the CPU also where a GPU is present: bit-identical resume is a CPU guarantee
    return subprocess.Popen([sys.executable, "-m", "rrseg", "train", str(cfg), "--device", "cpu", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def runs(records: list[dict]) -> list[list[dict]]:
    """The log split into runs, each starting with its "start" record."""
    out: list[list[dict]] = []
    for r in records:
        if r.get("event") == "start":
            out.append([])
        if out:
            out[-1].append(r)
    return out


def last_iteration(run: list[dict]) -> int:
    return max((r["iteration"] for r in run if r.get("event") == "train"), default=run[0]["iteration"])


def kill_when_logged(proc: subprocess.Popen, work: Path, run_index: int, target: int, delay: float,
                     timeout: float = 240) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after its log (run number ``run_index``) shows an iteration >=
    ``target``; the delay puts the kill anywhere in an iteration (a step, an evaluation, a checkpoint write)."""

    def ended() -> AssertionError:
        return AssertionError(f"run {run_index} ended ({proc.returncode}) before its kill after iteration {target}: "
                              f"{proc.stderr.read()[-2000:]}")

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ended()
        if (work / "log.jsonl").is_file():
            split = runs(read_log(work))
            if len(split) > run_index and last_iteration(split[run_index]) >= target:
                time.sleep(delay)
                if proc.poll() is not None:
                    raise ended()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"run {run_index} did not reach iteration {target} in {timeout} s")


def state_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a state file, by its place in the nesting (the optimizer state, the RNG states)."""
    flat: dict[str, torch.Tensor] = {}

    def walk(obj, prefix):
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}[{i}]")

    walk(ckpt.load_state(path), "")
    return flat


@pytest.mark.slow
def test_kill_9_five_times_then_resume_ends_bit_identical(tiny_config, env):
    seed = int(os.environ.get("RRSEG_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(1, TOTAL - 3), KILLS))
    delays = [round(rng.uniform(0.0, 0.15), 3) for _ in targets]  # about one iteration (0.05-0.15 s here)
    about = f"seed {seed}, kill targets {targets}, delays {delays}"
    straight_cfg, cut_cfg = tiny_config("straight", **SECTIONS), tiny_config("cut", **SECTIONS)
    straight, cut = work_dir(straight_cfg), work_dir(cut_cfg)
    reference = start(straight_cfg, env)  # the uninterrupted run, on the other core meanwhile

    for i, (target, delay) in enumerate(zip(targets, delays)):
        kill_when_logged(start(cut_cfg, env, *(["--resume"] if i else [])), cut, i, target, delay)
        latest = ckpt.latest_checkpoint(cut)  # whatever the moment of the kill, the latest checkpoint loads
        if latest is not None:
            ckpt.read_weights(latest / "model.safetensors")
            assert ckpt.load_state(latest / "state.pt")["iteration"] == int(latest.name.split("_")[1])
    rc, out, err = finish(start(cut_cfg, env, "--resume"))
    assert rc == 0, f"{about}\n{out[-2000:]}\n{err[-3000:]}"
    rc, out, err = finish(reference)
    assert rc == 0, err[-3000:]

    split = runs(read_log(cut))
    assert len(split) == KILLS + 1, about
    killed_at = [last_iteration(run) for run in split[:-1]]
    resumed_at = [run[0]["iteration"] for run in split[1:]]
    lost = [k - r for k, r in zip(killed_at, resumed_at)]
    summary = {"seed": seed, "targets": targets, "delays_s": delays, "killed_after": killed_at,
               "resumed_from": resumed_at, "iterations_lost": lost, "checkpoint_interval": INTERVAL,
               "iterations": TOTAL}
    print(f"\nkill -9 runs: {json.dumps(summary)}")
    if os.environ.get("RRSEG_FAULT_REPORT"):
        with open(os.environ["RRSEG_FAULT_REPORT"], "a") as f:
            f.write(json.dumps(summary) + "\n")
    assert all(0 <= n <= INTERVAL for n in lost), summary

    def checkpoints_up_to(k: int) -> list[int]:  # every INTERVAL iterations, and one at the end (TOTAL: 16)
        return [0, *range(INTERVAL, k + 1, INTERVAL), *([TOTAL] if k == TOTAL and TOTAL % INTERVAL else [])]

    # resumed from the last checkpoint at or before the kill, or the one before it (killed while writing the last)
    assert all(r in checkpoints_up_to(k)[-2:] for k, r in zip(killed_at, resumed_at)), summary
    assert [r["event"] for r in split[-1]][-1] == "end" and last_iteration(split[-1]) == TOTAL

    final = f"checkpoints/iter_{TOTAL:07d}"
    for name in (f"{final}/model.safetensors", "inference.safetensors", "best.safetensors"):
        assert same_weights(straight / name, cut / name), f"{name} differs ({about})"
    a, b = state_tensors(straight / final / "state.pt"), state_tensors(cut / final / "state.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), about  # optimizer and RNG states
    a, b = json.loads((straight / "report.json").read_text()), json.loads((cut / "report.json").read_text())
    assert a["overall"] == b["overall"]
    assert not [p for p in cut.rglob(".*")], "temporary files left behind"


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_checkpoint_write_failing_half_way_keeps_the_previous_checkpoint(tiny_config, env, call_rrseg):
    cfg = tiny_config("run", schedule={"iters": 3, "warmup_iters": 0}, eval={"interval": 0, "batch_size": 4},
                      train={"checkpoint_interval": 3, "progress": False, "tensorboard": False})
    work = work_dir(cfg)
    assert call_rrseg("train", cfg).returncode == 0  # iterations 1-3 and their checkpoint
    size = (work / "checkpoints" / "iter_0000003" / "model.safetensors").stat().st_size
    assert size > 1_000_000
    # Continue to 9 iterations with files limited to 256 KiB: the log and config still fit, the checkpoint
    # of iteration 6 does not, and its write fails after the first 256 KiB (EFBIG).
    proc = start(cfg, env, "--resume", "--set", "schedule.iters=9", preexec_fn=_file_size_limit(256 * 1024))
    rc, _, err = finish(proc)
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines() == [
        f"rrseg train: error: {work / 'checkpoints'}: cannot write the checkpoint of iteration 6 (File too large); "
        f"the previous checkpoint {work / 'checkpoints' / 'iter_0000003'} is intact"], err
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["iter_0000003", "latest"]
    assert not [p for p in work.rglob(".*")], "temporary files left behind"
    latest = ckpt.latest_checkpoint(work)
    assert latest.name == "iter_0000003" and ckpt.load_state(latest / "state.pt")["iteration"] == 3
    ckpt.read_weights(latest / "model.safetensors")
    # and the run goes on from there once the disk has room
    proc = call_rrseg("train", cfg, "--resume", "--set", "schedule.iters=9")
    assert proc.returncode == 0 and "at iteration 3" in proc.stdout, proc.stderr
    assert (work / "checkpoints" / "iter_0000009" / "model.safetensors").is_file()


NAN_SECTIONS = {"optim": {"type": "sgd", "lr": 1e30}, "schedule": {"iters": 5, "warmup_iters": 0},
                "eval": {"interval": 0, "batch_size": 4}}


def _train_records(work: Path, event: str) -> list[dict]:
    return [r for r in read_log(work) if r.get("event") == event]


@pytest.mark.slow
def test_huge_learning_rate_stop_and_skip(tiny_config, env):
    """lr 1e30: iteration 1 is fine, its update makes every later loss NaN. ``stop`` saves iteration 1 and
    exits 2; ``skip`` skips iterations 2-5 and ends with exactly the weights of iteration 1 (the skipped
    steps leave no trace, BatchNorm statistics included)."""
    stop_cfg = tiny_config("stop", **NAN_SECTIONS, train={"nan_policy": "stop", "checkpoint_interval": 2,
                                                          "progress": False, "tensorboard": False})
    skip_cfg = tiny_config("skip", **NAN_SECTIONS, train={"nan_policy": "skip", "checkpoint_interval": 2,
                                                          "progress": False, "tensorboard": False})
    stop, skip = start(stop_cfg, env), start(skip_cfg, env)
    (rc_stop, _, err_stop), (rc_skip, _, err_skip) = finish(stop), finish(skip)
    stop_work, skip_work = work_dir(stop_cfg), work_dir(skip_cfg)

    saved = stop_work / "checkpoints" / "iter_0000001"
    assert rc_stop == 2 and "Traceback" not in err_stop
    assert err_stop.strip().splitlines() == [
        f"rrseg train: error: non-finite loss in iteration 2 (loss_ce=nan, loss_aux=nan); the last good state "
        f"(iteration 1) is saved in {saved}; continue with --resume after a fix, or set train.nan_policy=skip to "
        f"skip such steps"], err_stop
    assert [r["iteration"] for r in _train_records(stop_work, "train")] == [1]
    assert ckpt.latest_checkpoint(stop_work) == saved
    weights, _ = ckpt.read_weights(saved / "model.safetensors")
    assert all(torch.isfinite(t.double()).all() for t in weights.values())

    assert rc_skip == 0, err_skip[-3000:]
    assert [r["iteration"] for r in _train_records(skip_work, "train")] == [1]
    assert [r["iteration"] for r in _train_records(skip_work, "skip_non_finite")] == [2, 3, 4, 5]
    assert _train_records(skip_work, "end")[0]["skipped_non_finite"] == 4
    assert sorted(p.name for p in (skip_work / "checkpoints").glob("iter_*")) == ["iter_0000004", "iter_0000005"]
    assert same_weights(saved / "model.safetensors", skip_work / "checkpoints" / "iter_0000005" / "model.safetensors")


@pytest.mark.parametrize("weight", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_loss_weight_from_the_config(tiny_config, call_rrseg, weight):
    """``loss.pixel.loss_weight: .nan`` / ``.inf`` is refused when the config loads (its range is >= 0, finite):
    one line naming the key, exit status 2, no work dir."""
    cfg = tiny_config("run", loss={"pixel": {"loss_weight": weight}}, schedule={"iters": 3, "warmup_iters": 0},
                      eval={"interval": 0, "batch_size": 4}, train={"progress": False, "tensorboard": False})
    assert ".nan" in cfg.read_text() or ".inf" in cfg.read_text()  # a real YAML value, as a user writes it
    proc = call_rrseg("train", cfg)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"config key 'loss.pixel.loss_weight': {weight!r} is not >= 0" in lines[0]
    assert not work_dir(cfg).exists()


@pytest.mark.parametrize("weight", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_first_loss(tiny_config, call_rrseg, monkeypatch, weight):
    """The very first loss is non-finite (the pixel term's weight made NaN / inf after the config's check):
    ``stop`` keeps the initial state as checkpoint 0, and nothing is trained."""
    from rrseg.rebalance.pixel import CrossEntropyOptions

    build = CrossEntropyOptions.build

    def non_finite(self, *args, **kwargs):
        term = build(self, *args, **kwargs)
        term.loss_weight = weight
        return term

    monkeypatch.setattr(CrossEntropyOptions, "build", non_finite)
    cfg = tiny_config("run", schedule={"iters": 3, "warmup_iters": 0}, eval={"interval": 0, "batch_size": 4},
                      train={"progress": False, "tensorboard": False})
    proc = call_rrseg("train", cfg)
    work = work_dir(cfg)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "non-finite loss in iteration 1 (loss_ce=" in lines[0]
    assert f"the last good state (iteration 0) is saved in {work / 'checkpoints' / 'iter_0000000'}" in lines[0]
    assert _train_records(work, "train") == []
    assert ckpt.load_state(work / "checkpoints" / "iter_0000000" / "state.pt")["iteration"] == 0


# A training run under torchrun whose loss is NaN on rank 1 only, at the iterations in argv[2:]:
# the fault a bad sample on one GPU gives.
ONE_RANK_NAN = '''
import os, sys
from rrseg.cli.main import main
from rrseg.engine import trainer

bad, rank = {int(i) for i in sys.argv[2:]}, int(os.environ["RANK"])
setup = trainer.Trainer.setup

def poison(self):
    if self.parts is not None:  # built already (and poisoned)
        return self.parts
    parts = setup(self)
    forward = parts.criterion.forward

    def poisoned(out, labels):
        terms = forward(out, labels)
        if rank == 1 and self.iteration + 1 in bad:
            terms = {k: v * float("nan") for k, v in terms.items()}
        return terms

    parts.criterion.forward = poisoned
    return parts

trainer.Trainer.setup = poison
threads = lambda: len(os.listdir("/proc/self/task"))  # OS threads: gloo's are C++ threads, not in threading
before = threads()
code = main(["train", sys.argv[1], "--device", "cpu"])
print(f"rank {rank}: OS threads {before} before, {threads()} after", flush=True)
sys.exit(code)
'''


@pytest.mark.parametrize("policy", ["skip", "stop"])
@pytest.mark.slow
@pytest.mark.multiprocess
def test_non_finite_loss_on_one_rank_of_two(tiny_config, env, tmp_path, policy):
    """Two gloo processes, the loss NaN on rank 1 only: both ranks make the same decision (skip the step, or
    stop with the last good state saved) instead of rank 0 waiting in the gradient all-reduce until the
    process-group timeout (30 min; the test allows 4)."""
    script = tmp_path / "one_rank_nan.py"
    script.write_text(ONE_RANK_NAN)
    cfg = tiny_config(policy, data={"batch_size": 2}, optim={"type": "sgd", "lr": 0.01},
                      schedule={"iters": 4, "warmup_iters": 0}, eval={"interval": 0, "batch_size": 4},
                      train={"nan_policy": policy, "checkpoint_interval": 100, "progress": False,
                             "tensorboard": False})
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                            "--standalone", str(script), str(cfg), "2", "3"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = run.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # torchrun and both ranks
        run.communicate()
        pytest.fail("the ranks hang: one skipped or stopped while the other waits in a collective")
    proc = subprocess.CompletedProcess(run.args, run.returncode, out, err)
    work = work_dir(cfg)
    if policy == "skip":
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [r["iteration"] for r in _train_records(work, "skip_non_finite")] == [2, 3]
        end = _train_records(work, "end")[0]
        assert end["skipped_non_finite"] == 2
        assert len(end["param_sha256"]) == 2 and end["param_sha256"][0] == end["param_sha256"][1]
        # The poisoned criterion's closure holds its trainer in a reference cycle, so the gloo group (through
        # DDP) outlives destroy_process_group unless rrseg collects it: its worker threads then run into
        # interpreter exit, where one that frees a collective's tensors aborts the rank (SIGABRT, 1 run in ~25).
        counts = sorted(re.findall(r"rank (\d): OS threads (\d+) before, (\d+) after", proc.stdout))
        assert [c[0] for c in counts] == ["0", "1"] and all(c[1] == c[2] for c in counts), proc.stdout[-2000:]
    else:
        assert proc.returncode != 0, proc.stderr[-3000:]
        assert "src/rrseg/" not in proc.stderr, proc.stderr[-3000:]  # no traceback of ours (torchrun prints its own)
        # Each rank prints its own line; torchrun stops the other rank as soon as one exits, so one line or
        # both may reach stderr (both processes share it, so the lines may also run together).
        saved = work / "checkpoints" / "iter_0000001"
        rank0 = ("rrseg train: error: non-finite loss in iteration 2 (on another rank; rank 0: loss_ce=",
                 f"); the last good state (iteration 1) is saved in {saved}; continue with --resume")
        rank1 = ("rrseg train: error: non-finite loss in iteration 2 (rank 1: loss_ce=nan, loss_aux=nan); the last "
                 "good state (iteration 1) is saved by rank 0; continue with --resume")
        errors = re.findall(r"rrseg train: error: .{60}", proc.stderr)
        assert errors and all("non-finite loss in iteration 2 (" in e for e in errors), proc.stderr[-3000:]
        assert rank1 in proc.stderr or all(part in proc.stderr for part in rank0), proc.stderr[-3000:]
        assert ckpt.latest_checkpoint(work) == work / "checkpoints" / "iter_0000001"
