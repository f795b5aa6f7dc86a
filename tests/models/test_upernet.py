"""UPerHead runs smp's decoder layers in mmseg's order (rrseg.models.upernet): the same values as smp's own
forward, the reference here (mmseg's own head is compared in tests/reference)."""

from __future__ import annotations

import pytest
import torch

from rrseg.models.upernet import UPerHead

CHANNELS = (8, 16, 32, 64)


def _head_and_maps(channels_last: bool) -> tuple[UPerHead, list[torch.Tensor]]:
    torch.manual_seed(0)
    head = UPerHead(CHANNELS, 16, num_classes=5)
    with torch.no_grad():  # non-trivial norm statistics, so that eval mode is not the identity
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    sizes = (32, 16, 8, 4)
    maps = [torch.randn(2, c, s, s) for c, s in zip(CHANNELS, sizes)]
    if channels_last:  # as a timm ConvNeXt hands them over
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    return head, [m.requires_grad_() for m in maps]


def _smp_forward(head: UPerHead, maps: list[torch.Tensor]) -> torch.Tensor:
    return head.decoder([None, None, *maps])


@pytest.mark.parametrize("train", [False, True])
def test_mmseg_order_equals_smp_forward_bit_for_bit_on_nchw_maps(train):
    head, maps = _head_and_maps(channels_last=False)
    head.train(train)
    ours = head.forward_features(maps)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), maps[0])
    ref = _smp_forward(head, maps)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), maps[0])
    assert torch.equal(ours, ref)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def test_channels_last_maps_give_the_same_values_to_rounding():
    head, maps = _head_and_maps(channels_last=True)
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head.forward_features(maps), _smp_forward(head, maps), rtol=1e-5, atol=1e-5)


def test_the_fused_map_is_nchw_on_the_cpu_whatever_the_input_layout():
    # the 3x3 fusion convolution is faster NCHW on the CPU (rrseg.models.upernet, UPerHead.forward_features)
    head, maps = _head_and_maps(channels_last=True)
    seen = {}
    head.decoder.fusion_block.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    with torch.no_grad():
        head.eval().forward_features(maps)
    assert seen["x"].is_contiguous()
