"""benchmarks/gpu.sh is run once, on a GPU machine: make sure its script runs (here on CPU, tiny)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_sh_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")], check=True)


def test_gpu_models_script_runs_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "gpu_models.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_models.py"), "--device", "cpu", "--tiny"]
    cmd += ["--models", "upernet_swin_tiny", "--size", "64", "--batch", "2", "--amp", "bf16"]
    cmd += ["--warmup", "1", "--steps", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "**Headline (upernet_swin_tiny):**" in text
    assert "| upernet_swin_tiny | 0.8 |" in text and text == proc.stdout.strip() + "\n"
