"""Region Rebalance for segmentation_models_pytorch models (Unet, FPN, DeepLabV3+, UPerNet, Segformer, DPT, ...).

Wrap the model for training; RR pools the decoder output that feeds the pixel classifier (the last conv of
``segmentation_head``, captured with a forward hook only while a training step runs)::

    import segmentation_models_pytorch as smp
    from rrseg.integrations.smp import RRWrapper

    model = smp.Unet("resnet34", encoder_weights=None, classes=19)
    wrapper = RRWrapper(model, counts="counts.json")           # defaults: the released, frozen RR branch
    optimizer = torch.optim.AdamW(wrapper.parameters(), lr=1e-4)
    for images, labels in loader:
        out = wrapper(images, labels)                          # out.loss = CE + RR; out.losses has both
        out.loss.backward(); optimizer.step(); optimizer.zero_grad()
    torch.save(wrapper.state_dict(), "model.pt")               # the plain model's keys, loads into smp.Unet

Inference is the model's own: ``wrapper(images)`` and ``wrapper.predict(images)`` return exactly what
``model(images)`` returns, and ``wrapper.model`` is the untouched smp model. ``wrapper.state_dict()`` has
the original model's keys (the RR branch is kept apart: ``wrapper.rr.state_dict()`` or
:func:`rrseg.integrations.common.save_rr`), and ``wrapper.load_state_dict`` takes a plain model state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.integrations.common import (
    RROutput,
    build_region_rebalance,
    capture_input,
)
from rrseg.rebalance.counts import ClassCounts, CountsLike
from rrseg.rebalance.pixel import CrossEntropyLoss
from rrseg.rebalance.region import RegionRebalance
from rrseg.types import SegOutput

__all__ = ["RRWrapper", "find_classifier"]

# Submodules of the wrapper that are not part of the wrapped model's checkpoint.
_EXTRA = ("rr", "loss")


def find_classifier(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The pixel classifier of an smp model: the last Conv2d of ``segmentation_head``, with its name."""
    head = getattr(model, "segmentation_head", None)
    if not isinstance(head, nn.Module):
        raise RRSegError(
            f"{type(model).__name__} has no 'segmentation_head'; pass classifier=<the module that maps "
            f"features to class logits>"
        )
    convs = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise RRSegError(f"{type(model).__name__}.segmentation_head has no Conv2d classifier")
    name, conv = convs[-1]
    return f"segmentation_head.{name}" if name else "segmentation_head", conv


def _check_no_activation(model: nn.Module) -> None:
    """The default cross-entropy needs raw logits: refuse models built with an output activation."""
    for module in model.segmentation_head.modules():
        if type(module).__name__ == "Activation":
            inner = getattr(module, "activation", None)
            if inner is not None and not isinstance(inner, nn.Identity):
                raise RRSegError(
                    f"the smp model ends in activation {type(inner).__name__}; the default cross-entropy needs "
                    f"logits: build it with activation=None or pass loss=<a loss for its outputs>"
                )


class _CrossEntropy(nn.Module):
    """Pixel cross-entropy on logits resized to the labels (0 with a graph when every pixel is ignored)."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.term = CrossEntropyLoss(name="loss_seg", ignore_index=ignore_index)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.term(SegOutput(logits), labels)


def _state_dict_post_hook(module: RRWrapper, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """Give the wrapper the wrapped model's state-dict keys; leave the RR branch and loss out."""
    model_prefix = prefix + "model."
    for key in list(state_dict):
        if key.startswith(model_prefix):
            state_dict[prefix + key[len(model_prefix) :]] = state_dict.pop(key)
        elif key.startswith(tuple(f"{prefix}{name}." for name in _EXTRA)):
            del state_dict[key]
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # module versions, keyed by module path
        for key in list(metadata):
            if key == prefix + "model":
                metadata[prefix[:-1]] = metadata.pop(key)
            elif key.startswith(model_prefix):
                metadata[prefix + key[len(model_prefix) :]] = metadata.pop(key)
            elif any(key == prefix + n or key.startswith(f"{prefix}{n}.") for n in _EXTRA):
                del metadata[key]


def _load_state_dict_pre_hook(
    module: RRWrapper,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    """Accept the wrapped model's keys; the RR branch and loss keep their current state."""
    ours = tuple(f"{prefix}{name}." for name in ("model", *_EXTRA))
    for key in list(state_dict):
        if key.startswith(prefix) and not key.startswith(ours):
            state_dict[prefix + "model." + key[len(prefix) :]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in list(metadata):
            if key.startswith(prefix) and not key.startswith(ours):
                metadata.setdefault(prefix + "model." + key[len(prefix) :], metadata[key])
        if prefix[:-1] in metadata:
            metadata.setdefault(prefix + "model", metadata[prefix[:-1]])
    for name in _EXTRA:
        sub = getattr(module, name, None)
        if isinstance(sub, nn.Module):
            for key, value in sub.state_dict(prefix=f"{prefix}{name}.").items():
                state_dict.setdefault(key, value)


class RRWrapper(nn.Module):
    """Training wrapper that adds Region Rebalance to an smp model's loss.

    ``wrapper(images)`` -> the model's output, unchanged. ``wrapper(images, labels)`` -> :class:`RROutput`
    with ``loss = loss(logits, labels) + rr(features, labels)``, ``losses = {"loss_seg", "loss_rr"}``,
    the logits and the captured features; RR adds 0 in eval mode.

    Args:
        model: any smp ``SegmentationModel`` (``classes >= 2``). Models with a classification head return
            ``(masks, labels)``; the loss is computed on the masks and the full output is in ``out.outputs``.
        counts: class counts for the prior (a list of per-class image counts, a tensor, a ``counts.json``
            from ``rrseg stats`` / the synthetic dataset, a released ``*_image_label_stats.txt`` or a
            :class:`~rrseg.rebalance.ClassCounts`). Not needed with ``prior="none"`` or ``rr=``.
        loss: the model's own pixel loss, ``loss(logits, labels) -> scalar``; default cross-entropy with
            ``ignore_index`` (e.g. pass ``smp.losses.DiceLoss("multiclass", ignore_index=255)``).
        rr: a ready :class:`~rrseg.rebalance.RegionRebalance` instead of ``counts`` and options.
        classifier: the module whose input RR pools; default the last Conv2d of ``segmentation_head``.
        ignore_index: the label value of unlabelled pixels.
        **rr_options: RR's options, as ``loss.region`` takes them (:class:`~rrseg.rebalance.RROptions`:
            ``prior``, ``trainable``, ``per_image``, ``smooth``, ``loss_weight``, ``reduce_channels``, ...;
            ``etf=True``: CeCo's, with ``logit_scale``); the branch is built by their ``build``.
    """

    def __init__(
        self,
        model: nn.Module,
        counts: CountsLike | ClassCounts | None = None,
        *,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        rr: RegionRebalance | None = None,
        classifier: nn.Module | None = None,
        ignore_index: int = 255,
        **rr_options: Any,
    ) -> None:
        super().__init__()
        if classifier is None:
            self.classifier_name, conv = find_classifier(model)
        else:
            names = [name for name, m in model.named_modules() if m is classifier]
            if not names:
                raise RRSegError(f"classifier {type(classifier).__name__} is not a submodule of the model")
            self.classifier_name, conv = names[0], classifier
        in_channels = getattr(conv, "in_channels", None) or getattr(conv, "in_features", None)
        num_classes = getattr(conv, "out_channels", None) or getattr(conv, "out_features", None)
        if in_channels is None or num_classes is None:
            raise RRSegError(f"cannot tell the channels of classifier {type(conv).__name__}: pass rr=...")
        if loss is None:
            _check_no_activation(model)
            loss = _CrossEntropy(ignore_index)
        self.model = model
        self.rr = build_region_rebalance(in_channels, num_classes, counts, rr, ignore_index, rr_options)
        self.loss = loss
        self.register_state_dict_post_hook(_state_dict_post_hook)
        self.register_load_state_dict_pre_hook(_load_state_dict_pre_hook)

    @property
    def classifier(self) -> nn.Module:
        return self.model.get_submodule(self.classifier_name)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Any:
        if labels is None:
            return self.model(images)
        with capture_input(self.classifier) as captured:
            outputs = self.model(images)
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        return RROutput.add_rr(self.loss(logits, labels), self.rr, captured.tensor, labels, self.training,
                               logits, outputs)

    def predict(self, images: Tensor) -> Any:
        """The model's own ``predict`` (eval mode, inference mode)."""
        return self.model.predict(images)
