"""The loss registry: the name a config gives (``loss.pixel.type``, ``loss.region.type``) -> the loss's options
class (a dataclass: its fields are the section's keys, with types and defaults; ``build`` makes the
loss). The config's choices and checks come from here.

Adding a method: one module under ``rebalance/`` with the loss and its options class (``type: str = "name"``,
its own fields, ``build``), and the options class added to ``PIXEL_LOSSES`` (or ``REGION_LOSSES``) below. A loss
outside rrseg registers its options class with the :func:`register_loss` decorator (the kind comes from its base
class); a config names it once the module that defines it is imported (``rrseg train --import MODULE``).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Literal, TypeVar

from rrseg.errors import RRSegError, own_name_hint
from rrseg.rebalance.base import NoRegionLoss, PixelLossOptions, RegionLossOptions
from rrseg.rebalance.blv import BLVOptions
from rrseg.rebalance.mask2former import Mask2FormerLossOptions
from rrseg.rebalance.pixel import BalancedSoftmaxOptions, CrossEntropyOptions, FocalOptions, WeightedCEOptions
from rrseg.rebalance.region import CeCoOptions, RROptions

__all__ = [
    "PIXEL_LOSSES",
    "REGION_LOSSES",
    "LossKind",
    "list_losses",
    "loss_class",
    "loss_option_names",
    "loss_registry",
    "register_loss",
]

LossKind = Literal["pixel", "region"]
_O = TypeVar("_O")


def _add(table: dict[str, Any], base: type, cls: type) -> None:
    """Register ``cls`` in ``table`` under its ``type`` default, once checked."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and issubclass(cls, base)):
        raise TypeError(f"{getattr(cls, '__name__', cls)}: a loss's options are a dataclass subclassing "
                        f"{base.__name__}")
    if cls.type in table:
        raise ValueError(f"{cls.__name__}: loss name {cls.type!r} registered twice (set its `type` default)")
    table[cls.type] = cls


def _table(base: type, *classes: type) -> dict[str, Any]:
    """{name: options class}, the name being the class's ``type`` default; checked at import."""
    table: dict[str, Any] = {}
    for cls in classes:
        _add(table, base, cls)
    return table


# The order is the order of the names in messages and help.
PIXEL_LOSSES: dict[str, type[PixelLossOptions]] = _table(
    PixelLossOptions, CrossEntropyOptions, WeightedCEOptions, FocalOptions, BalancedSoftmaxOptions, BLVOptions,
    Mask2FormerLossOptions,
)
REGION_LOSSES: dict[str, type[RegionLossOptions]] = _table(RegionLossOptions, NoRegionLoss, RROptions, CeCoOptions)
_REGISTRIES: dict[str, dict[str, Any]] = {"pixel": PIXEL_LOSSES, "region": REGION_LOSSES}


def register_loss(cls: type[_O]) -> type[_O]:
    """Class decorator: register a loss's options class (a dataclass subclassing ``PixelLossOptions`` or
    ``RegionLossOptions``, ``type`` defaulting to its name, ``build`` making the loss) for ``loss.pixel.type`` /
    ``loss.region.type``; the kind is its base's. A name already taken is a ValueError. docs/CONTRIBUTING.md has
    a skeleton."""
    kind = getattr(cls, "KIND", None)
    if kind not in _REGISTRIES:
        raise TypeError(f"{getattr(cls, '__name__', cls)}: a loss's options subclass PixelLossOptions or "
                        "RegionLossOptions")
    _add(_REGISTRIES[kind], PixelLossOptions if kind == "pixel" else RegionLossOptions, cls)
    return cls


def loss_registry(kind: LossKind) -> dict[str, Any]:
    """The registered losses of ``kind`` ("pixel" or "region"): {name: options class}."""
    if kind not in _REGISTRIES:
        raise ValueError(f"loss kind must be 'pixel' or 'region', got {kind!r}")
    return _REGISTRIES[kind]


def list_losses(kind: LossKind) -> list[str]:
    """The names of the registered ``kind`` losses, in registration order."""
    return list(loss_registry(kind))


def loss_class(kind: LossKind, name: str) -> Any:
    """The options class registered as ``name``; an unknown name is a one-line RRSegError naming the known."""
    table = loss_registry(kind)
    if name not in table:
        close = difflib.get_close_matches(str(name), table, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RRSegError(f"unknown {kind} loss {name!r}{hint} (known: {', '.join(table)}); {own_name_hint('loss')}")
    return table[name]


def loss_option_names(cls: type) -> list[str]:
    """The config keys of a loss's options class other than ``type``, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.name != "type"]
