"""Pieces the framework integrations share: capturing a classifier's input, building RR for a model,
the result of one RR training step, and saving the RR branch apart from the model.

RR needs the exact tensor that feeds a model's pixel classifier. Most models do not return it, but every
one of them calls a classifier module with it, so a forward pre-hook on that module records it without
touching the model's code, weights or outputs. The hook lives only inside a ``with capture_input(...)``
block, so the model is left exactly as it was outside training steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.rebalance.counts import ClassCounts, CountsLike
from rrseg.rebalance.region import RegionRebalance, rr_options

__all__ = ["InputCapture", "RROutput", "build_region_rebalance", "capture_input", "load_rr", "rr_loss", "save_rr"]


class InputCapture:
    """Records the first positional input of ``module`` on each call while the capture is active.

    Use it as a context manager: ``with capture_input(model.decode_head.classifier) as cap: model(x)``,
    then ``cap.tensor`` is the classifier's input of that forward pass (with its autograd graph).
    """

    def __init__(self, module: nn.Module, what: str = "classifier") -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"capture_input needs an nn.Module, got {type(module).__name__}")
        self.module = module
        self.what = what
        self.inputs: list[Tensor] = []
        self._handle: Any = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor):
            self.inputs.append(args[0])

    def __enter__(self) -> InputCapture:
        self.inputs = []
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def tensor(self) -> Tensor:
        """The single captured input; an error if the module ran zero or several times."""
        if len(self.inputs) != 1:
            raise RRSegError(
                f"expected the {self.what} ({type(self.module).__name__}) to run once in the forward pass, "
                f"it ran {len(self.inputs)} times; pass the module that reads the final features explicitly"
            )
        return self.inputs[0]


def capture_input(module: nn.Module, what: str = "classifier") -> InputCapture:
    """Context manager that records the input of ``module`` during the forward passes inside it."""
    return InputCapture(module, what)


@dataclass
class RROutput:
    """One training step: the total ``loss`` to backpropagate, its named parts, and the model's logits.

    ``losses`` holds the parts, with their graphs (``loss_seg``: the model's own loss, ``loss_rr``: RR);
    ``features`` is the captured pre-classifier tensor; ``outputs`` is whatever the model returned.
    """

    loss: Tensor
    logits: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    features: Tensor | None = None
    outputs: Any = None

    @classmethod
    def add_rr(cls, loss_seg: Tensor, rr: RegionRebalance, features: Tensor, labels: Tensor, training: bool,
               logits: Tensor, outputs: Any) -> RROutput:
        """The model's own loss plus RR on its captured features, as one step's output."""
        loss_rr = rr_loss(rr, features, labels, training)
        return cls(loss=loss_seg + loss_rr, logits=logits, losses={"loss_seg": loss_seg, "loss_rr": loss_rr},
                   features=features, outputs=outputs)


def build_region_rebalance(
    in_channels: int,
    num_classes: int,
    counts: CountsLike | ClassCounts | None,
    rr: RegionRebalance | None,
    ignore_index: int,
    options: dict[str, Any],
) -> RegionRebalance:
    """The branch for a classifier reading ``in_channels`` channels and predicting ``num_classes`` classes: the
    given ``rr`` once it passes the fit check the engine makes too (``RegionRebalance.check_fits``), else one
    built, as the engine builds it, by the typed options (``rr_options(**options).build``)."""
    if rr is not None:
        if counts is not None or options:
            raise ValueError("pass either a ready RegionRebalance (rr=...) or counts and RR options, not both")
        rr.check_fits(in_channels, num_classes)
        return rr
    return rr_options(**options).build(in_channels, num_classes, counts, ignore_index)


def rr_loss(rr: RegionRebalance, features: Tensor, labels: Tensor, training: bool) -> Tensor:
    """RR on ``features`` in the model's mode (0 when not training), with the branch on the features' device."""
    if rr.log_prior.device != features.device:
        rr.to(features.device)
    if rr.training != training:
        rr.train(training)
    return rr(features, labels)


def save_rr(rr: RegionRebalance, path: str | os.PathLike) -> None:
    """Write the RR branch (weights, BatchNorm statistics, prior) to a safetensors file, atomically."""
    from rrseg.io import write_safetensors

    write_safetensors(path, rr.state_dict(), metadata={"format": "pt", "rrseg": "region_rebalance"})


def load_rr(rr: RegionRebalance, path: str | os.PathLike) -> RegionRebalance:
    """Load a branch written by :func:`save_rr` into ``rr`` (same sizes and options)."""
    from rrseg.io import read_safetensors

    if not os.path.isfile(path):
        raise RRSegError(f"{path}: RR state file not found")
    state, _ = read_safetensors(path, device=str(rr.log_prior.device))
    try:
        rr.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise RRSegError(f"{path}: does not fit this RegionRebalance ({first[-1].strip() if first else e})") from None
    return rr


def trainable_parameters(module: nn.Module) -> list[torch.nn.Parameter]:
    """Parameters of ``module`` that need an optimizer (none for the default frozen RR branch)."""
    return [p for p in module.parameters() if p.requires_grad]
