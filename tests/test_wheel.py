"""The built wheel works outside the repository: installed into a fresh virtual environment, its ``rrseg`` command
runs from another directory, with the package data (the demo config and the paper presets, pretrained demo
backbone, class-name lists) it needs, and the command lines the README and every command's ``--help`` show run
there as written, except those that need a real dataset, a trained run or GPUs (``NOT_RUN``: each with its reason;
the configs they name are still resolved there). Slow tier: it builds a wheel and runs the CLI a few dozen times
(about 55 s measured on a busy 2-core machine)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from rrseg.cli.main import COMMANDS
from rrseg.engine.config import preset_names

REPO = Path(__file__).resolve().parents[1]

# The documented command lines that are not run here, each with its reason: the first pattern that matches a
# command line decides (after RUN_ALWAYS); every other documented line runs as written, from a temp directory.
NOT_RUN: list[tuple[str, str]] = [
    (r"^make ", "the checkout's Makefile (it sets up .venv from the source tree)"),
    (r"^torchrun ", "several processes on GPUs, and a paper preset's dataset"),
    (r"ADEChallengeData2016|ADE20K_2021_17_01|coco_stuff164k|stuffthingmaps|cityscapes|upernet_\w+/(ade20k|coco)",
     "a real dataset (ADE20K, ADE20K-Full, COCO-Stuff, Cityscapes), absent here"),
    (r"work_dirs/|runs/demo/(ce|rr)\b|my_preds?/|my_predictions/|photos/",
     "a trained run, or the user's own images or predictions"),
    (r"my_dataset", "the user's own dataset folder (rrseg init on a folder: tests/cli/test_init.py)"),
    (r"--import my_models|my_config\.yaml",
     "the user's own module and config (tests/test_extensions.py runs docs/CONTRIBUTING.md's as written)"),
    (r"^rrseg demo\b", "the demo generates the full synthetic set and trains two models: minutes on a CPU"),
    (r"^rrseg train (configs/demo\.yaml|demo)\b",
     "the demo config's 1000 iterations: minutes on a CPU (`rrseg train demo` runs here for 2 iterations)"),
]
# Always run, although a NOT_RUN pattern matches (a preset's name in `rrseg config show`, ...).
RUN_ALWAYS = r"^rrseg (config|make-synthetic) |^rrseg check-data (data/synthetic|my_experiment\.yaml)\b"
# make-synthetic as documented, at 25 images (the full set takes ~10 s)
SMALL_SYNTHETIC = " --train 20 --val 5 --workers 1"
# the user's own config of README's `rrseg check-data my_experiment.yaml` and `rrseg config show my_experiment.yaml`
MY_EXPERIMENT = ("model: {name: deeplabv3plus_small}\n"
                 "data:\n  train: {root: data/synthetic}\n  val: {root: data/synthetic}\n")


def _run(cmd: list[str | os.PathLike], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    """Build the wheel from a copy of the sources (``pyproject.toml``, ``README.md``, ``src/``: nothing else of the
    repository can leak in, and the checkout is left untouched), install it into a fresh venv, and run ``rrseg
    --help``, every command's ``--help``, ``make-synthetic``, ``train demo`` (the packaged demo config by name),
    ``config show`` / ``list`` of presets by name, and the documented command lines (``documented_commands``,
    ``NOT_RUN``) from an unrelated directory with no ``PYTHONPATH``.

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
    presets = sorted(p.relative_to(REPO / "src").as_posix() for p in (REPO / "src/rrseg/configs").rglob("*.yaml"))
    assert len(presets) > 40 and "rrseg/configs/_base_/ade20k.yaml" in presets
    assert sorted(n for n in names if n.startswith("rrseg/configs/")) == presets  # every preset and base, once
    for packaged in ("rrseg/configs/demo.yaml", "rrseg/models/pretrained/demo_small_backbone.safetensors",
                     "rrseg/data/resources/ade20k_full_classes.txt",
                     "rrseg/rebalance/resources/ade20k_image_label_stats.txt", "rrseg/py.typed", "rrseg/cli/main.py"):
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
    out = _run([rrseg, "train", "demo", "--set", "schedule.iters=2", "schedule.warmup_iters=1",
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
    # the packaged resources, each read from the package that owns it
    resources = _run([python, "-c", "from rrseg.data.ade20k_full import ade20k_full_classes as c; "
                      "from rrseg.rebalance.counts import ClassCounts as k, released_stats_path as p; "
                      "print(len(c()), k.load('ade20k').pixel_counts.size, p('ade20k'))"], env, elsewhere).split()
    assert resources[:2] == ["847", "150"] and Path(resources[2]).resolve().is_relative_to(site.resolve())

    # -- the presets by name, the config command, and the documented command lines
    assert "usage: rrseg train" in _run([rrseg, "train", "demo", "--help"], env, elsewhere)
    _run([python, "-c", HELP_OF_EVERY_COMMAND], env, elsewhere)
    shown = yaml.safe_load(_run([rrseg, "config", "show", "demo"], env, elsewhere))
    assert shown["name"] == "demo" and shown["model"]["name"] == "deeplabv3plus_small"
    shown = yaml.safe_load(_run([rrseg, "config", "show", "upernet_swin_t/ade20k_160k_rr"], env, elsewhere))
    assert shown["name"] == "upernet_swin_t_ade20k_160k_rr" and shown["loss"]["region"]["type"] == "rr"
    assert shown["data"]["train"]["type"] == "ade20k"  # its _base_ files, found beside it in the venv
    assert _run([rrseg, "config", "list"], env, elsewhere).splitlines() == preset_names()
    _run_documented_commands(tmp_path / "docs_cwd", python, env)
    print(f"wheel test: {time.monotonic() - start:.0f} s")


HELP_OF_EVERY_COMMAND = """
from rrseg.cli.main import COMMANDS, main
for argv in [[name, "--help"] for name, _, _ in COMMANDS] + [["config", action, "--help"]
                                                            for action in ("show", "list", "reference")]:
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
    else:
        raise AssertionError(f"{argv}: no help")
"""


def _continued(lines: list[str]) -> list[str]:
    """Shell lines with their ``\\`` continuations joined and their comments removed."""
    out, current = [], ""
    for line in lines:
        line = re.sub(r"\s+#.*$|^\s*#.*$", "", line).strip()
        current = f"{current} {line}".strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current:
            out.append(current)
        current = ""
    return out


def documented_commands() -> list[str]:
    """The command lines of the README's ``bash`` blocks and of every command's ``--help`` examples, in order."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S):
        lines += _continued(block.splitlines())
    for _, module, _ in COMMANDS:
        doc = importlib.import_module(f"rrseg.cli.{module}").__doc__ or ""
        m = re.search(r"^examples?:\n((?:[ \t]+\S.*\n?)+)", doc, re.M)
        lines += _continued(m.group(1).splitlines()) if m else []
    return list(dict.fromkeys(lines))


def not_run_reason(command: str) -> str | None:
    if re.search(RUN_ALWAYS, command):
        return None
    return next((reason for pattern, reason in NOT_RUN if re.search(pattern, command)), None)


def _configs_named(command: str, presets: set[str]) -> list[str]:
    """The configs a command line of the commands that take one names (a YAML file or a preset's name), its output
    redirection left out."""
    words = command.split(" > ")[0].split()
    if "rrseg" not in words or words[words.index("rrseg") + 1:][:1] not in (["train"], ["eval"], ["check-data"],
                                                                              ["config"]):
        return []
    return [w for w in words[words.index("rrseg") + 2:] if w.endswith((".yaml", ".yml")) or w in presets]


def _run_documented_commands(cwd: Path, python: Path, env: dict[str, str]) -> None:
    """Every documented command line from ``cwd`` against the installed wheel (``bash -c``, as written;
    make-synthetic at 25 images), except NOT_RUN's, whose configs are resolved there all the same."""
    cwd.mkdir()
    (cwd / "my_experiment.yaml").write_text(MY_EXPERIMENT)
    commands = documented_commands()
    assert len(commands) > 25, commands
    run = [c for c in commands if not_run_reason(c) is None]
    run.sort(key=lambda c: not c.startswith("rrseg make-synthetic"))  # the datasets first
    skipped = {c: not_run_reason(c) for c in commands if c not in run}
    for expected in ("rrseg make-synthetic data/synthetic", "rrseg check-data data/synthetic",
                     "rrseg config show upernet_swin_t/ade20k_160k_rr", "rrseg config reference -o docs/CONFIG.md"):
        assert expected in run, (expected, run)
    for command in run:
        line = command + (SMALL_SYNTHETIC if command.startswith("rrseg make-synthetic") else "")
        proc = subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{line} (from a temp directory, installed wheel):\n{proc.stdout}\n{proc.stderr}"
    # what the documented commands wrote
    assert (cwd / "docs/CONFIG.md").read_text(encoding="utf-8") == (REPO / "docs/CONFIG.md").read_text(encoding="utf-8")
    assert yaml.safe_load((cwd / "resolved.yaml").read_text())["name"] == "my_experiment"
    # the configs every documented command names, not run ones included, resolve from here
    presets = set(preset_names())
    # (my_dataset*.yaml: what `rrseg init` writes from the user's own folder; my_config.yaml: the user's own config
    # naming their own model; neither a config of the package)
    named = sorted({c for command in commands for c in _configs_named(command, presets)
                    if "my_dataset" not in c and "my_config" not in c})
    assert "configs/upernet_swin_t/ade20k_160k_rr.yaml" in named and "upernet_swin_t/ade20k_160k_rr" in named
    out = _run([python, "-c", "import sys\nfrom rrseg.engine.config import load_config\n"
                              "for n in sys.argv[1:]: print(n, load_config(n).name)", *named], env, cwd)
    assert len(out.splitlines()) == len(named), out
    print("documented commands not run:\n" + "\n".join(f"  {c}: {r}" for c, r in skipped.items()))
