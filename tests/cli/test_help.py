"""`rrseg --help` and every command's --help answer without importing torch (what made them take seconds):
the command modules import their heavy parts when they run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rrseg.cli.main import COMMANDS

CHECK = """
import sys
from rrseg.cli.main import main
try:
    main({argv!r})
except SystemExit as e:
    assert e.code == 0, e.code
heavy = sorted(m for m in ("torch", "torchvision", "timm", "numpy", "matplotlib") if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


@pytest.mark.slow  # an interpreter per command
@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name, _, _ in COMMANDS],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_module(argv):
    out = subprocess.run([sys.executable, "-c", CHECK.format(argv=argv)], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "heavy: ", out[-500:]
    assert "usage: rrseg" in out
