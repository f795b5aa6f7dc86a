"""Region Rebalance for HF transformers segmentation models (UperNet, BEiT, Segformer, Mask2Former, ...), in a
custom loop or with the HF ``Trainer``.

RR pools the tensor that feeds the decode head's pixel classifier (``model.decode_head.classifier``),
recorded by a forward hook during the training forward pass. The model itself is not changed: its own
loss (pixel CE, plus the auxiliary head's for UperNet and BEiT) is computed as usual and RR is added.
The RR branch lives outside the model, so ``save_pretrained`` / ``from_pretrained`` work as before.

``Mask2FormerForUniversalSegmentation`` classifies masks, not pixels: the same semantic ``labels`` [B, H, W] are
turned into its ``mask_labels`` / ``class_labels`` (one binary mask per class present, ignored pixels
(``config.ignore_value``) in none: :func:`rrseg.rebalance.mask2former.semantic_targets`), its own loss (the set
criterion) is computed as usual, and RR pools ``pixel_decoder_last_hidden_state``, the per-pixel mask embeddings
every mask is a dot product with (its width ``config.mask_feature_size``). The long-tail switches of rrseg's set
criterion (the rebalanced query classifier, LTSS's frequency-based matcher) replace the model's own loss by rrseg's
criterion at the model's config weights: ``criterion=mask2former_criterion_for(model, counts, query_prior="region")``.

Custom loop::

    from rrseg.integrations.transformers import compute_loss, region_rebalance_for

    rr = region_rebalance_for(model, counts="counts.json")          # sized from model.config
    for batch in loader:                                            # pixel_values [B,3,H,W], labels [B,H,W]
        out = compute_loss(model, rr, batch["pixel_values"], batch["labels"])
        out.loss.backward()                                         # model loss + RR; parts in out.losses

HF Trainer::

    trainer = RRTrainer(model=model, args=args, train_dataset=ds, rr=region_rebalance_for(model, counts))
    trainer.train()   # logs loss_rr next to loss; saves region_rebalance.safetensors with each checkpoint
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.integrations.common import (
    RROutput,
    build_region_rebalance,
    capture_input,
    load_rr,
    save_rr,
    trainable_parameters,
)
from rrseg.rebalance.counts import ClassCounts, CountsLike
from rrseg.rebalance.mask2former import Mask2FormerCriterion, Mask2FormerLossOptions
from rrseg.rebalance.region import RegionRebalance
from rrseg.schema import Checker

try:
    from transformers import Trainer
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rrseg.integrations.transformers needs the transformers package: pip install 'rrseg[hf]'"
    ) from e

__all__ = [
    "RR_STATE_NAME",
    "RRTrainer",
    "compute_loss",
    "find_classifier",
    "ignore_index_of",
    "is_mask_classifier",
    "mask2former_criterion_for",
    "region_rebalance_for",
]

RR_STATE_NAME = "region_rebalance.safetensors"


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def find_classifier(model: nn.Module) -> nn.Module:
    """The decode head's pixel classifier (``decode_head.classifier``), not the auxiliary head's."""
    model = _unwrap(model)
    head = getattr(model, "decode_head", None)
    classifier = getattr(head, "classifier", None)
    if not isinstance(classifier, nn.Module):
        raise RRSegError(
            f"{type(model).__name__} has no decode_head.classifier; pass classifier=<the module that maps the "
            f"final features to class logits>"
        )
    return classifier


def is_mask_classifier(model: nn.Module) -> bool:
    """Whether ``model`` is HF's ``Mask2FormerForUniversalSegmentation`` (trained on mask and class labels)."""
    from transformers import Mask2FormerForUniversalSegmentation

    return isinstance(_unwrap(model), Mask2FormerForUniversalSegmentation)


def ignore_index_of(config: Any) -> int:
    """The label value the model's own loss ignores (UperNet: loss_ignore_index; BEiT, Segformer:
    semantic_loss_ignore_index; Mask2Former: ignore_value), so that RR drops the same pixels."""
    for name in ("loss_ignore_index", "semantic_loss_ignore_index", "ignore_value"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return 255


def _channels(classifier: nn.Module) -> tuple[int, int]:
    in_ch = getattr(classifier, "in_channels", None) or getattr(classifier, "in_features", None)
    out_ch = getattr(classifier, "out_channels", None) or getattr(classifier, "out_features", None)
    if in_ch is None or out_ch is None:
        raise RRSegError(f"cannot tell the channels of classifier {type(classifier).__name__}")
    return int(in_ch), int(out_ch)


def region_rebalance_for(
    model: nn.Module,
    counts: CountsLike | ClassCounts | None = None,
    *,
    classifier: nn.Module | None = None,
    **rr_options: Any,
) -> RegionRebalance:
    """A ``RegionRebalance`` sized for ``model``: its classifier's input channels, ``config.num_labels``
    classes and the ignore index of its own loss (Mask2Former: its mask features' channels,
    ``config.mask_feature_size``). ``rr_options``: RR's options, as ``loss.region`` takes them
    (``rrseg.rebalance.RROptions``: ``prior``, ``trainable``, ``per_image``, ``smooth``, ``loss_weight``, ...;
    ``etf=True``: CeCo's), and ``ignore_index`` to override the config's."""
    config = getattr(_unwrap(model), "config", None)
    if classifier is None and is_mask_classifier(model):
        in_channels, num_classes = int(config.mask_feature_size), int(config.num_labels)
    else:
        classifier = classifier if classifier is not None else find_classifier(model)
        in_channels, num_classes = _channels(classifier)
    ignore_index = rr_options.pop("ignore_index", ignore_index_of(config))
    rr = build_region_rebalance(in_channels, num_classes, counts, None, ignore_index, rr_options)
    if classifier is None and is_mask_classifier(model):
        rr.check_fits(in_channels, num_classes, pixel_logits=False)  # no pixel logits for a consistency term
    param = next(_unwrap(model).parameters(), None)
    return rr.to(param.device) if param is not None else rr


def mask2former_criterion_for(
    model: nn.Module,
    counts: CountsLike | ClassCounts | None = None,
    **options: Any,
) -> Mask2FormerCriterion:
    """rrseg's set criterion for HF's ``Mask2FormerForUniversalSegmentation`` at its config's weights (class, mask,
    dice, no-object, points, deep supervision as HF's loss always has it) and ignore value, with ``options`` of
    ``loss.pixel`` (``rrseg.rebalance.mask2former.Mask2FormerLossOptions``: ``query_prior="region"``,
    ``matcher="frequency"``, ``matcher_t``, ``matcher_s``); ``counts`` as ``loss.counts`` (the frequency matcher's
    with the number of images). Pass it to :func:`compute_loss` / :class:`RRTrainer` as ``criterion=``."""
    if not is_mask_classifier(model):
        raise RRSegError(f"mask2former_criterion_for needs a Mask2FormerForUniversalSegmentation, got "
                         f"{type(_unwrap(model)).__name__}")
    config = _unwrap(model).config
    valid = ("query_prior", "matcher", "matcher_t", "matcher_s", "loss_weight")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise RRSegError(f"unknown Mask2Former criterion option {unknown[0]!r}; options: {', '.join(valid)} (the "
                         "others come from the model's config)")
    loss = Checker(noun="option").build(Mask2FormerLossOptions, {  # checked as a config's loss.pixel
        "class_weight": config.class_weight, "mask_weight": config.mask_weight, "dice_weight": config.dice_weight,
        "no_object_weight": config.no_object_weight, "num_points": config.train_num_points,
        "oversample_ratio": config.oversample_ratio, "importance_sample_ratio": config.importance_sample_ratio,
        **options})
    return loss.build(counts, int(config.num_labels), ignore_index_of(config))


def compute_loss(
    model: nn.Module,
    rr: RegionRebalance,
    pixel_values: Tensor,
    labels: Tensor,
    *,
    classifier: nn.Module | None = None,
    criterion: Mask2FormerCriterion | None = None,
    **model_kwargs: Any,
) -> RROutput:
    """One forward pass: the model's own loss plus RR on its pre-classifier features.

    Returns :class:`~rrseg.integrations.common.RROutput`: ``loss`` (to backpropagate), ``losses``
    (``loss_seg`` = the model's loss, ``loss_rr``), ``logits`` (the model's, at its own resolution),
    ``features`` and the model's full ``outputs``. RR follows the model's mode: 0 in eval mode.
    Mask2Former: ``labels`` become its mask and class labels; ``logits`` are its semantic scores [B, C, h, w]
    at mask resolution (:func:`rrseg.models.mask2former.semantic_inference`), ``features`` its
    ``pixel_decoder_last_hidden_state``; with ``criterion`` (:func:`mask2former_criterion_for`) ``loss_seg`` is
    rrseg's criterion on its outputs instead of its own loss, and ``losses`` hold its parts too (``loss_cls``,
    ``loss_mask``, ``loss_dice``).
    """
    if classifier is None and is_mask_classifier(model):
        return _mask_classifier_loss(model, rr, pixel_values, labels, criterion, **model_kwargs)
    if criterion is not None:
        raise RRSegError(f"criterion= is rrseg's Mask2Former set criterion, for a Mask2FormerForUniversalSegmentation; "
                         f"got {type(_unwrap(model)).__name__}")
    classifier = classifier if classifier is not None else find_classifier(model)
    with capture_input(classifier) as captured:
        outputs = model(pixel_values=pixel_values, labels=labels, **model_kwargs)
    loss_seg = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
    if loss_seg is None:
        raise RRSegError(f"{type(_unwrap(model)).__name__} returned no loss for the given labels")
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
    return RROutput.add_rr(loss_seg, rr, captured.tensor, labels, model.training, logits, outputs)


def _mask_classifier_loss(model: nn.Module, rr: RegionRebalance, pixel_values: Tensor, labels: Tensor,
                          criterion: Mask2FormerCriterion | None, **model_kwargs: Any) -> RROutput:
    """:func:`compute_loss` for Mask2Former: its set criterion (or rrseg's, ``criterion``) on labels made from the
    semantic map, plus RR on its mask features."""
    from rrseg.models.mask2former import semantic_inference
    from rrseg.rebalance.mask2former import semantic_targets
    from rrseg.types import MaskOutput

    config = _unwrap(model).config
    if criterion is None:
        classes, masks = semantic_targets(labels, ignore_index_of(config), int(config.num_labels))
        masks = [m.to(pixel_values.dtype) for m in masks]
        outputs = model(pixel_values=pixel_values, mask_labels=masks, class_labels=classes, **model_kwargs)
        loss_seg, parts = outputs.loss, {}
    else:  # every decoder layer's predictions, for rrseg's criterion (HF's own loss supervises them all too)
        outputs = model(pixel_values=pixel_values, output_auxiliary_logits=True, **model_kwargs)
        out = MaskOutput(class_logits=outputs.class_queries_logits, mask_logits=outputs.masks_queries_logits,
                         aux_outputs=[(a["class_queries_logits"], a["masks_queries_logits"])
                                      for a in outputs.auxiliary_logits or []],
                         features=outputs.pixel_decoder_last_hidden_state)
        parts = criterion(out, labels)  # in eval mode too, as the model's own loss
        loss_seg = sum(parts.values())
    logits = semantic_inference(outputs.class_queries_logits, outputs.masks_queries_logits)
    result = RROutput.add_rr(loss_seg, rr, outputs.pixel_decoder_last_hidden_state, labels, model.training, logits,
                             outputs)
    result.losses.update(parts)
    return result


class RRTrainer(Trainer):
    """HF ``Trainer`` whose training loss is the model's loss plus Region Rebalance.

    Pass ``rr=region_rebalance_for(model, counts, ...)`` (and for Mask2Former, to train it with rrseg's set
    criterion and its switches, ``criterion=mask2former_criterion_for(model, counts, ...)``). Batches need
    ``pixel_values`` and ``labels``.
    A trainable RR branch joins the optimizer (weight decay on its weights, none on norms and biases;
    single process only, as its gradients are not synchronised);
    ``loss_rr`` is logged next to ``loss``; each saved checkpoint/model folder gets ``region_rebalance.safetensors``
    (the model's own files are unchanged) and resuming from a checkpoint restores it.
    """

    # compute_loss returns a per-batch mean; the Trainer divides it across gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, rr: RegionRebalance, classifier: nn.Module | None = None,
                 criterion: Mask2FormerCriterion | None = None, **kwargs: Any) -> None:
        if not isinstance(rr, RegionRebalance):
            raise TypeError(f"rr must be a RegionRebalance, got {type(rr).__name__}")
        super().__init__(*args, **kwargs)
        if self.args.n_gpu > 1:
            raise RRSegError(
                f"RRTrainer needs one device per process, but the Trainer would use DataParallel over "
                f"{self.args.n_gpu} GPUs: launch with torchrun (DDP) instead"
            )
        if self.args.world_size > 1 and trainable_parameters(rr):
            raise RRSegError(
                "a trainable RR branch lives outside the DDP-wrapped model, so its gradients would not be "
                "averaged across processes: use the frozen default (trainable=False) for multi-process training"
            )
        self.rr = rr.to(self.args.device)
        self.rr_classifier = classifier
        self.rr_criterion = criterion
        self._rr_sum = torch.zeros((), device=self.args.device)
        self._rr_steps = 0

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        if "labels" not in inputs or "pixel_values" not in inputs:
            raise RRSegError(f"RRTrainer batches need 'pixel_values' and 'labels', got keys {sorted(inputs)}")
        extra = {k: v for k, v in inputs.items() if k not in ("pixel_values", "labels")}
        out = compute_loss(
            model, self.rr, inputs["pixel_values"], inputs["labels"], classifier=self.rr_classifier,
            criterion=self.rr_criterion, **extra
        )
        if model.training:
            self._rr_sum = self._rr_sum + out.losses["loss_rr"].detach()
            self._rr_steps += 1
        return (out.loss, out.outputs) if return_outputs else out.loss

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        params = trainable_parameters(self.rr)
        if fresh and params:
            decay = [p for p in params if p.dim() > 1]
            no_decay = [p for p in params if p.dim() <= 1]
            for group, wd in ((decay, self.args.weight_decay), (no_decay, 0.0)):
                if group:
                    optimizer.add_param_group({"params": group, "weight_decay": wd})
        return optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._rr_steps:
            logs["loss_rr"] = round(float(self._rr_sum) / self._rr_steps, 6)
            self._rr_sum = torch.zeros_like(self._rr_sum)
            self._rr_steps = 0
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            save_rr(self.rr, os.path.join(output_dir or self.args.output_dir, RR_STATE_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, RR_STATE_NAME)
        if os.path.isfile(path):
            load_rr(self.rr, path)
