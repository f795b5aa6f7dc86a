"""The authors' released numbers for the region branches, written out here so that the tests check rrseg against
them: nothing below is read from rrseg.

Sources (folder ``GPaCo/Seg/`` of dvlab-research/Parametric-Contrastive-Learning; the short names and commits
are those of docs/FIDELITY.md's file table):

- ``UPerHead_cecol`` (RR) and ``UPerHead_ceco`` (CeCo): ``mmseg/models/decode_heads/uper_head_ceco.py`` (a06df9c)
  L86-90 options, L92-101 prior weights n / sum n, L110 ``img_cls = Sequential(self.dropout, Linear)``,
  L198-199 ``normalize`` (CeCo) -> ``img_cls`` -> ``x scale``, L260 soft-target CE of
  ``logits_img + log(w + 1e-12)`` divided by the number of regions, ``x img_cls_weight``;
  configs ``configs/ceco_ade20k/*_{cecol,ceco}.py`` (2fd1504): Swin-T L15, Swin-B L6;
  the dropout is the decode head's ``dropout_ratio=0.1``: ``configs/_base_/models/upernet_swin.py`` L33.
- The DeepLabV3+ / OCRNet RR heads (``__pycache__/sep_aspp_head_rebalance.cpython-38.pyc``,
  ``ocr_head_rebalance.cpython-38.pyc``, bc5c42e; RR-SPEC's account of their disassembly): ``img_cls`` =
  ``Sequential(self.dropout, Linear)`` (DeepLabV3+, ``deeplabv3plus_r50-d8.py`` L25 ``dropout_ratio=0.1``) or
  ``Sequential(Linear)`` (OCR, ``ocrnet_hr18.py`` L59 ``dropout_ratio=-1``); ``torch.unique(y)`` keeps 255;
  ``loss_decode[0](logits_img + log(w + 1e-12), labels_img, ignore_index=255)`` (hard targets, mean over all
  regions) x ``img_cls_weight``; ``loss_consistency`` x ``consistency_weight``. No config of these heads was
  released: ``img_cls_weight`` and ``consistency_weight`` are unknown (None below).
"""

from __future__ import annotations

PRIOR_EPS = 1e-12  # every released head: log(n / sum n + 1e-12)

# One row per released head configuration. smooth: true-class target probability (1.0 = hard / no smoothing);
# scale: the logit multiplier (UPerHead's ``scale``; CeCo's logit scale); dropout: img_cls's dropout p;
# ignored_region: the ignored pixels are a region (counted in the mean, loss 0); consistency: the head has the
# consistency term (its weight unknown).
RR_UPERHEAD = {"head": "UPerHead_cecol", "etf": False, "smooth": 0.5, "scale": 1.0, "dropout": 0.1,
               "img_cls_weight": 1.0, "ignored_region": False, "consistency": False}
CECO_SWIN_T = {"head": "UPerHead_ceco", "etf": True, "smooth": 1.0, "scale": 5.0, "dropout": 0.1,
               "img_cls_weight": 0.8, "ignored_region": False, "consistency": False}
CECO_SWIN_B = {**CECO_SWIN_T, "img_cls_weight": 0.2}
RR_DEEPLABV3PLUS = {"head": "DepthwiseSeparableASPPHead_rebalance", "etf": False, "smooth": 1.0, "scale": 1.0,
                    "dropout": 0.1, "img_cls_weight": None, "ignored_region": True, "consistency": True}
RR_OCRNET = {**RR_DEEPLABV3PLUS, "head": "OCRHead_rebalance", "dropout": 0.0}

# Every released branch: frozen at its random initialisation, pooled over the per-GPU batch, image-count prior.
COMMON = {"trainable": False, "per_image": False, "prior": "region"}

# rrseg's documented choices where the release has no number (the presets mark them "not released").
UNRELEASED_CHOICES = {"img_cls_weight": 1.0,  # as every released RR config (UPerHead_cecol)
                      "consistency_weight": 0.0}  # the term off: the paper's RR loss has no consistency term

# The released head each preset family follows: (family, method) -> row.
PRESET_HEADS = {
    ("upernet_swin_t", "rr"): RR_UPERHEAD,
    ("upernet_swin_b", "rr"): RR_UPERHEAD,
    ("upernet_swin_t", "ceco"): CECO_SWIN_T,
    ("upernet_swin_b", "ceco"): CECO_SWIN_B,
    ("upernet_convnext_t", "rr"): RR_UPERHEAD,  # no release: the UPerNet head's settings
    ("upernet_beit_b", "rr"): RR_UPERHEAD,
    ("upernet_beit_l", "rr"): RR_UPERHEAD,
    ("deeplabv3plus_r50", "rr"): RR_DEEPLABV3PLUS,
    ("deeplabv3plus_r101", "rr"): RR_DEEPLABV3PLUS,
    ("ocrnet_hr18", "rr"): RR_OCRNET,
    ("ocrnet_hr48", "rr"): RR_OCRNET,
}

# The image-count files released with the paper (``stats/*_image_label_stats.txt``; the released ADE20K configs
# name ``stats/ade20k_image_label_stats.txt``): file name, classes, min, max, sum. ADE20K-Full: none released.
RELEASED_COUNTS = {
    "ade20k": ("ade20k_image_label_stats.txt", 150, 41, 11588, 165120),
    "coco_stuff164k": ("cocostuff164k_image_label_stats.txt", 171, 121, 63965, 965042),
    "ade20k_full": None,
}
