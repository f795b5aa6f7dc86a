"""benchmarks/allocator_cpu.py end to end at its smallest: a process per setting, each saying which malloc it ran."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import cli_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_allocator_benchmark_runs_each_setting_in_its_own_process(tmp_path):
    out = tmp_path / "allocator.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "allocator_cpu.py"), "--reps", "1", "--steps", "1",
                    "--samples", "1", "--json", str(out)], env=cli_env(), check=True, capture_output=True, text=True,
                   cwd=ROOT / "benchmarks")
    result = json.loads(out.read_text())
    for case in ("step_ce", "step_rr", "transforms_ade"):
        assert result[case]["default"]["median_ms"] > 0 and result[case]["tuned"]["median_ms"] > 0
        assert result[case]["ratio_tuned_to_default"] > 0
    assert result["step_rr"]["tuned"]["faults_median"] >= 0
