"""OCRNet's object attention keeps mmseg's memory layout (rrseg.models.ocrnet.ObjectAttentionBlock)."""

from __future__ import annotations

import torch

from rrseg.models.ocrnet import ObjectAttentionBlock


def test_the_attention_context_is_nchw_as_mmseg_makes_it():
    # a channels-last context made the concatenation before the bottleneck a transposing copy on the CPU
    torch.manual_seed(0)
    block = ObjectAttentionBlock(16, 8).eval()
    seen = {}
    block.out_project.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    block.bottleneck.register_forward_hook(lambda m, args, out: seen.update(cat=args[0]))
    with torch.no_grad():
        block(torch.randn(2, 16, 12, 10), torch.randn(2, 16, 5, 1))
    assert seen["x"].is_contiguous() and seen["y"].is_contiguous() and seen["cat"].is_contiguous()
