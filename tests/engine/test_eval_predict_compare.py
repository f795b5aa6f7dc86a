"""`rrseg eval`, `rrseg predict` and `rrseg compare` on a trained tiny run (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .test_trainer import rrseg, yaml_work_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    """Two short runs (CE, RR) of the tiny config, trained by ``rrseg train`` in this process (on the CPU, one
    thread, as the subprocesses below run; no interpreter start-up)."""
    import os

    import yaml

    from rrseg.cli.main import main

    from .conftest import SRC

    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", CUDA_VISIBLE_DEVICES="")
    root = tmp_path_factory.mktemp("runs")
    cfgs = {}
    for name, region in (("ce", "none"), ("rr", "rr")):
        cfg = {
            "model": {"name": "deeplabv3plus_tiny"},
            "data": {"train": {"type": "folder", "root": str(tiny_dataset), "split": "train"},
                     "val": {"type": "folder", "root": str(tiny_dataset), "split": "val"},
                     "batch_size": 4, "workers": 0, "crop_size": [32, 32], "scale": [48, 32]},
            "schedule": {"iters": 4, "warmup_iters": 0},
            "loss": {"region": {"type": region}, "counts": str(tiny_dataset / "counts.json")},
            "eval": {"interval": 0, "batch_size": 4},
            "train": {"progress": False, "checkpoint_interval": 100},
            "work_dir": str(root / name), "name": name,
        }
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cfgs[name] = path
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for path in cfgs.values():
            assert main(["train", str(path), "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    return cfgs, env


@pytest.mark.slow
def test_eval_matches_the_training_report_and_tta_runs(trained, tmp_path):
    cfgs, env = trained
    work = Path(yaml_work_dir(cfgs["rr"]))
    out = tmp_path / "ev"
    proc = rrseg(["eval", cfgs["rr"], work / "inference.safetensors", "--out", out], env)
    report = json.loads((out / "report.json").read_text())
    train_report = json.loads((work / "report.json").read_text())
    assert report["per_class"] == train_report["per_class"]
    # the whole report, but for what says where it comes from (one Evaluator for both)
    own = {"iteration", "best", "checkpoint", "eval"}
    assert {k: v for k, v in report.items() if k not in own} == {k: v for k, v in train_report.items() if k not in own}
    assert list(report)[:7] == list(train_report)[:7]  # the same keys in the same order
    body = (out / "report.md").read_text().split("\n", 1)[1]  # the title names the checkpoint, the iteration
    assert body == (work / "report.md").read_text().split("\n", 1)[1]
    assert (out / "iou_vs_count.png").read_bytes() == (work / "iou_vs_count.png").read_bytes()
    assert "frequent" in proc.stdout
    tta = rrseg(["eval", cfgs["rr"], work, "--tta", "--slide", "--set", "eval.crop_size=[32,32]",
                 "eval.stride=[16,16]", "--out", tmp_path / "tta"], env)
    assert json.loads((tmp_path / "tta" / "report.json").read_text())["eval"]["flip"] is True
    assert tta.returncode == 0


@pytest.mark.slow
def test_eval_refuses_a_checkpoint_of_another_model(trained, tmp_path):
    cfgs, env = trained
    proc = rrseg(["eval", cfgs["rr"], Path(yaml_work_dir(cfgs["rr"])) / "inference.safetensors",
                  "--set", "model.name=ocrnet_tiny", "--out", tmp_path / "x"], env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "another architecture" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_predict_writes_index_pngs_equal_to_the_model_argmax(trained, tmp_path, tiny_dataset):
    cfgs, env = trained
    images = sorted((tiny_dataset / "images" / "val").iterdir())[:2]
    ckpt = Path(yaml_work_dir(cfgs["ce"])) / "inference.safetensors"
    rrseg(["predict", ckpt, *images, "--out", tmp_path / "pred"], env)
    from rrseg.engine.config import EvalConfig
    from rrseg.engine.evaluator import predict_probs
    from rrseg.engine.inference import load_for_inference

    model, meta, cfg = load_for_inference(ckpt)
    mean = torch.tensor(cfg.data.mean).view(3, 1, 1)
    std = torch.tensor(cfg.data.std).view(3, 1, 1)
    for img in images:
        pred = Image.open(tmp_path / "pred" / f"{img.stem}.png")
        assert pred.mode == "P"
        arr = np.array(Image.open(img).convert("RGB"))
        x = ((torch.from_numpy(arr).permute(2, 0, 1).float() - mean) / std)[None]
        expected = predict_probs(model, x, EvalConfig(), meta["num_classes"]).argmax(1)[0].numpy()
        assert np.array_equal(np.asarray(pred), expected)
        assert (tmp_path / "pred" / f"{img.stem}_overlay.jpg").is_file()


@pytest.mark.slow
def test_predict_bad_image_is_one_line(trained, tmp_path):
    cfgs, env = trained
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc = rrseg(["predict", Path(yaml_work_dir(cfgs["ce"])), bad, "--out", tmp_path / "p"], env, check=False)
    assert proc.returncode == 2 and "bad.jpg" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # trains a second run
def test_compare_two_runs(trained, tmp_path):
    cfgs, env = trained
    proc = rrseg(["compare", Path(yaml_work_dir(cfgs["ce"])), Path(yaml_work_dir(cfgs["rr"])),
                  "--out", tmp_path / "cmp"], env)
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(result["summary"]) == {"overall", "frequent", "common", "rare"}
    ce = json.loads((Path(yaml_work_dir(cfgs["ce"])) / "report.json").read_text())
    rr = json.loads((Path(yaml_work_dir(cfgs["rr"])) / "report.json").read_text())
    assert result["summary"]["overall"]["mIoU"]["delta"] == pytest.approx(rr["overall"]["mIoU"] - ce["overall"]["mIoU"])
    assert (tmp_path / "cmp" / "iou_vs_count.png").stat().st_size > 1000
    assert "largest IoU gains" in proc.stdout
