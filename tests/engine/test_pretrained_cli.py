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
