"""`rrseg init DATA_DIR`: a starter config sized from the data (splits, classes, ignore index, image sizes,
model by data size, schedule intervals by iterations, RR on), that loads and trains as it stands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrseg.cli.main import main
from rrseg.engine.config import load_config


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from rrseg.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("init") / "syn"
    make_synthetic(root, num_classes=6, num_train=24, num_val=8, size=[48, 32], seed=0, workers=1)
    return root


def own_layout(root: Path, n: int = 6, size=(600, 700)) -> Path:
    """images/ + masks/, no split folders, no dataset.yaml; labels 0..4 and 255."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.jpg")
        label = rng.integers(0, 5, size, dtype=np.uint8)
        label[:10] = 255
        Image.fromarray(label).save(root / "masks" / f"im{i}.png")
    return root


def test_starter_for_a_small_set_of_small_images(synthetic, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", str(synthetic)]) == 0
    assert "wrote syn.yaml; train with: rrseg train syn.yaml" in capsys.readouterr().out
    text = (tmp_path / "syn.yaml").read_text()
    assert "#   6 classes (dataset.yaml), ignore index 255; images per split: train: 24, val: 8" in text
    cfg = load_config(tmp_path / "syn.yaml")
    assert (cfg.model.name, cfg.model.pretrained) == ("deeplabv3plus_small", "rrseg:demo_small_backbone")
    assert (cfg.data.train.split, cfg.data.val.split) == ("train", "val")
    assert cfg.data.train.root == str(synthetic) and Path(cfg.data.train.root).is_absolute()
    assert (cfg.data.scale, cfg.data.crop_size, cfg.data.batch_size) == ([48, 32], [32, 32], 16)
    assert (cfg.schedule.iters, cfg.schedule.warmup_iters) == (1000, 50)
    assert (cfg.eval.interval, cfg.train.log_interval, cfg.train.checkpoint_interval) == (200, 10, 200)
    assert cfg.loss.region.type == "rr" and cfg.loss.counts is None
    assert cfg.work_dir == "work_dirs/syn"
    # the intervals follow --iters
    assert main(["init", str(synthetic), "-o", "short.yaml", "--iters", "60"]) == 0
    short = load_config(tmp_path / "short.yaml")
    assert (short.schedule.iters, short.schedule.warmup_iters, short.eval.interval, short.train.log_interval) == (
        60, 3, 12, 1)
    from rrseg.engine.trainer import settings_warnings

    assert settings_warnings(short, [(32, 48)] * 4) == []  # the starter does not trip the trainer's warnings


def test_starter_for_an_own_layout_without_split_or_dataset_yaml(tmp_path, monkeypatch):
    root = own_layout(tmp_path / "my_photos")
    monkeypatch.chdir(tmp_path)
    assert main(["init", str(root), "--name", "photos"]) == 0
    text = (tmp_path / "photos.yaml").read_text()
    assert "#   5 classes (labels), ignore index 255" in text
    assert "no split in the data: the automatic split, 0.1 of the images for validation" in text
    cfg = load_config(tmp_path / "photos.yaml")
    assert cfg.model.name == "upernet_swin_t" and cfg.model.pretrained.startswith("timm:swin_tiny")
    assert (cfg.data.train.split, cfg.data.val.split) == ("train", "val")
    assert cfg.data.train.options == {"val_fraction": 0.1}
    assert (cfg.data.scale, cfg.data.crop_size) == ([597, 512], [512, 512])  # 700x600 -> short side 512
    assert (cfg.schedule.iters, cfg.schedule.warmup_iters, cfg.eval.interval) == (40000, 1500, 8000)


def test_an_existing_file_is_kept_and_bad_input_is_one_line(synthetic, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "syn.yaml").write_text("mine\n")
    assert main(["init", str(synthetic)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rrseg init: error: syn.yaml exists; --force replaces it, -o writes another file"]
    assert (tmp_path / "syn.yaml").read_text() == "mine\n"
    assert main(["init", str(synthetic), "--force"]) == 0
    assert "deeplabv3plus_small" in (tmp_path / "syn.yaml").read_text()
    assert main(["init", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rrseg init: error:") and "nowhere" in err[0]
    assert main(["init", str(synthetic), "--iters", "0", "-o", "x.yaml"]) == 2
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.slow  # trains
def test_the_starter_config_trains_as_it_stands(synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", str(synthetic), "--iters", "2"]) == 0
    assert main(["-q", "train", "syn.yaml", "--set", "data.workers=0", "train.tensorboard=false"]) == 0
    assert (tmp_path / "work_dirs" / "syn" / "report.json").is_file()
    assert (tmp_path / "work_dirs" / "syn" / "counts.json").is_file()
