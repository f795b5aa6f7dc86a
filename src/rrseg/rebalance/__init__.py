"""Losses that fight class imbalance. Region Rebalance first; each other method is one module."""

from rrseg.rebalance.base import Criterion, LossTerm, resize_logits
from rrseg.rebalance.blv import BLVLoss
from rrseg.rebalance.counts import ClassCounts, CountsError
from rrseg.rebalance.pixel import BalancedSoftmaxLoss, CrossEntropyLoss, FocalLoss, class_weights
from rrseg.rebalance.region import RegionPool, RegionRebalance, region_pool, region_table, simplex_etf

__all__ = [
    "BLVLoss",
    "BalancedSoftmaxLoss",
    "ClassCounts",
    "CountsError",
    "Criterion",
    "CrossEntropyLoss",
    "FocalLoss",
    "LossTerm",
    "RegionPool",
    "RegionRebalance",
    "class_weights",
    "region_pool",
    "region_table",
    "resize_logits",
    "simplex_etf",
]
