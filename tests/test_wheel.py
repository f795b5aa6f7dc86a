"""The built wheel works outside the repository: installed into a fresh virtual environment, its ``rrseg`` command
runs from another directory, with the package data (demo config, pretrained demo backbone, class-name lists) it
needs. Slow tier: it builds a wheel and runs the CLI several times (22-30 s measured on a busy 2-core machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str | os.PathLike], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    """Build the wheel from a copy of the sources (``pyproject.toml``, ``README.md``, ``src/``: nothing else of the
    repository can leak in, and the checkout is left untouched), install it into a fresh venv, and run ``rrseg
    --help``, ``make-synthetic``, ``demo --help`` and ``train`` on the packaged demo config from an unrelated
    directory with no ``PYTHONPATH``.

    Third-party dependencies: the fresh venv gets the wheel alone (``pip install --no-deps``) plus a ``.pth`` file
    naming the site-packages of the interpreter running the tests, which already holds rrseg's pinned
    dependencies (torch, torchvision, timm, ...). Installing torch and the rest into the venv from pip's cache
    would take minutes and gigabytes per run and test pip's resolver rather than the wheel. A ``.pth`` path line
    only appends that folder to ``sys.path`` (after the venv's own site-packages, and without running the ``.pth``
    files in it, such as the dev checkout's editable-install hook), so ``rrseg`` is imported from the venv: the
    test asserts it. What the shortcut leaves out, the wheel's declared requirements, is checked against its
    ``pyproject.toml`` instead.
    """
    start = time.monotonic()
    # -- build, from a copy of what the wheel is made of
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    base_env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", CUDA_VISIBLE_DEVICES="",
                    PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    _run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", dist], base_env, tmp_path)
    wheels = list(dist.glob("rrseg-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for packaged in ("rrseg/configs/demo.yaml", "rrseg/models/pretrained/demo_small_backbone.safetensors",
                     "rrseg/data/resources/ade20k_full_classes.txt",
                     "rrseg/data/resources/ade20k_image_label_stats.txt", "rrseg/py.typed", "rrseg/cli/main.py"):
        assert packaged in names, packaged
    assert not any(n.startswith(("tests/", "configs/", "benchmarks/")) for n in names)
    assert "rrseg = rrseg.cli.main:main" in entry_points
    if sys.version_info >= (3, 11):  # tomllib; the wheel's requirements are pyproject's dependencies
        import tomllib

        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        required = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines()
                    if line.startswith("Requires-Dist:")]
        assert [r for r in required if r.marker is None] == [Requirement(d) for d in project["dependencies"]]

    # -- a fresh venv with the wheel alone; the dependencies through a .pth path line
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], base_env, tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         base_env, tmp_path)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base_env,
                     tmp_path).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_rrseg_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))

    elsewhere = tmp_path / "elsewhere"  # no repository, no src/ near the working directory
    elsewhere.mkdir()
    env = dict(base_env, PATH=f"{venv / 'bin'}{os.pathsep}{base_env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    rrseg = venv / "bin" / "rrseg"
    assert rrseg.is_file()
    where = json.loads(_run([python, "-c", "import json, pathlib, rrseg, torch; print(json.dumps("
                             "[str(pathlib.Path(rrseg.__file__).resolve()), str(pathlib.Path(torch.__file__)"
                             ".resolve())]))"], env, elsewhere))
    assert Path(where[0]).is_relative_to(site.resolve()), where  # the installed wheel, not the checkout
    assert not Path(where[0]).is_relative_to(REPO)
    assert not Path(where[1]).is_relative_to(venv.resolve())  # torch: from the .pth path

    assert "Region Rebalance" in _run([rrseg, "--help"], env, elsewhere)
    assert "--iters" in _run([rrseg, "demo", "--help"], env, elsewhere)
    _run([rrseg, "make-synthetic", elsewhere / "s", "--train", 20, "--val", 5, "--workers", 1], env, elsewhere)
    assert len(list((elsewhere / "s" / "images" / "train").glob("*"))) == 20
    config = Path(_run([python, "-c", "import pathlib, rrseg; "
                        "print(pathlib.Path(rrseg.__file__).parent / 'configs' / 'demo.yaml')"], env,
                       elsewhere).strip())
    assert config.is_file() and config.is_relative_to(site.resolve())
    out = _run([rrseg, "train", config, "--set", "schedule.iters=2", "schedule.warmup_iters=1",
                f"data.train.root={elsewhere / 's'}", f"data.val.root={elsewhere / 's'}", "data.batch_size=4",
                "data.workers=0", "eval.batch_size=5", "train.tensorboard=false", "train.progress=false",
                "--work-dir", elsewhere / "run"], env, elsewhere, timeout=400)
    run = elsewhere / "run"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(r.get("iteration") == 2 for r in log), out
    # the packaged pretrained backbone was loaded from the venv (`model.pretrained: rrseg:demo_small_backbone`)
    loaded = [line for line in out.splitlines() if "demo_small_backbone.safetensors: loaded" in line]
    assert len(loaded) == 1 and Path(loaded[0].split(":")[0]).resolve().is_relative_to(site.resolve()), out
    assert (run / "inference.safetensors").is_file() and (run / "report.json").is_file()
    classes = _run([python, "-c", "from rrseg.data.classes import ade20k_full_classes as c; print(len(c()))"], env,
                   elsewhere)
    assert classes.strip() == "847"
    print(f"wheel test: {time.monotonic() - start:.0f} s")
