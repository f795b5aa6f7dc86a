"""The loss-term interface: ``term(out: SegOutput, labels) -> scalar``, with a ``name`` for logging, and the
options classes through which a config names and sets up a loss.

A training criterion is a named sum of such terms (pixel CE, auxiliary CE, RR, ...). A new rebalancing
method is one new module holding a :class:`LossTerm` and its options class (a dataclass subclassing
:class:`PixelLossOptions` or :class:`RegionLossOptions`, whose ``build`` makes the loss), plus one entry in
:mod:`rrseg.rebalance.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.ranges import ranged
from rrseg.types import SegOutput

if TYPE_CHECKING:
    from rrseg.rebalance.counts import ClassCounts

__all__ = ["Criterion", "LossTerm", "NoRegionLoss", "PixelLossOptions", "RegionLossOptions", "resize_logits"]


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
        terms: dict[str, Tensor] = {}
        for term in self.terms:
            value = term(out, labels)
            if isinstance(value, dict):  # a term that computes several parts at once (Mask2Former's criterion)
                terms.update(value)
            else:
                terms[term.name] = value
        return terms


# ------------------------------------------------------------------------------------------------ options
# A loss's options class is a dataclass: its fields are the keys of its config section (``loss.pixel`` or
# ``loss.region``) with their types and defaults, which the config checks and fills in; a numeric field declares
# its allowed range with ``rrseg.ranges.ranged(default, "[0, 1)")``, checked at load. ``type`` is the name
# the loss is registered under; each subclass sets it as its default (the bases' is the loss a config gets
# when it names none, so a subclass that forgets is refused as a second registration of that name).


@dataclass
class PixelLossOptions:
    """The options every pixel loss takes; a pixel loss's options class adds its own and ``build``."""

    KIND: ClassVar[str] = "pixel"
    # the training output the loss reads, which the model must give (its ``training_output``): "logits", per-pixel
    # class logits (SegOutput); "masks", a mask-classification model's class and mask logits (MaskOutput)
    OUTPUT: ClassVar[str] = "logits"
    # the options' meanings (rrseg.schema; docs/CONFIG.md is generated from them), here and in each subclass
    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "type": "the pixel loss: a name of rrseg.rebalance.PIXEL_LOSSES",
        "loss_weight": "the pixel loss's weight in the training loss",
        "avg_non_ignore": "every pixel loss and the auxiliary CE: the per-pixel losses (class-weighted for "
                          "weighted_ce) summed and divided by the labelled pixels (true, mmseg >= 0.23) or by all "
                          "pixels, ignored ones included (false, mmseg 0.17: what the released configs ran; it sets "
                          "the pixel losses' weight against RR)",
    }
    type: str = "ce"
    loss_weight: float = ranged(1.0, ">= 0")
    avg_non_ignore: bool = True

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> LossTerm:
        """The loss term, for class ``counts`` over ``num_classes`` classes and the data's ``ignore_index``."""
        raise NotImplementedError(f"pixel loss {self.type!r} has no build()")


@dataclass
class RegionLossOptions:
    """The options of a region loss: a training-only branch of the model (``model.rebalance``, which the
    criterion calls), made by ``build`` from the model's feature channels, as a pixel loss's term is."""

    KIND: ClassVar[str] = "region"
    OPTIONS_HELP: ClassVar[dict[str, str]] = {
        "type": "the region loss: a name of rrseg.rebalance.REGION_LOSSES (none: no region term)",
    }
    type: str = "none"

    def build(self, in_channels: int, num_classes: int, counts: ClassCounts | None = None,
              ignore_index: int = 255) -> nn.Module | None:
        """The branch for features of ``in_channels`` channels (``model.feature_channels``), class ``counts``
        over ``num_classes`` classes and the data's ``ignore_index``; attach it with ``model.set_rebalance``.
        The branch has ``check_fits(in_channels, num_classes)``, the check a model makes when it is attached."""
        raise NotImplementedError(f"region loss {self.type!r} has no build()")


@dataclass
class NoRegionLoss(RegionLossOptions):
    """none: no region term."""

    type: str = "none"

    def build(self, in_channels: int, num_classes: int, counts: ClassCounts | None = None,
              ignore_index: int = 255) -> None:
        return None
