"""Losses that fight class imbalance. Region Rebalance first; each other method is one module, registered by
name in :mod:`rrseg.rebalance.registry` (``register_loss`` for one outside rrseg)."""

from rrseg.rebalance.base import Criterion, LossTerm, NoRegionLoss, PixelLossOptions, RegionLossOptions, resize_logits
from rrseg.rebalance.blv import BLVLoss, BLVOptions
from rrseg.rebalance.counts import ClassCounts, CountsError
from rrseg.rebalance.pixel import (
    BalancedSoftmaxLoss,
    BalancedSoftmaxOptions,
    CrossEntropyLoss,
    CrossEntropyOptions,
    FocalLoss,
    FocalOptions,
    PixelLoss,
    WeightedCEOptions,
    class_last,
    class_weights,
)
from rrseg.rebalance.region import (
    CeCoOptions,
    RegionPool,
    RegionRebalance,
    RROptions,
    region_pool,
    region_slots,
    region_table,
    rr_options,
    simplex_etf,
)
from rrseg.rebalance.registry import PIXEL_LOSSES, REGION_LOSSES, list_losses, loss_class, register_loss

__all__ = [
    "PIXEL_LOSSES",
    "REGION_LOSSES",
    "BLVLoss",
    "BLVOptions",
    "BalancedSoftmaxLoss",
    "BalancedSoftmaxOptions",
    "CeCoOptions",
    "ClassCounts",
    "CountsError",
    "Criterion",
    "CrossEntropyLoss",
    "CrossEntropyOptions",
    "FocalLoss",
    "FocalOptions",
    "LossTerm",
    "NoRegionLoss",
    "PixelLoss",
    "PixelLossOptions",
    "RROptions",
    "RegionLossOptions",
    "RegionPool",
    "RegionRebalance",
    "WeightedCEOptions",
    "class_last",
    "class_weights",
    "list_losses",
    "loss_class",
    "region_pool",
    "region_slots",
    "region_table",
    "register_loss",
    "resize_logits",
    "rr_options",
    "simplex_etf",
]
