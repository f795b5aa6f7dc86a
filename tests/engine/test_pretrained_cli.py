"""``model.pretrained: timm`` through ``rrseg train``: the weights come from the (test-written, offline) hub
cache through timm; nothing cached, or a backbone timm has no weights for, is one line and exit status 2."""

from __future__ import annotations

import pytest
import timm
import torch

REPO = "timm/hrnet_w18.ms_aug_in1k"


@pytest.mark.slow
def test_train_with_timm_weights_from_the_cache(hf_hub_cache, tiny_config, call_rrseg):
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
          for k, v in timm.create_model("hrnet_w18", pretrained=False).state_dict().items()}
    hf_hub_cache(REPO, sd)
    cfg = tiny_config("run", model={"name": "ocrnet_hr18", "pretrained": "timm"},
                      schedule={"iters": 1, "warmup_iters": 0}, eval={"interval": 0, "batch_size": 4},
                      train={"checkpoint_interval": 1, "progress": False, "log_interval": 1})
    proc = call_rrseg("train", cfg)
    assert proc.returncode == 0, proc.stderr
    assert "timm hrnet_w18.ms_aug_in1k: loaded 1830/1830 tensors (timm format -> backbone.model)" in proc.stdout


def test_train_offline_with_nothing_cached(hf_hub_cache, tiny_config, call_rrseg):
    cfg = tiny_config("run", model={"name": "ocrnet_hr18", "pretrained": "timm"})
    proc = call_rrseg("train", cfg)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rrseg train: error: pretrained='timm': cannot get timm weights")
    assert f"Hugging Face hub repo {REPO}" in lines[0] and "model.pretrained: /path/to/model.safetensors" in lines[0]


def test_train_with_a_backbone_timm_has_no_weights_for(hf_hub_cache, tiny_config, call_rrseg):
    cfg = tiny_config("run", model={"name": "deeplabv3plus_tiny", "pretrained": "timm:in1k"})
    proc = call_rrseg("train", cfg)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "rrseg train: error: pretrained='timm:in1k': deeplabv3plus_tiny's backbone (ResNet) is not a timm model "
        "built by name, so timm has no weights for it; give a local weights file instead")


# ---------------------------------------------------------------- model.pretrained: none, and left unset
UNSET = "model.pretrained is not set"


def _random_start_warnings(cfg_path, caplog, overrides=()):
    """Build a run's parts from the config, as ``rrseg train`` does; the WARNINGs about an unset
    model.pretrained that it logged."""
    import logging

    from rrseg.engine.components import build_components
    from rrseg.engine.config import load_config
    from rrseg.engine.distributed import DistInfo

    cfg = load_config(cfg_path, list(overrides))
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="rrseg")
    parts = build_components(cfg, DistInfo())
    return cfg, parts, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                        and UNSET in r.getMessage()]


def test_unset_pretrained_of_a_paper_model_warns_once_naming_its_tag(tiny_config, caplog):
    _, _, warnings = _random_start_warnings(
        tiny_config("run", model={"name": "ocrnet_hr18"}, data={"check": False}), caplog)
    assert warnings == [
        "model.pretrained is not set: ocrnet_hr18 trains from random initialisation; set model.pretrained: "
        "timm:hrnet_w18.ms_in1k (the paper's start) or none"]


@pytest.mark.parametrize("spec", ["none", "None", "NONE"])
def test_none_is_accepted_as_from_scratch(spec, hf_hub_cache, tiny_config, caplog):
    path = tiny_config("run", model={"name": "ocrnet_hr18", "pretrained": spec}, data={"check": False})
    cfg, parts, warnings = _random_start_warnings(path, caplog)
    assert cfg.model.pretrained == spec and parts.model is not None and warnings == []
    # and as an override on the command line's --set
    cfg, _, warnings = _random_start_warnings(path, caplog, ["model.pretrained=none"])
    assert cfg.model.pretrained == "none" and warnings == []


@pytest.mark.parametrize("name", ["deeplabv3plus_tiny", "ocrnet_tiny", "upernet_swin_tiny"])
def test_test_sized_models_do_not_warn(name, tiny_config, caplog):
    _, _, warnings = _random_start_warnings(tiny_config("run", model={"name": name}, data={"check": False}), caplog)
    assert warnings == []


@pytest.mark.parametrize("pretrained", ["rrseg:demo_small_backbone", "null"])
def test_the_demo_does_not_warn(pretrained, tiny_dataset, tmp_path, caplog):
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    overrides = [f"data.train.root={tiny_dataset}", f"data.val.root={tiny_dataset}", "data.workers=0",
                 "data.check=false", f"work_dir={tmp_path / 'demo'}", f"model.pretrained={pretrained}"]
    _, _, warnings = _random_start_warnings(demo, caplog, overrides)
    assert warnings == []
