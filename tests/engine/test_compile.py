"""``train.compile``: the training forward pass and loss under torch.compile (inductor, on the CPU here) train as the
eager run does, within a stated tolerance, and leave checkpoints, exports and resume as they are without it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rrseg.engine import checkpoint as ckpt
from rrseg.engine.components import cpp_compiler
from rrseg.engine.config import load_config
from rrseg.engine.trainer import Trainer
from rrseg.errors import RRSegError

from .conftest import PYTHON
from .test_trainer import log

ITERS = 4
# the same dropout masks (train.compile draws them from torch's generator), but inductor fuses and reorders float32
# sums (a fused kernel sums in another order than aten's), so the compiled run is not bit-identical: its per-step
# losses matched to ~1e-5 relative here (1e-4 allowed). SGD, not AdamW: AdamW's normalised step turns a 1e-7
# difference in a near-zero gradient into one of up to lr in the parameter, which would bound nothing; SGD keeps
# parameter differences at lr x gradient differences (~1e-6 seen), so a gradient that went missing shows
LOSS_RTOL = 1e-4
PARAM_ATOL = 2e-5
PARAM_RTOL = 1e-4  # BatchNorm running variances of ~3 differ by ~5e-5


def needs_compiler() -> None:
    if cpp_compiler() is None:
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on the CPU ($CXX or g++); none found")


def train(tiny_config, name: str, compile: bool, resume: bool = False) -> Path:
    cfg = tiny_config(name, loss={"region": {"type": "rr"}},  # RR: the region branch runs in the compiled loss
                      optim={"type": "sgd", "lr": 0.01, "momentum": 0.9},
                      schedule={"iters": ITERS, "warmup_iters": 1}, eval={"interval": 0, "batch_size": 4},
                      train={"compile": compile, "log_interval": 1, "checkpoint_interval": 2, "keep_last": 0,
                             "progress": False, "tensorboard": False})
    Trainer(load_config(cfg), device="cpu", resume=resume, overwrite=not resume).train()
    return Path(load_config(cfg).work_dir)


def losses(work: Path) -> list[float]:
    return [r["loss"] for r in log(work) if r["event"] == "train"]


def assert_close_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=PARAM_RTOL, atol=PARAM_ATOL, msg=lambda m, k=k: f"{k}: {m}")


def layout(work: Path) -> dict:
    """The names, shapes and dtypes of everything a run saves: the checkpoints' weights and optimizer state,
    best.safetensors and the exported inference weights."""
    out = {}
    saved = [*sorted(work.glob("checkpoints/iter_*/model.safetensors")), work / "best.safetensors",
             work / "inference.safetensors"]
    for path in saved:
        out[str(path.relative_to(work))] = {k: (v.shape, v.dtype) for k, v in load_file(str(path)).items()}
    for path in sorted(work.glob("checkpoints/iter_*/state.pt")):
        opt = ckpt.load_state(path)["optimizer"]
        out[str(path.relative_to(work))] = (
            [g["params"] for g in opt["param_groups"]],
            {i: {k: (v.shape, v.dtype) for k, v in s.items()} for i, s in opt["state"].items()})
    return out


@pytest.mark.slow  # two inductor compilations (forward, loss) of the tiny model: about a minute or two on 2 cores
def test_compiled_training_equals_eager_and_saves_the_same_layout(tiny_config):
    needs_compiler()
    torch._dynamo.reset()
    eager = train(tiny_config, "eager", compile=False)
    compiled = train(tiny_config, "compiled", compile=True)

    le, lc = losses(eager), losses(compiled)
    assert len(le) == len(lc) == ITERS
    torch.testing.assert_close(torch.tensor(lc), torch.tensor(le), rtol=LOSS_RTOL, atol=0)
    final_e = load_file(str(eager / "checkpoints" / f"iter_{ITERS:07d}" / "model.safetensors"))
    final_c = load_file(str(compiled / "checkpoints" / f"iter_{ITERS:07d}" / "model.safetensors"))
    assert_close_weights(final_c, final_e)
    half = load_file(str(eager / "checkpoints" / f"iter_{2:07d}" / "model.safetensors"))
    moved = {k: (final_e[k].float() - half[k].float()).abs().max().item() for k in final_e}
    # the tolerance is far below what training moves (RR's BatchNorm statistics update in the compiled loss)
    assert moved["rebalance.reduce.1.running_mean"] > 10 * PARAM_ATOL
    assert max(moved.values()) > 100 * PARAM_ATOL
    assert not any("_orig_mod" in k for k in final_c)
    assert layout(compiled) == layout(eager)  # checkpoints, best and export: the same names, shapes and dtypes

    # resume across the switch: the compiled run continues the eager run's checkpoint of iteration 2
    resumed = eager.with_name("resumed")
    shutil.copytree(eager, resumed)
    shutil.rmtree(resumed / "checkpoints" / f"iter_{ITERS:07d}")
    (resumed / "checkpoints" / "latest").write_text(f"iter_{2:07d}")
    for name in ("best.safetensors", "inference.safetensors", "report.json"):
        (resumed / name).unlink()
    train(tiny_config, "resumed", compile=True, resume=True)
    assert_close_weights(load_file(str(resumed / "inference.safetensors")),
                         load_file(str(eager / "inference.safetensors")))
    torch.testing.assert_close(torch.tensor(losses(resumed)[-2:]), torch.tensor(le[-2:]), rtol=LOSS_RTOL, atol=0)


def test_compile_without_a_cpp_compiler_is_one_message(tiny_config):
    import torch._inductor.config as inductor_config

    cfg = tiny_config("nocxx", train={"compile": True, "progress": False, "tensorboard": False})
    # inductor's own search ($CXX, else g++) finds none (its config's patch: restored after)
    with inductor_config.patch({"cpp.cxx": (None, "no-such-compiler-rrseg")}), \
            pytest.raises(RRSegError, match=r"^train\.compile: .*C\+\+ compiler.*train\.compile: false$"):
        Trainer(load_config(cfg), device="cpu", overwrite=True).setup()


@pytest.mark.slow
@pytest.mark.multiprocess  # torchrun, 2 gloo processes, each compiling
def test_compiled_ddp_keeps_the_ranks_in_sync_and_equals_eager_ddp(tiny_config, cli_env):
    """The compiled module inside DDP (compiled before wrapping, as PyTorch advises): the gradient all-reduce still
    runs (each rank trains on other images, so ranks that skipped it would part), and the run equals the eager
    two-process run within the tolerances above."""
    needs_compiler()
    works = {}
    for compile in (False, True):
        cfg = tiny_config(f"ddp_{compile}", data={"batch_size": 2}, optim={"type": "sgd", "lr": 0.01},
                          loss={"region": {"type": "rr"}}, schedule={"iters": ITERS, "warmup_iters": 1},
                          eval={"interval": 0, "batch_size": 4},
                          train={"compile": compile, "log_interval": 1, "progress": False, "tensorboard": False})
        proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                               "-m", "rrseg", "train", str(cfg)], env=cli_env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        works[compile] = Path(load_config(cfg).work_dir)
    end = next(r for r in log(works[True]) if r["event"] == "end")
    assert len(end["param_sha256"]) == 2 and end["param_sha256"][0] == end["param_sha256"][1]
    torch.testing.assert_close(torch.tensor(losses(works[True])), torch.tensor(losses(works[False])),
                               rtol=LOSS_RTOL, atol=0)
    assert_close_weights(load_file(str(works[True] / "inference.safetensors")),
                         load_file(str(works[False] / "inference.safetensors")))


def test_compile_for_training_leaves_the_model_plain_and_warns_about_deterministic_cpu(caplog):
    from rrseg.engine.components import compile_for_training
    from rrseg.models import build_model
    from rrseg.rebalance import Criterion, CrossEntropyLoss

    needs_compiler()
    model = build_model("deeplabv3plus_tiny", num_classes=3)
    keys = list(model.state_dict())
    criterion = Criterion([CrossEntropyLoss()])
    was = torch.are_deterministic_algorithms_enabled()
    try:
        for deterministic in (True, False):
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            caplog.clear()
            forward = compile_for_training(model, criterion, torch.device("cpu"))  # lazy: nothing compiles yet
            warned = [r for r in caplog.records if "train.deterministic" in r.getMessage()]
            assert len(warned) == int(deterministic)
    finally:
        torch.use_deterministic_algorithms(was)
    assert forward is not model and isinstance(criterion, Criterion)
    assert list(model.state_dict()) == keys  # the saved and evaluated module: no _orig_mod. prefix
    assert list(criterion.state_dict()) == list(Criterion([CrossEntropyLoss()]).state_dict())
