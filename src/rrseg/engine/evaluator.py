"""Inference (whole image or sliding window, multi-scale + flip TTA) and the :class:`Evaluator`: a confusion
matrix, the evaluation report and its files, the one path that the trainer and ``rrseg eval`` share.

As mmsegmentation: the model sees the test-resized image; its class probabilities are resized back to the
label's original size before the argmax, so metrics are computed at the annotation's resolution.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.engine.config import EvalConfig
from rrseg.errors import RRSegError
from rrseg.io import atomic_write_json, atomic_write_text
from rrseg.metrics.confusion import ConfusionMatrix
from rrseg.metrics.groups import PIXEL_PREFIX, ranked_groups
from rrseg.metrics.report import build_report, markdown_report, plot_iou_vs_count
from rrseg.models.segmentor import SIZE_DIVISOR, Segmentor, pad_to_multiple
from rrseg.rebalance.counts import ClassCounts

__all__ = ["Evaluator", "predict_probs"]


def _forward(model: nn.Module, images: Tensor) -> Tensor:
    """Logits at the input size. A Segmentor pads (or not) as its family needs, as mmseg's whole inference
    (none for the paper families); any other model is padded to a multiple of 32 (bottom/right), cropped back."""
    h, w = images.shape[-2:]
    x = images if isinstance(model, Segmentor) else pad_to_multiple(images, SIZE_DIVISOR)
    logits = model(x)
    if not isinstance(logits, Tensor):  # a model left in train mode would return SegOutput
        logits = logits.logits
    if logits.shape[-2:] != x.shape[-2:]:
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits[..., :h, :w]


def _slide(model: nn.Module, images: Tensor, crop: tuple[int, int], stride: tuple[int, int],
           num_classes: int) -> Tensor:
    """mmsegmentation's slide_inference: overlapping crops, logits averaged where they overlap."""
    b, _, h0, w0 = images.shape
    hc, wc = crop
    hs, ws = stride
    if h0 < hc or w0 < wc:  # every window has the crop size (BEiT only accepts that size): pad, crop back after
        images = F.pad(images, (0, max(wc - w0, 0), 0, max(hc - h0, 0)))
    h, w = images.shape[-2:]
    rows = max(h - hc + hs - 1, 0) // hs + 1
    cols = max(w - wc + ws - 1, 0) // ws + 1
    out = images.new_zeros((b, num_classes, h, w))
    count = images.new_zeros((1, 1, h, w))
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * hs + hc, h), min(c * ws + wc, w)
            y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
            out[:, :, y1:y2, x1:x2] += _forward(model, images[:, :, y1:y2, x1:x2]).float()
            count[:, :, y1:y2, x1:x2] += 1
    return (out / count)[..., :h0, :w0]


@torch.no_grad()
def predict_probs(model: nn.Module, images: Tensor, cfg: EvalConfig, num_classes: int,
                  out_size: tuple[int, int] | None = None) -> Tensor:
    """Class probabilities [B, C, H, W] at ``out_size`` (default: the input size), averaged over the
    configured scales and flips."""
    out_size = out_size or tuple(images.shape[-2:])
    total = None
    n = 0
    for scale in cfg.scales:
        x = images
        if scale != 1.0:
            size = (max(1, round(images.shape[-2] * scale)), max(1, round(images.shape[-1] * scale)))
            x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flip in (False, True) if cfg.flip else (False,):
            xi = x.flip(-1) if flip else x
            if cfg.mode == "slide":
                logits = _slide(model, xi, tuple(cfg.crop_size), tuple(cfg.stride), num_classes)
            else:
                logits = _forward(model, xi).float()
            if flip:
                logits = logits.flip(-1)
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
            n += 1
    return total / n


class Evaluator:
    """The evaluation of a run, as the trainer and ``rrseg eval`` share it: built once from the eval config,
    the classes, the ignore index, the class counts and the precision, then run on a model as often as asked.

    The frequency groups (``cfg.group_by`` / ``cfg.group_sizes``, ranked by ``counts``) are computed here, once:
    a config that cannot make them is an RRSegError naming its key at construction, before any training or
    inference. Without ``counts`` the reports have no groups, except LTSS's (``group_by: ltss_*``), which are
    labels of ADE20K-Full's classes, not a ranking of counts (checked against the class names). ``counts_source``
    (where the counts came from, e.g. ``loss.counts``) is named in that error.

    - :meth:`confusion`: the confusion matrix of a model over batches (summed over all processes);
    - :meth:`report`: the report (overall, per group, per class) of a model over batches;
    - :meth:`write`: a report's files (report.json, report.md, the plots).
    """

    def __init__(
        self,
        cfg: EvalConfig,
        num_classes: int,
        ignore_index: int = 255,
        counts: ClassCounts | None = None,
        class_names: Sequence[str] | None = None,
        amp_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        *,
        counts_source: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.counts = counts
        self.class_names = list(class_names) if class_names is not None else None
        self.amp_dtype = amp_dtype
        self.device = torch.device(device)
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if counts is not None and counts.num_classes != self.num_classes:
            raise ValueError(f"class counts for {counts.num_classes} classes, the evaluation has {self.num_classes}")
        self.groups: dict[str, np.ndarray] | None = self._rank(counts, counts_source)

    def _rank(self, counts: ClassCounts | None, counts_source: str | None) -> dict[str, np.ndarray] | None:
        if self.cfg.group_by.startswith("ltss_"):
            return self._ltss_groups()
        if counts is None:
            return None
        sizes = tuple(self.cfg.group_sizes) if self.cfg.group_sizes else None
        try:
            return ranked_groups(counts.image_counts, counts.pixel_counts, self.cfg.group_by, sizes)
        except RRSegError as e:
            source = f" (counts: {counts_source})" if counts_source else ""
            raise RRSegError(f"config key 'eval.group_by': {e}{source}") from None
        except ValueError as e:
            raise RRSegError(f"config key 'eval.group_sizes': {e}") from None

    def _ltss_groups(self) -> dict[str, np.ndarray]:
        """LTSS's frequent / common / rare labels of ADE20K-Full (:func:`rrseg.data.ade20k_full.ltss_groups`), by
        image frequency as the region groups' names, by pixel frequency as the pixel groups' (``pixel_*``)."""
        from rrseg.data.ade20k_full import ade20k_full_classes, ltss_groups

        group_by = self.cfg.group_by
        if self.class_names is None or tuple(self.class_names) != ade20k_full_classes():
            what = (f"{self.num_classes} classes without names" if self.class_names is None else
                    f"{self.num_classes} classes, from {self.class_names[0]!r}")
            raise RRSegError(f"config key 'eval.group_by': {group_by!r} are LTSS's labels of ADE20K-Full's 847 "
                             f"classes (data.val type ade20k_full), but this evaluation has {what}; use region, "
                             "pixel or both")
        groups: dict[str, np.ndarray] = {}
        if group_by in ("ltss_image", "ltss_both"):
            groups.update(ltss_groups("image"))
        if group_by in ("ltss_pixel", "ltss_both"):
            groups.update({PIXEL_PREFIX + k: v for k, v in ltss_groups("pixel").items()})
        return groups

    @torch.no_grad()
    def confusion(self, model: nn.Module, batches: Iterable[dict]) -> ConfusionMatrix:
        """The confusion matrix of ``model`` over ``batches`` (dicts with image [B,3,h,w] and label [B,H,W]),
        summed over all processes. The model is left in the mode it was in."""
        device, amp_dtype, num_classes = self.device, self.amp_dtype, self.num_classes
        was_training = model.training
        model.eval()
        cm = ConfusionMatrix(num_classes, self.ignore_index, device=device)
        try:
            for batch in batches:
                images = batch["image"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    probs = predict_probs(model, images, self.cfg, num_classes, tuple(labels.shape[-2:]))
                cm.update(probs.argmax(1), labels)
        finally:
            model.train(was_training)
        return cm.all_reduce()

    def report(self, model: nn.Module, batches: Iterable[dict]) -> dict:
        """The report of ``model`` over ``batches``: overall, per class and per frequency group (the groups of
        the constructor)."""
        return self.report_of(self.confusion(model, batches))

    def report_of(self, cm: ConfusionMatrix) -> dict:
        """The report of a confusion matrix (of :meth:`confusion`)."""
        counts = self.counts
        return build_report(cm.compute(), self.class_names, None if counts is None else counts.image_counts,
                            pixel_counts=None if counts is None else counts.pixel_counts,
                            group_by=self.cfg.group_by, groups=self.groups)

    @staticmethod
    def write(out: str | os.PathLike, report: dict, name: str, title: str) -> list[str]:
        """report.json, report.md and the IoU-against-region-count plot in ``out`` (with pixel groups, also the
        plot against pixel count); returns the names of the files written."""
        out = Path(out)
        atomic_write_json(out / "report.json", report)
        atomic_write_text(out / "report.md", markdown_report(report, title=title))
        files = ["report.json", "report.md", "iou_vs_count.png"]
        plot_iou_vs_count({name: report}, out / "iou_vs_count.png")
        if "pixel" in report.get("group_ranking", {}).values():  # groups of the pixel ranking (or LTSS's pixel)
            files.append("iou_vs_pixel_count.png")
            plot_iou_vs_count({name: report}, out / "iou_vs_pixel_count.png", count="pixel")
        return files
