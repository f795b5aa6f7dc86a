"""The examples/ scripts run end to end (as a user runs them, in a subprocess) on a small synthetic set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rrseg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SRC = Path(rrseg.__file__).resolve().parents[1]
SMALL = ["--steps", "3", "--batch-size", "4", "--size", "32", "--threads", "1"]
DATA = {"num_classes": 6, "num_train": 24, "num_val": 8, "size": 32}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from rrseg.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    make_synthetic(root, seed=0, **DATA)
    return root


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def last_rr_loss(stdout: str) -> float:
    values = re.findall(r"(?:loss_rr|\brr) (\d+\.\d+)", stdout)
    assert values, stdout
    return float(values[-1])


def val_miou(stdout: str) -> float:
    match = re.search(r"val mIoU (\d+\.\d+) over (\d+) classes", stdout)
    assert match, stdout
    return float(match.group(1))


@pytest.mark.slow  # the example in a subprocess: makes its data, trains 3 steps
def test_plain_pytorch_example_makes_its_data_and_trains(tmp_path):
    out = tmp_path / "run"
    stdout = run_example(
        "plain_pytorch_rr.py", "--out", str(out), "--num-classes", "6", "--num-train", "24", "--num-val", "8",
        *SMALL, cwd=tmp_path,
    )
    assert (out / "data" / "counts.json").is_file()  # made the synthetic data itself
    # what it says about the data it made: the statistics, none of the generator's development checks (a set
    # this small misses some of them by construction, which is nothing a user did wrong)
    assert "Spearman(image counts, pixel counts)" in stdout
    assert "NOT MET" not in stdout and "[ok]" not in stdout
    assert last_rr_loss(stdout) > 0
    assert 0 <= val_miou(stdout) <= 100
    assert "step    3" in stdout


@pytest.mark.slow
def test_smp_example_trains_saves_and_reloads(tmp_path, data_root):
    import segmentation_models_pytorch as smp
    from safetensors.torch import load_file

    out = tmp_path / "run"
    stdout = run_example(
        "smp_rr.py", "--data", str(data_root), "--out", str(out), "--encoder", "resnet18", "--trainable",
        "--per-image", *SMALL, cwd=tmp_path,
    )
    assert last_rr_loss(stdout) > 0
    assert "identical mIoU" in stdout
    state = load_file(out / "model.safetensors")
    plain = smp.create_model("FPN", encoder_name="resnet18", encoder_weights=None, classes=DATA["num_classes"])
    plain.load_state_dict(state)  # strict: exactly the plain model's keys
    rr_state = load_file(out / "rr.safetensors")
    assert "reduce.0.weight" in rr_state and "log_prior" in rr_state


@pytest.mark.slow
def test_hf_example_custom_loop(tmp_path, data_root):
    out = tmp_path / "run"
    stdout = run_example("hf_rr.py", "--data", str(data_root), "--out", str(out), *SMALL, cwd=tmp_path)
    assert last_rr_loss(stdout) > 0
    assert "identical mIoU" in stdout and "custom loop" in stdout
    assert (out / "model" / "config.json").is_file() and (out / "model" / "region_rebalance.safetensors").is_file()


@pytest.mark.slow
def test_hf_example_with_trainer(tmp_path, data_root):
    out = tmp_path / "run"
    stdout = run_example(
        "hf_rr.py", "--model", "upernet", "--trainer", "--data", str(data_root), "--out", str(out), *SMALL,
        cwd=tmp_path,
    )
    assert "HF Trainer" in stdout and "identical mIoU" in stdout
    logged = re.findall(r"'loss_rr': '(\d+\.\d+)'", stdout)  # RRTrainer logs RR next to the loss
    assert logged and float(logged[-1]) > 0, stdout


@pytest.mark.slow
def test_hf_example_mask2former(tmp_path, data_root):
    out = tmp_path / "run"
    stdout = run_example("hf_rr.py", "--model", "mask2former", "--data", str(data_root), "--out", str(out), *SMALL,
                         cwd=tmp_path)
    assert last_rr_loss(stdout) > 0
    assert "(mask2former, custom loop, 3 steps)" in stdout and "identical mIoU" in stdout
    assert (out / "model" / "config.json").is_file() and (out / "model" / "region_rebalance.safetensors").is_file()
