"""rrseg.allocator: glibc's mmap / trim thresholds, so that a step's large tensors reuse heap memory."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from rrseg import allocator

from .conftest import cli_env

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Rounds of 20 live 4 MiB blocks (malloc, written, freed: no library's own caching in between), the minor page
# faults of rounds 3 and 4. Untuned glibc serves them from the heap once such a block was freed (its mmap
# threshold rises to 4 MiB), but trims the heap's free top above twice that after each round, so every round
# faults its 80 MiB in again (40896 faults, every run); tuned: none. (Torch tensors of 1-20 MiB gave the same
# picture, but untuned glibc's adaptation made their counts vary from run to run.)
ROUNDS = """
import ctypes, resource
from rrseg.allocator import tune_malloc
tuned = tune_malloc()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 4 * 1024 * 1024
def one_round():
    blocks = [libc.malloc(size) for _ in range(20)]
    for p in blocks:
        ctypes.memset(p, 1, size)
    for p in blocks:
        libc.free(p)
one_round()
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
one_round()
one_round()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _rounds(**env: str) -> tuple[bool, int]:
    run = subprocess.run([sys.executable, "-c", ROUNDS], env={**cli_env(), **env}, capture_output=True, text=True,
                         check=True)
    tuned, faults = run.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_malloc_reuses_the_heap_instead_of_faulting_pages_in_again():
    tuned, few = _rounds()
    untuned, many = _rounds(RRSEG_TUNE_MALLOC="0")
    assert tuned and not untuned
    assert many > 20_000 and few < many / 5, (few, many)  # measured: 0 against 40896, every run


@pytest.mark.skipif(not GLIBC, reason="glibc only")
@pytest.mark.parametrize("env", [{"RRSEG_TUNE_MALLOC": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_environment_s_own_malloc_settings_are_left_alone(env):
    script = "from rrseg.allocator import tune_malloc; print(tune_malloc())"
    run = subprocess.run([sys.executable, "-c", script], env={**cli_env(), **env}, capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "False"


def test_tune_malloc_runs_once_and_says_whether_it_did(monkeypatch):
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("RRSEG_TUNE_MALLOC", "0")
    assert allocator.tune_malloc() is False
    monkeypatch.delenv("RRSEG_TUNE_MALLOC")
    assert allocator.tune_malloc() is False  # the outcome is kept: once per process
    monkeypatch.setattr(allocator, "_done", None)
    assert allocator.tune_malloc() is GLIBC
    assert os.environ.get("RRSEG_TUNE_MALLOC") is None


def test_the_rrseg_command_tunes_malloc_first(monkeypatch, capsys):
    from rrseg.cli import main as cli

    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append("tuned"))
    monkeypatch.setattr(cli, "build_parser", lambda: calls.append("parser") or pytest.fail("stop here"))
    with pytest.raises(pytest.fail.Exception):
        cli.main(["--version"])
    assert calls == ["tuned", "parser"]
