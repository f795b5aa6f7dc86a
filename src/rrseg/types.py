"""The one structure every model returns and every loss consumes (torch only, no other rrseg import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["MaskOutput", "SegOutput"]


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


@dataclass
class MaskOutput(SegOutput):
    """What a mask-classification model (Mask2Former) returns in training: no pixel classifier, so no
    ``logits``; a set criterion (``loss.pixel.type: mask2former``) reads the rest.

    ``class_logits`` [B, Q, C + 1]: each query's class logits, the last one "no object".
    ``mask_logits`` [B, Q, h, w]: each query's mask logits at stride 4.
    ``features`` [B, D, h, w]: the per-pixel mask embeddings (the pixel decoder's output) that every mask is a dot
    product with: what RR pools.
    ``aux_outputs``: (class_logits, mask_logits) of each earlier decoder layer, first to last, for deep supervision.
    """

    logits: Tensor | None = None
    class_logits: Tensor | None = None
    mask_logits: Tensor | None = None
    aux_outputs: list[tuple[Tensor, Tensor]] = field(default_factory=list)
