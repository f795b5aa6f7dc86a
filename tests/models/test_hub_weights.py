"""pretrained="timm" / "timm:TAG": the backbone's timm weights through timm's own loading (Hugging Face hub
download and cache), tested offline against a hub cache each test writes itself (``hf_hub_cache``).

The model is ``ocrnet_hr18``, the smallest rrseg model whose backbone (hrnet_w18) has timm hub weights; the
"hub" file is a whole timm hrnet_w18 (classifier and the classification-only layers included) with random
values, so that every tensor that arrives can be told from the model's own initialisation.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import timm
import torch

from rrseg.errors import RRSegError
from rrseg.models import build_model
from rrseg.models.weights import load_pretrained
from tests.conftest import cli_env

DEFAULT_REPO = "timm/hrnet_w18.ms_aug_in1k"  # timm's default tag of hrnet_w18
OTHER_REPO = "timm/hrnet_w18.ms_in1k"


def _random_hrnet_w18(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = timm.create_model("hrnet_w18", pretrained=False).state_dict()
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}


@pytest.fixture(scope="module")
def hub_weights() -> dict[str, dict[str, torch.Tensor]]:
    return {DEFAULT_REPO: _random_hrnet_w18(1), OTHER_REPO: _random_hrnet_w18(2)}


def _assert_backbone_is(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    own = model.backbone.model.state_dict()
    float_keys = [k for k, v in own.items() if v.is_floating_point()]
    assert float_keys and all(k in weights for k in float_keys)
    for k in float_keys:
        torch.testing.assert_close(own[k], weights[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_default_tag_loads_from_the_hub_cache_through_timm(hf_hub_cache, hub_weights, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="rrseg")
    hf_hub_cache(DEFAULT_REPO, hub_weights[DEFAULT_REPO])
    calls = []
    original = timm.models.load_pretrained

    def spy(model, pretrained_cfg=None, **kwargs):
        calls.append(pretrained_cfg["hf_hub_id"])
        return original(model, pretrained_cfg, **kwargs)

    monkeypatch.setattr(timm.models, "load_pretrained", spy)
    model = build_model("ocrnet_hr18", 5, pretrained="timm")
    assert calls == [DEFAULT_REPO]  # timm did the reading, from the cache
    _assert_backbone_is(model, hub_weights[DEFAULT_REPO])
    out = caplog.text
    assert "timm hrnet_w18.ms_aug_in1k: loaded" in out and "missing" not in out
    assert "incre_modules.0.*" in out  # classification-only layers: in timm's file, not in the backbone

    # the same file given as a local path (what the offline error tells users to do) loads the same tensors
    local = hf_hub_cache.cache / f"models--{DEFAULT_REPO.replace('/', '--')}"
    path = next(local.glob("snapshots/*/model.safetensors"))
    again = build_model("ocrnet_hr18", 5, pretrained=str(path))
    _assert_backbone_is(again, hub_weights[DEFAULT_REPO])


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["timm:ms_in1k", "timm:hrnet_w18.ms_in1k"])
def test_another_tag(hf_hub_cache, hub_weights, spec):
    hf_hub_cache(DEFAULT_REPO, hub_weights[DEFAULT_REPO])
    hf_hub_cache(OTHER_REPO, hub_weights[OTHER_REPO])
    model = build_model("ocrnet_hr18", 5, pretrained=spec)
    _assert_backbone_is(model, hub_weights[OTHER_REPO])
    result = load_pretrained(model.backbone, "timm", verbose=False)  # a TimmBackbone alone, default tag
    assert result.path == "timm hrnet_w18.ms_aug_in1k" and not result.missing
    _assert_backbone_is(model, hub_weights[DEFAULT_REPO])


def test_offline_with_nothing_cached_is_one_line_naming_the_repo(hf_hub_cache):
    with pytest.raises(RRSegError) as e:
        build_model("ocrnet_hr18", 5, pretrained="timm")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"Hugging Face hub repo {DEFAULT_REPO}" in msg
    assert f"https://huggingface.co/{DEFAULT_REPO}/resolve/main/model.safetensors" in msg
    assert "model.pretrained: /path/to/model.safetensors" in msg and str(hf_hub_cache.cache) in msg


@pytest.mark.slow
def test_a_cached_file_of_the_wrong_architecture_names_key_and_shapes(hf_hub_cache, hub_weights):
    bad = dict(hub_weights[DEFAULT_REPO])
    bad["conv1.weight"] = torch.zeros(32, 3, 3, 3)  # hrnet_w18's stem conv is 64 x 3 x 3 x 3
    hf_hub_cache(DEFAULT_REPO, bad)
    with pytest.raises(RRSegError, match=r"timm hrnet_w18\.ms_aug_in1k: shape mismatch for 'conv1\.weight': "
                                         r"checkpoint \(32, 3, 3, 3\) vs model \(64, 3, 3, 3\)"):
        build_model("ocrnet_hr18", 5, pretrained="timm")


def test_bad_specs(hf_hub_cache):
    with pytest.raises(RRSegError, match=r"timm has no weights hrnet_w18\.nope .* tags of hrnet_w18: "
                                         r"ms_aug_in1k, ms_in1k"):
        build_model("ocrnet_hr18", 5, pretrained="timm:nope")
    with pytest.raises(RRSegError, match=r"ocrnet_hr18's backbone is hrnet_w18, not resnet50"):
        build_model("ocrnet_hr18", 5, pretrained="timm:resnet50.a1_in1k")


@pytest.mark.parametrize("name", ["ocrnet_tiny", "deeplabv3plus_small", "upernet_swin_tiny"])
def test_backbones_without_timm_weights_are_one_line(hf_hub_cache, name):
    with pytest.raises(RRSegError) as e:
        build_model(name, 5, pretrained="timm")
    assert "\n" not in str(e.value)
    assert f"{name}'s backbone" in str(e.value) and "is not a timm model built by name" in str(e.value)


def test_custom_module_without_timm_config(hf_hub_cache):
    with pytest.raises(RRSegError, match=r"Linear's backbone \(Linear\) is not a timm model"):
        load_pretrained(torch.nn.Linear(2, 2), "timm")


@pytest.mark.slow
def test_environment_alone_works_in_a_fresh_process(hf_hub_cache, hub_weights):
    """What a user does: HF_HOME / HF_HUB_OFFLINE=1 set before Python starts (the fixture's environment,
    without its patch of huggingface_hub's constants)."""
    path = hf_hub_cache(DEFAULT_REPO, hub_weights[DEFAULT_REPO])
    code = (
        "import torch; from safetensors.torch import load_file; from rrseg.models import build_model\n"
        "m = build_model('ocrnet_hr18', 5, pretrained='timm')\n"
        f"ref = load_file({str(path)!r})\n"
        "print('SAME', all(torch.equal(v, ref[k]) for k, v in m.backbone.model.state_dict().items()\n"
        "                  if v.is_floating_point()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "SAME True" in proc.stdout
