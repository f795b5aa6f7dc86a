"""rrseg's paper families against mmsegmentation's own outputs, without mmseg: the golden files that make
test-mmseg writes (tests/reference/write_golden.py; mmseg version and config in each file's metadata) hold mmseg's
float64 outputs of a tiny-width twin of each family for fixed inputs, and the key table of its checkpoint, whose
weights tests/reference/families.py regenerates bit for bit. rrseg loads that mmseg checkpoint through its own
loader and must give the same whole-image and slide-window logits, training features, logits and losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from tests.reference import families, rrseg_outputs

GOLDEN = Path(__file__).resolve().parents[2] / families.GOLDEN_DIR


def _read(name: str):
    path = GOLDEN / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def test_every_family_has_a_golden_file_from_mmseg():
    assert sorted(p.stem for p in GOLDEN.glob("*.safetensors")) == sorted(families.FAMILIES)
    for name, family in families.FAMILIES.items():
        _, meta = _read(name)
        assert meta["mmseg_version"] == "1.2.2" and meta["mmseg_config"] == family.config
        # the file was written from the family as it is now (a changed table needs make test-mmseg again)
        assert json.loads(meta["overrides"]) == json.loads(json.dumps(family.tiny))
        assert meta["rrseg_model"] == family.rrseg_tiny


@pytest.mark.parametrize("name", list(families.FAMILIES))
def test_rrseg_equals_mmseg_golden(name, tmp_path):
    ref, meta = _read(name)
    keys = {k: (tuple(shape), dtype) for k, (shape, dtype) in json.loads(meta["keys"]).items()}
    got = rrseg_outputs.outputs(families.FAMILIES[name], families.fill_state_dict(keys), tmp_path)
    rrseg_outputs.assert_matches(got, ref)


def test_a_wrong_model_fails_the_golden_check(tmp_path, monkeypatch):
    """The check can fail: HRNet's fusion upsampling by nearest neighbour (timm's) instead of bilinear (mmseg's),
    all else equal, is caught."""
    from torch import nn

    from rrseg.models import backbones

    mmseg_fusion = backbones._mmseg_fusion

    def nearest_fusion(model: nn.Module) -> None:
        mmseg_fusion(model)
        for m in model.modules():
            if isinstance(m, nn.Upsample):
                m.mode, m.align_corners = "nearest", None

    monkeypatch.setattr(backbones, "_mmseg_fusion", nearest_fusion)
    ref, meta = _read("ocrnet")
    keys = {k: (tuple(shape), dtype) for k, (shape, dtype) in json.loads(meta["keys"]).items()}
    got = rrseg_outputs.outputs(families.FAMILIES["ocrnet"], families.fill_state_dict(keys), tmp_path)
    with pytest.raises(AssertionError, match="eval_logits: max abs error"):
        rrseg_outputs.assert_matches(got, ref)
