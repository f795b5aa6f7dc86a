"""A loss, a model, a dataset and a callback of one's own, from one file outside the package: docs/CONTRIBUTING.md's
``my_extensions.py``, taken from the doc as written and its config too, registered by rrseg's public decorators
(no file of the package changes). They train through the Python API (``Trainer(cfg, callbacks=[...])``) and, with
``--import``, through the command line: train, eval and predict, RR attached. smp's architectures by name are in
the last test. Copy these to test a file of your own."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .conftest import cli_env
from .test_docs import ROOT, fenced_blocks

CONTRIBUTING = ROOT / "docs" / "CONTRIBUTING.md"
MODULE_ANCHOR = "class LabelSmoothingOptions"  # the ```python block of my_extensions.py
CONFIG_ANCHOR = "type: smooth_ce"  # the ```yaml block of its config


def doc_block(language: str, anchor: str) -> str:
    found = [b.text for b in fenced_blocks(CONTRIBUTING, language) if anchor in b.text]
    assert len(found) == 1, f"docs/CONTRIBUTING.md: {len(found)} ```{language} blocks hold {anchor!r}"
    return found[0]


def write_pets(root: Path, n_train: int = 8, n_val: int = 4, size: int = 64) -> Path:
    """The doc's ``pets`` layout: images/{train,val}/NAME.jpg, annotations/{train,val}/NAME.png with 16x16 blocks of
    classes 0..2 and 255 (unlabelled); the red channel follows the class, so there is something to learn."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            blocks = rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(size // 16, size // 16))
            blocks.flat[:3] = [0, 1, 2]
            label = np.kron(blocks, np.ones((16, 16), dtype=np.uint8))
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image[..., 0] = np.where(label == 255, 0, label * 100).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.jpg", quality=95)
            Image.fromarray(label).save(root / "annotations" / split / f"{i:03d}.png")
    return root


def doc_config(**changes: object) -> dict:
    """The doc's config with a schedule and sizes for a test: 2 iterations of 32x32 crops on 64x64 images."""
    cfg = yaml.safe_load(doc_block("yaml", CONFIG_ANCHOR))
    cfg["data"].update(batch_size=2, workers=0, crop_size=[32, 32], scale=[64, 64], ratio_range=[1.0, 1.0])
    cfg.update(schedule={"iters": 2, "warmup_iters": 0}, eval={"interval": 0, "batch_size": 2},
               train={"log_interval": 1, "checkpoint_interval": 2, "progress": False})
    cfg.update(changes)
    return cfg


@pytest.fixture
def my_extensions(tmp_path, registries, monkeypatch):
    """The doc's my_extensions.py in a folder of its own, imported from there; its registrations are undone after
    the test (``registries``)."""
    folder = tmp_path / "ext"
    folder.mkdir()
    (folder / "my_extensions.py").write_text(doc_block("python", MODULE_ANCHOR))
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("my_extensions")
    assert Path(module.__file__).parent == folder  # not the package's
    yield module
    sys.modules.pop("my_extensions", None)


@pytest.mark.slow  # a training run
def test_own_loss_model_dataset_and_callback_train_through_the_python_api(my_extensions, tmp_path):
    from rrseg.engine.config import parse_config
    from rrseg.engine.trainer import Trainer
    from rrseg.rebalance import RegionRebalance

    root = write_pets(tmp_path / "data" / "pets")
    data = doc_config()["data"]
    for split in ("train", "val"):
        data[split]["root"] = str(root)
    cfg = parse_config(doc_config(data=data, work_dir=str(tmp_path / "run")))
    history = my_extensions.LossHistory()
    trainer = Trainer(cfg, device="cpu", callbacks=[history])
    trainer.train()

    parts = trainer.parts
    assert type(parts.train_ds) is my_extensions.PetsDataset and parts.num_classes == 3  # the dataset
    assert parts.model.name == "tiny_cnn" and isinstance(parts.model.backbone, my_extensions.TinyBackbone)  # model
    pixel, *_, region = parts.criterion.terms
    assert type(pixel) is my_extensions.LabelSmoothingLoss and pixel.smoothing == 0.1  # the loss, from the config
    assert isinstance(region, RegionRebalance) and region is parts.model.rebalance  # RR attached to the model
    assert len(history.history) == 2  # the callback, every iteration
    assert all({"loss_smooth_ce", "loss_rr"} <= set(losses) for losses in history.history)
    assert all(np.isfinite(v) and v > 0 for losses in history.history for v in losses.values())
    state = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert state["event"] == "end" and (tmp_path / "run" / "inference.safetensors").is_file()


def _cli(launcher: Path, cwd: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(launcher), *map(str, args)], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # three interpreters and a training run
def test_own_model_trains_evaluates_and_predicts_from_the_command_line_with_import(tmp_path, registries):
    """The doc's commands as written, from the folder that holds my_extensions.py and the doc's config, run as the
    ``rrseg`` console script runs (the current folder is not on sys.path until --import puts it there)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_extensions.py").write_text(doc_block("python", MODULE_ANCHOR))
    write_pets(project / "data" / "pets")  # where the doc's config reads it
    (project / "my_config.yaml").write_text(yaml.safe_dump(doc_config()))
    launcher = tmp_path / "bin" / "rrseg_script.py"  # what the console script runs: main(), sys.path[0] = bin/
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom rrseg.cli.main import main\nsys.exit(main())\n")

    r = _cli(launcher, project, "train", "--import", "my_extensions", "my_config.yaml")
    assert r.returncode == 0, r.stderr[-2000:]
    work = project / "work_dirs" / "my_config"
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    train = [rec for rec in records if rec.get("event") == "train"]
    assert len(train) == 2 and all("loss_smooth_ce" in rec and "loss_rr" in rec for rec in train)
    config = yaml.safe_load((work / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny_cnn" and config["data"]["train"]["type"] == "pets"

    r = _cli(launcher, project, "eval", "--import", "my_extensions", "my_config.yaml", "work_dirs/my_config",
             "--out", "eval_out")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((project / "eval_out" / "report.json").read_text())
    assert report["num_classes"] == 3 and 0 <= report["overall"]["mIoU"] <= 100

    image = project / "data" / "pets" / "images" / "val" / "000.jpg"
    r = _cli(launcher, project, "predict", "--import", "my_extensions", "work_dirs/my_config/inference.safetensors",
             image, "--out", "predictions")
    assert r.returncode == 0, r.stderr[-2000:]
    pred = np.asarray(Image.open(project / "predictions" / "000.png"))
    assert pred.shape == (64, 64) and set(np.unique(pred)) <= {0, 1, 2}

    # without --import the checkpoint's config names what nobody registered; the message says how to make it known
    r = _cli(launcher, project, "predict", "work_dirs/my_config/inference.safetensors", image, "--out", "p2")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert re.search(r"unknown (model 'tiny_cnn'|dataset 'pets'|pixel loss 'smooth_ce').*"
                     r"of your own: import the module that registers it first \(rrseg COMMAND --import MODULE\)$",
                     r.stderr.strip()), r.stderr


# ------------------------------------------------------------------------------------- --import, in this process
@pytest.fixture
def in_folder(tmp_path, monkeypatch, registries):
    """A current folder of the test's own; sys.path and the modules imported from it are restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("ext_"):
            del sys.modules[name]


def test_import_finds_a_module_of_the_current_folder(in_folder, call_rrseg):
    from rrseg.models import list_models

    (in_folder / "ext_models.py").write_text(doc_block("python", MODULE_ANCHOR))
    (in_folder / "cfg.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny_cnn", "options": {"width": 8}}}))
    assert "tiny_cnn" not in list_models()
    r = call_rrseg("config", "show", "--import", "ext_models", "cfg.yaml")
    assert r.returncode == 0, r.stderr
    assert "tiny_cnn" in list_models() and yaml.safe_load(r.stdout)["model"]["options"] == {"width": 8}


@pytest.mark.parametrize(("source", "message"), [
    (None, r"--import ext_missing: no module named 'ext_missing' \(looked in the current folder .* and the installed "
           r"packages\)"),
    ("raise ValueError('tiny_cnn is not ready')\n",
     r"--import ext_bad: importing it raised ValueError: tiny_cnn is not ready \(-v shows where\)"),
    ("import ext_not_installed_dependency\n",
     r"--import ext_bad: importing it failed: No module named 'ext_not_installed_dependency'"),
    ("def broken(:\n", r"--import ext_bad: importing it raised SyntaxError: .*ext_bad.py, line 1"),
])
def test_an_import_that_fails_is_one_line_naming_the_module(in_folder, call_rrseg, source, message):
    name = "ext_missing" if source is None else "ext_bad"
    if source is not None:
        (in_folder / f"{name}.py").write_text(source)
    for command in (["train", "--import", name, "demo"], ["eval", "demo", "ckpt", "--import", name],
                    ["predict", "ckpt", "image.jpg", "--out", "o", "--import", name]):
        r = call_rrseg(*command)
        assert r.returncode == 2, (command, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"rrseg {command[0]}: error: "), r.stderr
        assert re.search(message, lines[0]), lines[0]
        sys.modules.pop(name, None)


def test_import_registering_a_taken_name_says_which(in_folder, call_rrseg):
    (in_folder / "ext_twice.py").write_text(
        "from rrseg.models import register_model\n\n@register_model\ndef upernet_swin_t(num_classes):\n    pass\n")
    r = call_rrseg("config", "show", "--import", "ext_twice", "demo")
    assert r.returncode == 2
    assert r.stderr.strip() == ("rrseg config: error: --import ext_twice: importing it raised ValueError: model "
                             "'upernet_swin_t' is registered twice (-v shows where)")


# ------------------------------------------------------------------------------------------- smp by name
@pytest.mark.slow  # a training run
def test_smp_unet_by_name_trains_with_rr_evaluates_and_predicts(tiny_config, tiny_dataset, tmp_path, call_rrseg):
    from rrseg.engine.config import load_config
    from rrseg.engine.trainer import Trainer
    from rrseg.rebalance import RegionRebalance

    options = {"encoder_name": "tu-test_resnet", "decoder_channels": [16, 16, 16, 16, 16]}
    path = tiny_config("smp", model={"name": "smp_unet", "pretrained": "none", "options": options},
                       loss={"region": {"type": "rr"}}, schedule={"iters": 2, "warmup_iters": 0},
                       eval={"interval": 0, "batch_size": 4})
    trainer = Trainer(load_config(path), device="cpu")
    trainer.train()
    model = trainer.parts.model
    assert model.name == "smp_unet" and isinstance(model.rebalance, RegionRebalance)
    assert model.feature_channels == 16  # the decoder's last width: what smp's head reads, and RR pools
    model.rebalance.check_fits(16, 6)
    records = [json.loads(x) for x in (tmp_path / "smp" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records if r.get("event") == "train"] == ["train", "train"]
    assert all(r["loss_rr"] > 0 for r in records if r.get("event") == "train")

    r = call_rrseg("eval", path, tmp_path / "smp", "--out", tmp_path / "smp_eval")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "smp_eval" / "report.json").is_file()
    image = sorted((tiny_dataset / "images" / "val").glob("*.jpg"))[0]
    r = call_rrseg("predict", tmp_path / "smp" / "inference.safetensors", image, "--out", tmp_path / "smp_pred")
    assert r.returncode == 0, r.stderr
    pred = np.asarray(Image.open(tmp_path / "smp_pred" / f"{image.stem}.png"))
    assert pred.shape == np.asarray(Image.open(image)).shape[:2] and pred.max() < 6
