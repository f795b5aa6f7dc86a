"""The mask2former family through the engine: the release's optimizer groups (backbone lr x 0.1, no decay on norms
and embeddings), `rrseg train` / `eval` / `predict` end to end with the set criterion's parts logged, an interrupted
run resumed bit for bit, and ADE20K-Full (847 classes, ids above 255, 65535 ignored) from its preset."""

from __future__ import annotations

import json
import math
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrseg.engine import checkpoint as ckpt
from rrseg.engine.config import OptimConfig, load_config
from rrseg.engine.optim import param_groups
from rrseg.models import build_model

from .conftest import PYTHON
from .test_ade20k_full_train import check_report_and_predictions
from .test_trainer import SIGTERM_AT_STEP, log, rrseg, same_weights, yaml_work_dir

REPO = Path(__file__).resolve().parents[2]
FULL_PRESET = REPO / "configs" / "mask2former_r50" / "ade20k_full_200k.yaml"
TINY = {"model": {"name": "mask2former_tiny"},
        "loss": {"pixel": {"type": "mask2former", "num_points": 64}},
        "optim": {"type": "adamw", "lr": 0.001, "backbone_lr_mult": 0.1, "no_decay": "norm_embed", "clip_grad": 0.01}}


def test_optimizer_groups_as_the_releases_build_optimizer():
    """train_net.py's build_optimizer: lr x BACKBONE_MULTIPLIER for the backbone, weight decay 0 for normalisation
    layers and nn.Embedding (the queries, the decoder's level embedding), everything else decayed, biases too."""
    torch.manual_seed(0)
    model = build_model("mask2former_tiny", 5)
    cfg = OptimConfig(lr=1e-4, weight_decay=0.05, no_decay="norm_embed", backbone_lr_mult=0.1)
    where = {name: (g["lr_scale"], g["weight_decay"]) for g in param_groups(model, cfg) for name in g["names"]}
    assert set(where) == {n for n, p in model.named_parameters() if p.requires_grad}
    head = "decode_head."
    for name, (scale, _) in where.items():
        assert scale == pytest.approx(0.1 if name.startswith("backbone.") else 1.0), name
    no_decay = {n for n, (_, d) in where.items() if d == 0.0}
    assert {f"{head}transformer.queries_features.weight", f"{head}transformer.queries_embedder.weight",
            f"{head}transformer.level_embed.weight", f"{head}transformer.decoder.layernorm.weight",
            f"{head}transformer.decoder.layernorm.bias", f"{head}pixel_decoder.adapter_1.1.weight"} <= no_decay
    # decayed: convolutions, linears and their biases, the pixel decoder's level embedding (a plain Parameter there)
    for name in (f"{head}class_predictor.weight", f"{head}class_predictor.bias", f"{head}pixel_decoder.level_embed",
                 f"{head}pixel_decoder.mask_projection.bias", "backbone.model.conv1.0.weight"):
        assert where[name][1] == 0.05, name
    norms = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms and all(f"{n}.weight" in no_decay for n in norms)


@pytest.mark.slow  # `rrseg train` (in this process), then `rrseg eval` and `rrseg predict` in subprocesses
def test_train_eval_predict_end_to_end(tiny_config, cli_env, tmp_path, tiny_dataset):
    from rrseg.cli.main import main

    cfg = tiny_config("m2f", **TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(cfg), "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    work = Path(yaml_work_dir(cfg))
    train = [r for r in log(work) if r["event"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4, 5, 6]
    for r in train:
        assert {"loss_cls", "loss_mask", "loss_dice"} <= r.keys() and "loss_ce" not in r
        assert all(math.isfinite(r[k]) for k in ("loss_cls", "loss_mask", "loss_dice", "loss"))
    report = json.loads((work / "report.json").read_text())
    assert report["iteration"] == 6 and 0 <= report["overall"]["mIoU"] <= 1

    out = tmp_path / "eval"
    rrseg(["eval", cfg, work / "inference.safetensors", "--out", out, "--device", "cpu"], cli_env)
    evaluated = json.loads((out / "report.json").read_text())
    assert evaluated["overall"]["mIoU"] == pytest.approx(report["overall"]["mIoU"], abs=1e-6)

    images = sorted((tiny_dataset / "images" / "val").iterdir())[:2]
    rrseg(["predict", work / "inference.safetensors", *images, "--out", tmp_path / "pred", "--device", "cpu"],
          cli_env)
    from rrseg.engine.config import EvalConfig
    from rrseg.engine.evaluator import predict_probs
    from rrseg.engine.inference import load_for_inference

    model, meta, loaded = load_for_inference(work / "inference.safetensors")
    mean, std = torch.tensor(loaded.data.mean).view(3, 1, 1), torch.tensor(loaded.data.std).view(3, 1, 1)
    for image in images:  # the class of the highest semantic score, at the image's size
        arr = np.array(Image.open(image).convert("RGB"))
        x = ((torch.from_numpy(arr).permute(2, 0, 1).float() - mean) / std)[None]
        expected = predict_probs(model, x, EvalConfig(), meta["num_classes"]).argmax(1)[0].numpy()
        with Image.open(tmp_path / "pred" / f"{image.stem}.png") as im:
            assert np.array_equal(np.asarray(im), expected)


@pytest.mark.slow
def test_sigterm_then_resume_is_bit_identical(tiny_config, cli_env):
    """As the other families (tests/engine/test_trainer.py): the matcher's and the point sampling's random draws
    are part of the saved RNG state, so the resumed run ends with the uninterrupted run's weights."""
    sections = {**TINY, "schedule": {"iters": 6, "warmup_iters": 2}, "eval": {"interval": 3, "batch_size": 4},
                "train": {"log_interval": 1, "checkpoint_interval": 2, "progress": False}}
    straight = tiny_config("straight", **sections)
    rrseg(["train", straight], cli_env)
    cut = tiny_config("cut", **sections)
    work = Path(yaml_work_dir(cut))
    proc = subprocess.run([PYTHON, "-c", SIGTERM_AT_STEP, "3", "train", str(cut)], env=cli_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert ckpt.load_state(work / "checkpoints" / "iter_0000003" / "state.pt")["iteration"] == 3
    resumed = rrseg(["train", cut, "--resume"], cli_env)
    assert "at iteration 3" in resumed.stdout
    a = Path(yaml_work_dir(straight)) / "checkpoints" / "iter_0000006" / "model.safetensors"
    assert same_weights(a, work / "checkpoints" / "iter_0000006" / "model.safetensors")


def _full_overrides(root: Path, work_dir: Path) -> list[str]:
    """The ADE20K-Full preset made test-sized: the tiny model, fp32, 32x32 crops of the 64x48 images, 2 steps."""
    return [
        "model.name=mask2former_tiny", "model.options={}", "model.pretrained=none", f"data.train.root={root}",
        f"data.val.root={root}", "data.batch_size=2", "data.workers=0", "data.crop_size=[32,32]", "data.scale=[64,48]",
        "data.ratio_range=[0.75,1.25]", "loss.pixel.num_points=64", "schedule.iters=2", "eval.interval=2",
        "eval.batch_size=2", "train.amp=none", "train.log_interval=1", "train.checkpoint_interval=2",
        "train.tensorboard=false", "train.progress=false", f"work_dir={work_dir}",
    ]


def test_the_ade20k_full_preset_is_ltss_recipe():
    cfg = load_config(FULL_PRESET)
    assert (cfg.model.name, cfg.model.num_classes, cfg.data.train.type) == ("mask2former_r50", 847, "ade20k_full")
    assert (cfg.schedule.iters, cfg.schedule.warmup_iters, cfg.schedule.power) == (200000, 0, 0.9)
    assert (cfg.optim.type, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.backbone_lr_mult) == ("adamw", 1e-4, 0.05,
                                                                                                   0.1)
    assert (cfg.optim.clip_grad, cfg.optim.no_decay, cfg.train.amp, cfg.train.global_batch) == (0.01, "norm_embed",
                                                                                                 "fp16", 16)
    p = cfg.loss.pixel
    assert (p.type, p.class_weight, p.mask_weight, p.dice_weight, p.no_object_weight) == ("mask2former", 2, 5, 5, 0.1)
    assert (p.num_points, p.oversample_ratio, p.importance_sample_ratio, p.deep_supervision) == (12544, 3, 0.75, True)
    assert cfg.model.options == {"num_queries": 100, "decoder_layers": 10} and cfg.eval.interval == 10000


@pytest.mark.slow  # trains the 847-class preset (tiny model) in a subprocess, then predicts
def test_ade20k_full_ids_above_255_through_training_and_prediction(ade20k_full, tmp_path, cli_env):
    from rrseg.engine.trainer import Trainer

    cfg = load_config(FULL_PRESET, _full_overrides(ade20k_full, tmp_path / "setup"))
    trainer = Trainer(cfg, device="cpu")
    parts = trainer.setup()
    (term,) = parts.criterion.terms
    assert parts.num_classes == 847 and term.ignore_index == 65535 and term.num_classes == 847
    batch = next(iter(trainer.train_loader))
    torch.manual_seed(0)
    parts.model.train()
    values = parts.criterion(parts.model(batch["image"]), batch["label"])
    assert set(values) == {"loss_cls", "loss_mask", "loss_dice"} and all(torch.isfinite(v) for v in values.values())
    assert parts.model.decode_head.class_predictor.out_features == 848

    work = tmp_path / "work"
    rrseg(["train", FULL_PRESET, "--set", *_full_overrides(ade20k_full, work)], cli_env, timeout=600)
    records = [r for r in log(work) if r["event"] == "train"]
    assert [r["iteration"] for r in records] == [1, 2]
    check_report_and_predictions(work, ade20k_full, tmp_path / "pred", cli_env)
