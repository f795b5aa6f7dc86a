"""One interface for every model family: backbone -> (neck) -> decode head -> pixel classifier.

Training mode returns :class:`rrseg.types.SegOutput` with the logits at decoder resolution, the exact
tensor the pixel classifier reads (what Region Rebalance pools) and the auxiliary head's logits, so that
every loss is composed outside the model. Eval mode returns logits upsampled to the input size.

RR (or CeCo) is attached with ``model.set_rebalance(branch)`` as ``model.rebalance``, a
:class:`rrseg.rebalance.RegionRebalance` (built by ``RROptions(...).build(...)`` or directly) that the training
criterion calls as ``model.rebalance(out, labels)``; it takes no part in ``forward``, so eval outputs are the
same with or without it, and :meth:`Segmentor.inference_state_dict` drops its parameters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.types import SegOutput

__all__ = ["SIZE_DIVISOR", "Segmentor", "pad_to_multiple"]

SIZE_DIVISOR = 32  # every backbone here downsamples by 32 at most: eval inputs are padded to a multiple of it


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Zero-pad [..., H, W] at the bottom and right to multiples of ``multiple`` (the caller crops back)."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(images, (0, pw, 0, ph)) if ph or pw else images


class Segmentor(nn.Module):
    """Backbone (list of NCHW maps) -> optional neck -> decode head (features) -> ``conv_seg`` (logits).

    Attributes: ``num_classes``; ``feature_channels`` (channels of ``SegOutput.features``); ``output_stride``
    (of the training logits, 4 for every family here); ``aux_loss_weight`` (weight of the auxiliary CE,
    0.4 as mmseg, or 0.0 without an auxiliary head); ``rebalance`` (RegionRebalance or None);
    ``num_layers`` (number of layer-decay ids, or None if the family defines none); ``size_divisor``
    (training inputs must be multiples of it); ``input_size`` (a required (H, W), or None); ``pad_eval``
    (eval inputs are zero-padded to a multiple of ``size_divisor`` and the logits cropped back: only for models
    whose layers need it, as smp's decoders; mmseg's whole-image inference pads nothing, so the paper
    families, whose modules take any size as mmseg's do, set it False).
    With ``cascade=True`` (OCRNet) the auxiliary head also runs in eval, and its logits are the soft
    object regions the decode head reads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        num_classes: int,
        *,
        neck: nn.Module | None = None,
        auxiliary_head: nn.Module | None = None,
        aux_loss_weight: float = 0.4,
        cascade: bool = False,
        size_divisor: int = SIZE_DIVISOR,
        input_size: tuple[int, int] | None = None,
        output_stride: int = 4,
        pad_eval: bool = True,
        name: str = "",
    ) -> None:
        super().__init__()
        if cascade and auxiliary_head is None:
            raise ValueError("a cascade segmentor needs an auxiliary head")
        self.backbone = backbone
        self.neck = neck
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.num_classes = int(num_classes)
        self.feature_channels = int(decode_head.channels)
        self.aux_loss_weight = float(aux_loss_weight) if auxiliary_head is not None else 0.0
        self.cascade = cascade
        self.size_divisor = int(size_divisor)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.output_stride = int(output_stride)
        self.pad_eval = bool(pad_eval)
        self.name = name
        self.rebalance: nn.Module | None = None  # set_rebalance attaches the branch (after every other module)

    # ----------------------------------------------------------------------------------------------- setup
    def set_rebalance(self, branch: nn.Module | None) -> nn.Module | None:
        """Attach the RR / CeCo branch (with None remove it): a module built for this model's features, e.g.
        ``RegionRebalance(model.feature_channels, model.num_classes, counts, **options)`` or a config's
        ``loss.region.build(model.feature_channels, model.num_classes, counts)``; checked to fit."""
        if branch is not None:
            if not isinstance(branch, nn.Module):  # the setting of earlier versions: {"type": "rr", ...}
                raise RRSegError(
                    f"set_rebalance takes a built branch or None, not a {type(branch).__name__}: "
                    "model.set_rebalance(RegionRebalance(model.feature_channels, model.num_classes, counts, "
                    "**options)) (etf=True for ceco)"
                )
            if getattr(self, "training_output", "logits") == "logits":
                branch.check_fits(self.feature_channels, self.num_classes)
            else:  # a mask classifier: its mask features pooled, no pixel logits
                branch.check_fits(self.feature_channels, self.num_classes, pixel_logits=False)
        self.rebalance = branch
        return branch

    def inference_state_dict(self) -> dict[str, Tensor]:
        """The state dict without the training-only ``rebalance.*`` entries (what an exported model holds)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("rebalance.")}

    @property
    def num_layers(self) -> int | None:
        return getattr(self.backbone, "num_layers", None)

    def layer_id(self, param_name: str) -> int:
        """Layer-wise lr-decay id of a parameter: 0 (patch embedding) .. ``num_layers - 1`` (heads).

        The usual scale is ``decay ** (num_layers - 1 - layer_id)`` (timm and mmseg). Defined for BEiT
        (mmseg's BEiT ids) and ConvNeXt (mmseg's stage-wise ids); other families raise RRSegError.
        """
        if self.num_layers is None:
            raise RRSegError(
                f"model {self.name or type(self).__name__!r} defines no layer ids for layer-wise lr decay"
            )
        if param_name.startswith("backbone."):
            return self.backbone.layer_id(param_name[len("backbone.") :])
        return self.num_layers - 1

    def no_weight_decay(self) -> set[str]:
        """Full names of parameters that take no weight decay by timm's rules (position embeddings, class
        token, relative position tables). Norm layers and biases are left to the optimiser builder."""
        names = set()
        if hasattr(self.backbone, "no_weight_decay"):
            names = {f"backbone.{n}" for n in self.backbone.no_weight_decay()}
        return names

    # --------------------------------------------------------------------------------------------- forward
    def extract_features(self, images: Tensor) -> list[Tensor]:
        feats = self.backbone(images)
        return list(self.neck(feats)) if self.neck is not None else list(feats)

    def _check_input(self, images: Tensor) -> None:
        if images.dim() != 4:
            raise RRSegError(f"{self.name}: expected images [B, C, H, W], got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if not self.training:
            return
        if self.input_size is not None and (h, w) != self.input_size:
            raise RRSegError(
                f"{self.name}: training input {h}x{w} must be exactly "
                f"{self.input_size[0]}x{self.input_size[1]} "
                "(the size the model was built with; set img_size to the crop size)"
            )
        if h % self.size_divisor or w % self.size_divisor:
            raise RRSegError(
                f"{self.name}: training input {h}x{w} is not a multiple of {self.size_divisor}; "
                "crop to a multiple"
            )

    def _pad_for_eval(self, images: Tensor) -> Tensor:
        if self.input_size is None:
            return pad_to_multiple(images, self.size_divisor) if self.pad_eval else images
        h, w = images.shape[-2:]
        th, tw = self.input_size
        if h > th or w > tw:
            raise RRSegError(
                f"{self.name}: input {h}x{w} is larger than the {th}x{tw} the model was built for; "
                "use sliding-window inference with that crop size"
            )
        if (th, tw) == (h, w):
            return images
        return F.pad(images, (0, tw - w, 0, th - h))

    def forward(self, images: Tensor) -> SegOutput | Tensor:
        self._check_input(images)
        h, w = images.shape[-2:]
        x = images if self.training else self._pad_for_eval(images)
        feats = self.extract_features(x)
        aux_logits = None
        if self.auxiliary_head is not None and (self.training or self.cascade):
            aux_logits = self.auxiliary_head(feats)
        if self.cascade:
            features = self.decode_head.forward_features(feats, aux_logits)
        else:
            features = self.decode_head.forward_features(feats)
        logits = self.decode_head.cls_seg(features)
        if self.training:
            return SegOutput(logits=logits, features=features, aux_logits=aux_logits)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w]

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_classes={self.num_classes}, feature_channels={self.feature_channels}, "
            f"aux_loss_weight={self.aux_loss_weight}, cascade={self.cascade}"
        )
