"""Shared integration pieces: the input capture and saving the RR branch apart."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rrseg.errors import RRSegError
from rrseg.integrations.common import build_region_rebalance, capture_input, load_rr, save_rr
from rrseg.rebalance import CeCoOptions, RegionRebalance


def test_capture_records_the_input_with_its_graph_and_removes_the_hook():
    conv = nn.Conv2d(3, 4, 1)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    with capture_input(conv) as cap:
        conv(x * 2)
    assert not conv._forward_pre_hooks
    torch.testing.assert_close(cap.tensor, x * 2)
    cap.tensor.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))
    conv(x)  # after the block nothing is recorded
    assert len(cap.inputs) == 1


def test_capture_refuses_zero_or_several_calls():
    conv = nn.Conv2d(3, 4, 1)
    with capture_input(conv) as cap:
        pass
    with pytest.raises(RRSegError, match="ran 0 times"):
        _ = cap.tensor
    with capture_input(conv) as cap:
        conv(torch.randn(1, 3, 2, 2))
        conv(torch.randn(1, 3, 2, 2))
    with pytest.raises(RRSegError, match="ran 2 times"):
        _ = cap.tensor
    with pytest.raises(TypeError):
        capture_input(lambda x: x)  # type: ignore[arg-type]


def test_capture_hook_is_removed_when_the_forward_fails():
    conv = nn.Conv2d(3, 4, 1)
    with pytest.raises(RuntimeError), capture_input(conv):
        conv(torch.randn(1, 5, 2, 2))  # wrong channel count
    assert not conv._forward_pre_hooks


def test_save_and_load_rr(tmp_path):
    torch.manual_seed(0)
    rr = RegionRebalance(8, 3, [5, 2, 1], trainable=True, etf=True)
    rr.train()(torch.randn(2, 8, 4, 4), torch.randint(0, 3, (2, 8, 8)))  # moves the BatchNorm statistics
    save_rr(rr, tmp_path / "rr.safetensors")
    torch.manual_seed(1)
    other = RegionRebalance(8, 3, [5, 2, 1], trainable=True, etf=True)
    load_rr(other, tmp_path / "rr.safetensors")
    for k, v in rr.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v, rtol=0, atol=0)

    with pytest.raises(RRSegError, match="not found"):
        load_rr(other, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RRSegError, match=r"junk\.safetensors: truncated or corrupt safetensors file \("):
        load_rr(other, tmp_path / "junk.safetensors")
    with pytest.raises(RRSegError, match="does not fit"):
        load_rr(RegionRebalance(16, 3, [5, 2, 1]), tmp_path / "rr.safetensors")


def test_readme_section_documents_real_options():
    """Every option named in the README's options table is a RegionRebalance argument, and vice versa."""
    import inspect
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "README.md"
    table = doc.read_text().split("### The RR options", 1)[1].split("\n## ", 1)[0]
    documented = {name for row in table.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    params = set(inspect.signature(RegionRebalance).parameters) - {"in_channels", "num_classes", "counts", "name"}
    assert documented <= params, documented - params
    assert params - documented <= {"logit_scale", "align_corners"}, params - documented


def test_the_integrations_build_and_check_the_branch_as_the_engine_does():
    """RRWrapper / region_rebalance_for take RR's options as keywords: the branch is the typed options' build
    (CeCo's with etf=True), the one the engine builds from loss.region; a given branch passes the same fit check."""
    torch.manual_seed(0)
    built = build_region_rebalance(8, 3, [5, 2, 1], None, 200, {"etf": True, "loss_weight": 0.2, "logit_scale": 3.0})
    torch.manual_seed(0)
    typed = CeCoOptions(loss_weight=0.2, logit_scale=3.0).build(8, 3, [5, 2, 1], ignore_index=200)
    assert built.etf and built.ignore_index == 200 and built.logit_scale == 3.0
    assert built.state_dict().keys() == typed.state_dict().keys()
    assert all(torch.equal(v, typed.state_dict()[k]) for k, v in built.state_dict().items())
    with pytest.raises(RRSegError, match=r"^unknown RR option 'smoth'; options: etf, loss_weight, trainable, "):
        build_region_rebalance(8, 3, [5, 2, 1], None, 255, {"smoth": 0.5})
    with pytest.raises(RRSegError, match=r"^unknown RR option 'logit_scale' \(a CeCo option: with etf=True\)"):
        build_region_rebalance(8, 3, [5, 2, 1], None, 255, {"logit_scale": 3.0})
    with pytest.raises(RRSegError, match=r"^region loss 'rr': Region Rebalance needs at least 2 classes"):
        build_region_rebalance(8, 1, [5], None, 255, {})
    ready = RegionRebalance(8, 3, [5, 2, 1])
    assert build_region_rebalance(8, 3, None, ready, 255, {}) is ready
    with pytest.raises(RRSegError, match=r"^the RegionRebalance takes 8 feature channels and 3 classes, but the "
                                         r"model's pixel classifier reads 16 channels and predicts 3 classes$"):
        build_region_rebalance(16, 3, None, ready, 255, {})
