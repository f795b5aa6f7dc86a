"""The one structure every model returns and every loss consumes (torch only, no other rrseg import)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["SegOutput"]


@dataclass
class SegOutput:
    """What a segmentor returns in training.

    ``logits`` [B, C, h, w]: the pixel classifier's output at its own resolution (stride 4 or 8).
    ``features`` [B, D, h, w]: the exact tensor the pixel classifier reads (what RR pools).
    ``aux_logits`` [B, C, h', w'] or None: the auxiliary head's output, for the auxiliary CE term.
    """

    logits: Tensor
    features: Tensor | None = None
    aux_logits: Tensor | None = None
