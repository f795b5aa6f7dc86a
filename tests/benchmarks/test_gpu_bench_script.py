"""benchmarks/gpu.sh is run once, on a GPU machine: make sure its pieces run (here on CPU, tiny).

The script parses, the models part runs one tiny model, the report has every section whatever state the
parts ended in, and the branch benchmark's paths compute the same loss (the peers part's own tests:
tests/benchmarks/test_peers.py). The whole script's dry run (`bash
benchmarks/gpu.sh --dry-run`, 110-230 s on the 2-core CPU: every part at tiny sizes, the training part through
torchrun with two gloo ranks) is marked slow and multiprocess: `make test` runs it, `make test-fast` does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
TITLES = ("## Goals (issue 14)", "## 1. Model families", "## 2. RR branch alone", "## 3. `rrseg train`",
          "## 4. Host synchronisations", "## 5. rrseg against mmseg", "## Time per part")


def test_gpu_sh_parses():
    subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")], check=True)
    wheels = sorted(p.name for p in (BENCH / "wheels").glob("*.whl"))  # the GPU machine has no smp
    assert any(w.startswith("segmentation_models_pytorch-") for w in wheels), wheels
    assert any(w.startswith("timm-") for w in wheels), wheels


@pytest.mark.slow
def test_gpu_models_script_runs_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out, js = tmp_path / "gpu_models.md", tmp_path / "gpu_models.json"
    cmd = [sys.executable, str(BENCH / "gpu_models.py"), "--device", "cpu", "--tiny"]
    cmd += ["--models", "upernet_swin_tiny", "--size", "64", "--batch", "2", "--amp", "bf16", "fp16"]
    cmd += ["--warmup", "1", "--steps", "1", "--out", str(out), "--json", str(js)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "**bf16 autocast**" in text and "**fp16 autocast**" in text
    assert text.count("Headline (upernet_swin_tiny):") == 2
    assert text.count("| upernet_swin_tiny | 64 | 0.8 |") == 2 and text.strip() == proc.stdout.strip()
    rows = json.loads(js.read_text())["rows"]
    assert [r["amp"] for r in rows] == ["bf16", "fp16"]
    assert all(r["step_ms_on"] > 0 and r["step_ms_off"] > 0 and r["loss_on"] == r["loss_on"] for r in rows)


def _report(work: Path, dry_run: bool = False) -> str:
    out = work / "gpu.md"
    cmd = [sys.executable, str(BENCH / "gpu_report.py"), "assemble", "--work", str(work), "--out", str(out)]
    subprocess.run(cmd + (["--dry-run"] if dry_run else []), check=True, timeout=60)
    return out.read_text()


def test_report_has_every_section_whatever_the_parts_did(tmp_path):
    def status(part: str, rc: int, seconds: int, budget: int) -> None:
        (tmp_path / f"status_{part}.json").write_text(
            json.dumps({"part": part, "rc": rc, "seconds": seconds, "budget": budget}))

    # nothing ran yet: every section is there and says so
    text = _report(tmp_path, dry_run=True)
    assert "**DRY RUN**" in text
    for title in TITLES:
        assert text.count(title) == 1, title
    assert text.count("not run (yet)") == 5

    # models finished; the branch stopped at its budget after one case; training failed
    status("env", 0, 4, 30)
    status("models", 0, 150, 160)
    (tmp_path / "models.md").write_text("| model | ... |\n| upernet_swin_t | 159 |\n")
    (tmp_path / "models.json").write_text(json.dumps({"rows": [
        {"model": "upernet_swin_t", "amp": "bf16", "step_ms_off": 100.0, "step_ms_on": 101.5,
         "peak_gib_off": 10.0, "peak_gib_on": 10.3},
        {"model": "upernet_beit_l", "amp": "fp16", "skipped": "not started: time budget spent"},
    ]}))
    status("branch", 124, 40, 40)
    (tmp_path / "branch.md").write_text("| autocast | classes |\n| bf16 | 150 |\n")
    (tmp_path / "branch.json").write_text(json.dumps([
        {"amp": "bf16", "classes": 150, "pooling": "batch", "released": {"ms": 20.0, "peak_mib": 900.0},
         "today": {"ms": 4.0, "peak_mib": 50.0}, "new": {"ms": 1.5, "peak_mib": 60.0}}]))
    (tmp_path / "branch.log").write_text("bf16 C=150 per_image=False: 0.4 s\n")
    status("train", 1, 12, 75)
    (tmp_path / "train.log").write_text("RuntimeError: NCCL error\n")
    status("checks", 0, 5, 30)
    status("peers", 124, 70, 70)
    (tmp_path / "peers.md").write_text("| row | what |\n| UPerNet Swin-T | train |\n")
    (tmp_path / "checks.json").write_text(json.dumps([
        {"what": "ConfusionMatrix.update", "sync": "none", "check": ""},
        {"what": "RegionRebalance forward + backward", "sync": "**sync**: aten.nonzero", "check": ""},
        {"what": "today's path", "sync": "**sync**: aten.nonzero", "check": "expected to sync"}]))
    text = _report(tmp_path)
    assert "**DRY RUN**" not in text and "not run (yet)" not in text
    assert "| no host sync: ConfusionMatrix.update | none | yes |" in text
    assert "| no host sync: RegionRebalance forward + backward | **sync**: aten.nonzero | **no** |" in text
    assert "no host sync: today" not in text  # the reference row is no goal
    assert "| upernet_swin_t | 159 |" in text and "| bf16 | 150 |" in text  # the partial table is kept
    assert "**stopped at its time budget (40 s)**" in text and "bf16 C=150 per_image=False" in text
    assert "**failed** (exit 1) after 12 s" in text and "RuntimeError: NCCL error" in text
    # goals: +1.5 % time and +3.0 % memory of the headline step; new branch 1.5 ms of a 100 ms step
    assert "(+1.5 %) | yes |" in text and "(+3.0 %) | **no** |" in text
    assert "| RR branch alone, new path, / that step (RR off) | 1.50 ms = 1.50 % | yes |" in text
    assert "| branch | 40 | 40 | 124 |" in text and "| models | 160 | 150 | 0 |" in text
    assert "| UPerNet Swin-T | train |" in text and "| peers | 70 | 70 | 124 |" in text
    assert text.count("**stopped at its time budget") == 2  # the branch and the peers


@pytest.mark.parametrize("per_image", [False, True])
def test_branch_paths_compute_the_same_loss(per_image):
    # today's path (a copy of RegionRebalance before the static-shape rewrite) and the released path on the
    # same frozen layers as the module's: the same loss and feature gradient (dropout 0), so the benchmark
    # times three ways of computing one thing
    sys.path.insert(0, str(BENCH))
    try:
        from rr_branch import BranchLayers, released_rr_loss, todays_rr_loss
    finally:
        sys.path.remove(str(BENCH))
    from rrseg.rebalance import RegionRebalance

    torch.manual_seed(0)
    classes, counts = 12, [50, 40, 30, 20, 10, 9, 8, 7, 6, 5, 4, 3]
    new = RegionRebalance(16, classes, counts, dropout=0.0, per_image=per_image).train()
    layers = BranchLayers(16, classes, counts, per_image=per_image).train()
    layers.dropout.p = 0.0
    missing, _ = layers.load_state_dict(new.state_dict(), strict=False)
    assert not missing
    labels = torch.randint(0, 7, (2, 24, 20))
    labels[:, :3] = 255
    paths = {"new": lambda f: new(f, labels), "today": lambda f: todays_rr_loss(layers, f, labels)}
    if not per_image:
        paths["released"] = lambda f: released_rr_loss(layers, f, labels)
    feats = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    results = {}
    for name, fn in paths.items():
        new.double(), layers.double()
        f = feats.clone().requires_grad_(True)
        loss = fn(f)
        loss.backward()
        results[name] = (loss.detach(), f.grad)
    ref_loss, ref_grad = results["new"]
    for name, (loss, grad) in results.items():
        # F.interpolate's source coordinates are not exact in float64 (~1e-8), region_pool's are
        rtol, atol = (1e-6, 1e-6 * float(ref_grad.abs().max())) if name == "released" else (1e-9, 1e-15)
        torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=0.0, msg=lambda m, name=name: f"{name}: {m}")
        torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
    assert ref_grad.abs().max() > 1e-5  # the gradient reaches the features


@pytest.mark.slow
@pytest.mark.multiprocess
def test_gpu_sh_dry_run_end_to_end(tmp_path):
    # the whole script as it runs on the GPU machine, at tiny sizes on the CPU (gloo instead of NCCL)
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--dry-run"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "gpu.md").read_text()
    assert "**DRY RUN**" in text and (tmp_path / "gpu.log").is_file()
    for title in TITLES:
        assert text.count(title) == 1, title
    assert text.count("Status: finished in") == 5, text
    assert "| ConfusionMatrix.update (150 classes, 4 x 128^2) | none | equal to the CPU result |" in text
    assert "**bf16 autocast**" in text and "**fp16 autocast**" in text
    for model in ("upernet_swin_tiny", "deeplabv3plus_tiny", "ocrnet_tiny", "upernet_convnext_tiny",
                  "upernet_beit_tiny"):
        assert text.count(f"| {model} | 64 |") == 2, model  # bf16 and fp16, none skipped
    for case in ("| bf16 | 150 | batch |", "| bf16 | 150 | per image |", "| bf16 | 847 | batch |",
                 "| bf16 | 847 | per image |", "| fp16 | 150 | batch |"):
        assert case in text, case
    assert "| 2 | 2 | gloo | off |" in text and "| completed |" in text  # two torchrun ranks trained
    assert "RR branch alone, new path, / that step (RR off)" in text  # goals computed across parts
    # the peer rows at --quick sizes: rrseg and smp measured side by side (mmseg only in make test-mmseg's venv)
    assert "| UPerNet Swin-T | train | rrseg | 59,018,064 |" in text and "| UPerNet Swin-T | train | smp |" in text
    assert "| peers | 240 |" in text
    assert text.strip() == proc.stdout.strip()
