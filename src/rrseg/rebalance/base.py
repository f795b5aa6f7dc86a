"""The loss-term interface: ``term(out: SegOutput, labels) -> scalar``, with a ``name`` for logging.

A training criterion is a named sum of such terms (pixel CE, auxiliary CE, RR, ...). A new rebalancing
method is one new module that subclasses :class:`LossTerm`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.types import SegOutput

__all__ = ["Criterion", "LossTerm", "resize_logits"]


def resize_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Bilinearly resize [B, C, h, w] logits to the label size (align_corners=False, as mmsegmentation)."""
    if logits.shape[-2:] == labels.shape[-2:]:
        return logits
    return F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)


class LossTerm(nn.Module):
    """One named, weighted term of the training loss."""

    def __init__(self, name: str, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.name = name
        self.loss_weight = float(loss_weight)

    def forward(self, out: SegOutput, labels: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Criterion(nn.Module):
    """Sum of named loss terms; returns ``{name: weighted loss}`` (their sum is the training loss)."""

    def __init__(self, terms: list[nn.Module]) -> None:
        super().__init__()
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")
        self.terms = nn.ModuleList(terms)

    def forward(self, out: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        return {term.name: term(out, labels) for term in self.terms}
