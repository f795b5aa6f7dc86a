"""Mask2Former (Cheng et al., CVPR 2022) for semantic segmentation: mask classification on timm backbones.

The model predicts ``Q`` (query) masks and a class (or "no object") for each, not a class per pixel. Its parts:

- backbone: a timm model giving strides 4..32 (``TimmBackbone``): ResNet-50 as detectron2's R50 (torchvision's
  layout, BatchNorm frozen as detectron2's default ``FrozenBN``), Swin-T as Mask2Former's ``D2SwinTransformer``
  (rrseg's mmseg-order Swin: the original Swin code's pad-then-shift windows and per-stage output norms), or the
  demo's small ResNet;
- pixel decoder and transformer decoder: Hugging Face transformers' ``Mask2FormerPixelDecoder`` (multi-scale
  deformable-attention encoder over strides 8..32, one FPN level at stride 4, the mask features) and
  ``Mask2FormerTransformerModule`` (masked-attention decoder), HF's port of the release, whose converted
  checkpoints reproduce it, reused rather than ported again; their weights initialised by HF's
  ``Mask2FormerPreTrainedModel._init_weights`` (HF's reading of the release's initialisations);
- the class predictor: ``Linear(hidden, C + 1)`` on every decoder layer's normed queries, as HF's
  ``Mask2FormerForUniversalSegmentation.class_predictor`` and the release's ``class_embed``.

Training returns :class:`rrseg.types.MaskOutput` (class and mask logits of the last layer and of every earlier
one for deep supervision, and the mask features, what RR pools); the set criterion is the loss
``loss.pixel.type: mask2former`` (:mod:`rrseg.rebalance.mask2former`). Eval returns the release's semantic
inference at the input size (:func:`semantic_inference`): class probabilities without "no object" times mask
probabilities, summed over the queries, so the evaluator, predictor and sliding window take it as any model's
scores. Inputs are zero-padded to a multiple of 32 and the scores cropped back (the release's
``SIZE_DIVISIBILITY: 32``).

Needs transformers and scipy (``pip install 'rrseg[hf]'``); they are imported when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrseg.errors import RRSegError
from rrseg.models.backbones import TimmBackbone, resnet_backbone, swin_backbone
from rrseg.models.registry import ModelVariant, register_variants
from rrseg.models.segmentor import Segmentor
from rrseg.types import MaskOutput

__all__ = ["Mask2Former", "Mask2FormerHead", "build_mask2former", "semantic_inference"]

HF_EXTRA = "pip install 'rrseg[hf]'"


def _hf_modules() -> Any:
    try:
        from transformers.models.mask2former import modeling_mask2former
    except ImportError as e:
        raise RRSegError(f"the mask2former models need the transformers package ({e}): {HF_EXTRA}") from None
    return modeling_mask2former



def semantic_inference(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """The release's semantic inference (``MaskFormer.semantic_inference``): per-class scores [B, C, H, W] =
    sum over the queries of P(class | query), "no object" (the last class logit) left out, times the query's
    mask probability (sigmoid of ``mask_logits`` [B, Q, H, W])."""
    probs = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probs, mask_logits.sigmoid())

class Mask2FormerHead(nn.Module):
    """Pixel decoder + transformer decoder + class predictor on backbone maps of strides 4, 8, 16, 32.

    ``forward(feats)`` -> (class logits per decoder layer [B, Q, C + 1], mask logits per layer [B, Q, h, w],
    mask features [B, mask_dim, h, w]), h and w a quarter of the input's; the lists run from the prediction on the
    learnable queries to the last layer's (``decoder_layers`` of each: the release's ``DEC_LAYERS``, its 9 layers
    plus the one on the queries).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        hidden_dim: int = 256,
        mask_dim: int = 256,
        num_queries: int = 100,
        decoder_layers: int = 10,
        num_heads: int = 8,
        decoder_ffn: int = 2048,
        encoder_layers: int = 6,
        encoder_ffn: int = 1024,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"Mask2Former needs 4 backbone maps (strides 4..32), got {len(in_channels)}")
        if decoder_layers < 1 or num_queries < 1:
            raise ValueError(f"Mask2Former needs decoder_layers >= 1 and num_queries >= 1, got {decoder_layers} "
                             f"and {num_queries}")
        hf = _hf_modules()
        # the release's settings that are no options here: no dropout (HF also uses it as the decoder's layer drop
        # probability), post-norm layers, no input projection where widths match, 4 sampling points per level
        self.config = hf.Mask2FormerConfig(
            num_labels=num_classes, feature_size=hidden_dim, mask_feature_size=mask_dim, hidden_dim=hidden_dim,
            encoder_layers=encoder_layers, encoder_feedforward_dim=encoder_ffn, decoder_layers=decoder_layers,
            num_attention_heads=num_heads, dim_feedforward=decoder_ffn, num_queries=num_queries, dropout=0.0,
            pre_norm=False, enforce_input_projection=False, common_stride=4, feature_strides=[4, 8, 16, 32],
        )
        self.pixel_decoder = hf.Mask2FormerPixelDecoder(self.config, feature_channels=list(in_channels))
        self.transformer = hf.Mask2FormerTransformerModule(in_features=hidden_dim, config=self.config)
        self.class_predictor = nn.Linear(hidden_dim, num_classes + 1)
        self.channels = mask_dim  # of the mask features: Segmentor.feature_channels, what RR pools
        self.num_classes = num_classes
        # HF's initialisation, post-order as its PreTrainedModel.initialize_weights (a parent's own rule, e.g. the
        # deformable attention's sampling-offset grid, after its children's defaults)
        self.apply(hf.Mask2FormerPreTrainedModel(self.config)._init_weights)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], Tensor]:
        # the pixel decoder in float32 under mixed precision, as the release's (its forward_features is
        # @autocast(enabled=False) on float inputs); the transformer decoder follows the autocast context
        with torch.autocast(feats[0].device.type, enabled=False):
            pixel = self.pixel_decoder([f.float() for f in feats])
        decoded = self.transformer(list(pixel.multi_scale_features), pixel.mask_features, output_hidden_states=True)
        class_logits = [self.class_predictor(q.transpose(0, 1)) for q in decoded.intermediate_hidden_states]
        return class_logits, list(decoded.masks_queries_logits), pixel.mask_features


class Mask2Former(Segmentor):
    """A :class:`Segmentor` whose decode head classifies masks (:class:`Mask2FormerHead`).

    Training: :class:`rrseg.types.MaskOutput`. Eval: semantic scores [B, C, H, W] at the input size
    (:func:`semantic_inference` on the mask logits upsampled to the padded input, cropped back), the release's
    ``semantic_inference`` before its ``sem_seg_postprocess``. ``training_output = "masks"``: the loss must be
    a set criterion (``loss.pixel.type: mask2former``), not a per-pixel one.
    """

    training_output = "masks"

    def __init__(self, backbone: nn.Module, head: Mask2FormerHead, num_classes: int, *, name: str = "") -> None:
        super().__init__(backbone, head, num_classes, pad_eval=True, name=name)

    def forward(self, images: Tensor) -> MaskOutput | Tensor:
        self._check_input(images)
        h, w = images.shape[-2:]
        x = images if self.training else self._pad_for_eval(images)
        class_logits, mask_logits, mask_features = self.decode_head(self.extract_features(x))
        if self.training:
            return MaskOutput(features=mask_features, class_logits=class_logits[-1], mask_logits=mask_logits[-1],
                              aux_outputs=list(zip(class_logits[:-1], mask_logits[:-1])))
        masks = F.interpolate(mask_logits[-1], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return semantic_inference(class_logits[-1], masks[..., :h, :w])

    def extra_repr(self) -> str:
        head = self.decode_head.config
        return (f"name={self.name!r}, num_classes={self.num_classes}, num_queries={head.num_queries}, "
                f"decoder_layers={head.decoder_layers}, mask_dim={self.feature_channels}")


def build_mask2former(
    name: str,
    backbone: TimmBackbone,
    num_classes: int,
    **head: Any,
) -> Mask2Former:
    """Mask2Former on ``backbone`` (4 maps, strides 4..32); ``head``: :class:`Mask2FormerHead`'s sizes."""
    return Mask2Former(backbone, Mask2FormerHead(backbone.channels, num_classes, **head), num_classes, name=name)


def _create_mask2former(
    name: str,
    num_classes: int,
    *,
    backbone: Callable[..., TimmBackbone],
    hidden_dim: int,
    mask_dim: int,
    num_heads: int,
    decoder_ffn: int,
    encoder_layers: int,
    encoder_ffn: int,
    num_queries: int,
    decoder_layers: int,
    freeze_bn: bool | None = None,  # an option of the ResNet variants only
    drop_path_rate: float | None = None,  # an option of the Swin variant only
) -> Mask2Former:
    """Every variant's builder: ``backbone(...)``, BatchNorm frozen with ``freeze_bn``, under the head."""
    net = backbone() if drop_path_rate is None else backbone(drop_path_rate=drop_path_rate)
    if freeze_bn:
        from timm.layers import freeze_batch_norm_2d

        # detectron2's FrozenBN: ImageNet statistics and affine kept (buffers, so the optimiser never sees them)
        net.model = freeze_batch_norm_2d(net.model)
    return build_mask2former(
        name, net, num_classes, hidden_dim=hidden_dim, mask_dim=mask_dim, num_heads=num_heads,
        decoder_ffn=decoder_ffn, encoder_layers=encoder_layers, encoder_ffn=encoder_ffn, num_queries=num_queries,
        decoder_layers=decoder_layers,
    )


def _demo_resnet(*widths: int, block: str = "basic") -> Callable[..., TimmBackbone]:
    """The small one-block-per-stage ResNets of the DeepLabV3+ family (the demo's, whose packaged weights load
    into it), undilated: strides 4..32, as Mask2Former reads them."""
    from timm.models.resnet import BasicBlock, Bottleneck

    from rrseg.models.deeplabv3plus import _small_resnet

    return partial(_small_resnet(*widths, block=BasicBlock if block == "basic" else Bottleneck), output_stride=32)


# The release's head (configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml): hidden 256, mask 256,
# 8 heads, FFN 2048, 6 encoder layers of FFN 1024 (the pixel decoder's), 100 queries, DEC_LAYERS 10.
_HEAD = dict(hidden_dim=256, mask_dim=256, num_heads=8, decoder_ffn=2048, encoder_layers=6, encoder_ffn=1024)
_OPTIONS = dict(num_queries=100, decoder_layers=10)

register_variants(
    _create_mask2former,
    {
        "mask2former_r50": ModelVariant(
            "Mask2Former R50 (semantic): detectron2's ResNet-50 (torchvision layout, frozen BatchNorm) under the "
            "release's pixel decoder and 9-layer masked-attention decoder, 100 queries.",
            arch=dict(backbone=partial(resnet_backbone, "resnet50", output_stride=32), **_HEAD),
            options=dict(_OPTIONS, freeze_bn=True),
            # the release loads detectron2's conversion of torchvision's R-50.pkl
            pretrained="timm:resnet50.tv_in1k",
        ),
        "mask2former_swin_t": ModelVariant(
            "Mask2Former Swin-T (semantic): Swin-T (window 7, output norms per stage, drop path 0.3) under the "
            "release's pixel decoder and 9-layer masked-attention decoder, 100 queries.",
            arch=dict(backbone=partial(swin_backbone, "swin_tiny_patch4_window7_224"), **_HEAD),
            options=dict(_OPTIONS, drop_path_rate=0.3),
            pretrained="timm:swin_tiny_patch4_window7_224.ms_in1k",  # the official Swin-T weights, converted
        ),
        "mask2former_small": ModelVariant(
            "Small Mask2Former for CPU training on ~96-128 px images: the demo's small ResNet (BasicBlock, 32-256 "
            "wide, rrseg:demo_small_backbone loads into it), undilated, BatchNorm frozen; 64-wide decoders, "
            "2 encoder layers, 16 queries, 3 decoder layers.",
            arch=dict(backbone=_demo_resnet(32, 64, 128, 256), hidden_dim=64, mask_dim=64, num_heads=4,
                      decoder_ffn=256, encoder_layers=2, encoder_ffn=128),
            options=dict(num_queries=16, decoder_layers=4, freeze_bn=True),
        ),
        "mask2former_tiny": ModelVariant(
            "Test-sized Mask2Former, the R50 code at a small width: a one-block-per-stage Bottleneck ResNet with "
            "8-64 planes (outputs 32-256 wide), 32-wide decoders, 1 encoder layer, 8 queries, 2 decoder layers.",
            arch=dict(backbone=_demo_resnet(8, 16, 32, 64, block="bottleneck"), hidden_dim=32, mask_dim=32,
                      num_heads=2, decoder_ffn=64, encoder_layers=1, encoder_ffn=64),
            options=dict(num_queries=8, decoder_layers=3, freeze_bn=True),
        ),
    },
)
