"""The release's DeepLabV3+ / OCRNet RR heads (``sep_aspp_head_rebalance``, ``ocr_head_rebalance``; compiled files
only, RR-SPEC) against rrseg's RR with the options that reproduce them: ``smooth=1.0`` (hard targets),
``prior_eps=1e-12``, ``ignored_region=True``, ``consistency_weight``, and the head's dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rrseg.models import build_model
from rrseg.rebalance import RegionRebalance
from rrseg.types import SegOutput

from .released import PRIOR_EPS, RR_DEEPLABV3PLUS, RR_OCRNET

C = 6
COUNTS = [500, 120, 40, 9, 3, 0]  # class 5 has a zero count, and it is present in the labels below
HIDDEN = 32
IMG_CLS_WEIGHT = 0.7  # not released: any value, given to both sides


class ReleasedCNNHead(torch.nn.Module):
    """The region branch and losses of ``DepthwiseSeparableASPPHead_rebalance`` / ``OCRHead_rebalance`` as RR-SPEC
    reads them, in the release's order of operations, with its own layers (weights copied from ``rr``).

    forward: reduce (conv + BN) -> bilinear upsample (align_corners=True) to the label size -> for each value of
    ``torch.unique(y)`` (255 included) the mean feature of its pixels -> gain (Linear + ReLU) -> ``img_cls``
    (DeepLabV3+: dropout + Linear; OCR: Linear). losses: the seg logits resized to the label size (mmseg's
    ``resize``, align_corners=False); mmseg 0.17's CE of ``logits_img + log(w + 1e-12)`` with ignore_index=255
    (per-region losses, then the mean over all K) x img_cls_weight; plus consistency_weight x
    -sum(onehot(own region) * log(softmax(seg_logits @ logits_img.T) + 1e-12)) / (labelled pixels + 1e-12)."""

    def __init__(self, rr: RegionRebalance, released: dict, counts, img_cls_weight, consistency_weight):
        super().__init__()
        conv, bn = rr.reduce
        self.conv = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(bn.num_features)
        self.gain = torch.nn.Linear(rr.gain[0].in_features, rr.gain[0].out_features)
        self.img_cls = torch.nn.Linear(rr.classifier.in_features, rr.classifier.out_features)
        self.conv.load_state_dict(conv.state_dict())
        self.bn.load_state_dict(bn.state_dict())
        self.gain.load_state_dict(rr.gain[0].state_dict())
        self.img_cls.load_state_dict(rr.classifier.state_dict())
        self.num_classes = rr.classifier.out_features
        self.p = released["dropout"]
        self.img_cls_weight, self.consistency_weight = img_cls_weight, consistency_weight
        n = torch.tensor(counts, dtype=torch.float64)
        self.register_buffer("weight", (n / n.sum()).view(1, -1))

    def forward(self, features, seg_logit, seg_label, dropout_mask=None):
        c = self.num_classes
        h, w = seg_label.shape[-2:]
        pixel_features = self.bn(self.conv(features))
        pixel_features = F.interpolate(pixel_features, size=(h, w), mode="bilinear", align_corners=True)
        pixel_features = pixel_features.permute(0, 2, 3, 1)
        y = seg_label
        samples, labels = [], []
        for cls_index in torch.unique(y):
            samples.append(pixel_features[y == cls_index, :].mean(dim=0))
            labels.append(cls_index)
        features_img = torch.stack(samples, dim=0)
        labels_img = torch.stack(labels)
        img_x = torch.relu(self.gain(features_img))
        if self.p > 0:  # the mask rrseg's fixed table drew for these rows (255 is the table's row C)
            img_x = img_x * dropout_mask[torch.where(labels_img == 255, c, labels_img)]
        logits_img = self.img_cls(img_x)

        seg_logit = F.interpolate(seg_logit, size=(h, w), mode="bilinear", align_corners=False)
        per_region = F.cross_entropy(logits_img + torch.log(self.weight + PRIOR_EPS), labels_img,
                                     reduction="none", ignore_index=255)
        loss = self.img_cls_weight * per_region.mean()
        labels_pix = torch.eq(y.reshape(-1, 1), labels_img.view(-1, 1).T).to(logits_img.dtype)
        logits_sim = F.softmax(seg_logit.permute(0, 2, 3, 1).contiguous().view(-1, c) @ logits_img.T, dim=1)
        pix_index = y.reshape(-1) != 255
        consistency = (-labels_pix[pix_index] * torch.log(logits_sim[pix_index] + 1e-12)).sum()
        consistency = consistency / ((y != 255).sum() + 1e-12)
        return loss + self.consistency_weight * consistency


def batch(seed=0, b=2, d=16, h=8, w=10, big=(32, 40), ignored=0.1):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(b, d, h, w, generator=gen, dtype=torch.float64)
    seg_logit = 2 * torch.randn(b, C, h, w, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, C, (b, *big), generator=gen)  # every class, the zero-count one too
    labels[torch.rand(b, *big, generator=gen) < ignored] = 255
    return features, seg_logit, labels


def released_rr(released: dict, consistency_weight: float, **options) -> RegionRebalance:
    """rrseg's RR set up as the released head's row says (the values come from the table, not from rrseg)."""
    settings = {"smooth": released["smooth"], "prior_eps": PRIOR_EPS, "ignored_region": released["ignored_region"],
                "dropout": released["dropout"], **options}
    return RegionRebalance(16, C, COUNTS, hidden_channels=HIDDEN, loss_weight=IMG_CLS_WEIGHT,
                           consistency_weight=consistency_weight, **settings).double().train()


def compare(rr, ref, features, seg_logit, labels, seed=123):
    features = features.clone().requires_grad_(True)
    seg_logit = seg_logit.clone().requires_grad_(True)
    torch.manual_seed(seed)
    loss = rr(SegOutput(logits=seg_logit, features=features), labels)
    grads = torch.autograd.grad(loss, [features, seg_logit], allow_unused=True)
    torch.manual_seed(seed)
    mask = F.dropout(torch.ones(C + 1, HIDDEN, dtype=torch.float64), p=ref.p, training=True)
    expected = ref(features, seg_logit, labels, mask)
    grads_ref = torch.autograd.grad(expected, [features, seg_logit], allow_unused=True)
    return loss, expected, grads, grads_ref


@pytest.mark.parametrize("case", ["mixed", "no_ignored_pixel", "one_class_and_ignored"])
@pytest.mark.parametrize("consistency_weight", [0.0, 1.3], ids=["img_cls_only", "with_consistency"])
@pytest.mark.parametrize("released", [RR_DEEPLABV3PLUS, RR_OCRNET], ids=["deeplabv3plus", "ocrnet"])
def test_matches_the_released_cnn_heads(released, consistency_weight, case):
    torch.manual_seed(0)
    rr = released_rr(released, consistency_weight)
    ref = ReleasedCNNHead(rr, released, COUNTS, IMG_CLS_WEIGHT, consistency_weight).double().train()
    features, seg_logit, labels = batch(ignored=0.0 if case == "no_ignored_pixel" else 0.1)
    if case == "one_class_and_ignored":
        labels = torch.where(labels == 255, 255, C - 1)  # the zero-count class alone, with ignored pixels
    loss, expected, grads, grads_ref = compare(rr, ref, features, seg_logit, labels)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)
    for g, r in zip(grads, grads_ref):  # without the consistency term the pixel logits get none (0 x term)
        torch.testing.assert_close(torch.zeros_like(r) if g is None else g, r, rtol=1e-6, atol=1e-9)
    assert (grads[1] is None) == (consistency_weight == 0.0)
    torch.testing.assert_close(rr.reduce[1].running_var, ref.bn.running_var)
    has_ignored = bool((labels == 255).any())
    assert rr.last_labels.tolist() == sorted(set(labels.unique().tolist()))  # torch.unique's regions, 255 last
    assert (rr.last_labels == 255).any().item() == has_ignored


def test_each_released_option_changes_the_loss():
    """The reference can fail: without any one of the options rrseg computes another loss."""
    features, seg_logit, labels = batch()
    torch.manual_seed(0)
    base = released_rr(RR_OCRNET, 1.3)
    ref = ReleasedCNNHead(base, RR_OCRNET, COUNTS, IMG_CLS_WEIGHT, 1.3).double().train()
    state = {k: v.clone() for k, v in base.state_dict().items() if k != "log_prior"}  # same layers
    _, expected, _, _ = compare(base, ref, features, seg_logit, labels)
    for change in [{"smooth": 0.5}, {"prior_eps": None}, {"ignored_region": False}]:
        torch.manual_seed(0)
        rr = released_rr(RR_OCRNET, 1.3, **change)
        rr.load_state_dict(state, strict=False)
        loss = rr(SegOutput(logits=seg_logit, features=features), labels)
        assert (loss - expected).abs().item() > 1e-4, change


def test_default_rr_is_unchanged_by_the_new_options_being_off():
    """prior_eps=None, ignored_region=False, consistency_weight=0 is the default path, bit for bit."""
    features, seg_logit, labels = batch()
    torch.manual_seed(0)
    default = RegionRebalance(16, C, COUNTS).double().train()
    torch.manual_seed(0)
    explicit = RegionRebalance(16, C, COUNTS, prior_eps=None, ignored_region=False,
                               consistency_weight=0.0).double().train()
    torch.manual_seed(1)
    a = default(SegOutput(logits=seg_logit, features=features), labels)
    torch.manual_seed(1)
    b = explicit(features, labels)
    assert torch.equal(a, b)
    assert repr(default) == repr(explicit)


def test_consistency_needs_pixel_logits_and_batch_pooling():
    features, seg_logit, labels = batch()
    rr = released_rr(RR_DEEPLABV3PLUS, 1.0)
    with pytest.raises(ValueError, match="consistency_weight needs the pixel logits"):
        rr(features, labels)
    assert torch.isfinite(rr(features, labels, logits=seg_logit))
    with pytest.raises(ValueError, match="per_image=False"):
        RegionRebalance(16, C, COUNTS, consistency_weight=1.0, per_image=True)
    with pytest.raises(ValueError, match="prior_eps must be > 0"):
        RegionRebalance(16, C, COUNTS, prior_eps=0.0)


def test_all_ignored_batch_gives_zero_loss_with_graph():
    rr = released_rr(RR_DEEPLABV3PLUS, 1.0)
    features = torch.randn(2, 16, 4, 4, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(2, C, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = rr(SegOutput(logits=logits, features=features), torch.full((2, 16, 16), 255))
    loss.backward()
    assert loss.item() == 0.0 and features.grad is not None


@pytest.mark.parametrize("name", ["deeplabv3plus_tiny", "ocrnet_tiny"])
def test_in_a_model_the_consistency_term_trains_the_decoder(name):
    """As a criterion term the branch reads the SegOutput's features and logits; both losses reach the decoder."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=C)
    model.set_rebalance(RegionRebalance(model.feature_channels, C, COUNTS, smooth=1.0, prior_eps=PRIOR_EPS,
                                        ignored_region=True, consistency_weight=1.0, dropout=0.0))
    model.train()
    images = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, C, (2, 64, 64))
    labels[:, :8] = 255
    out = model(images)
    loss = model.rebalance(out, labels)
    assert torch.isfinite(loss)
    loss.backward()
    classifier_grads = [p.grad for n, p in model.named_parameters() if "conv_seg" in n or "cls" in n]
    assert classifier_grads and any(g is not None and g.abs().sum() > 0 for g in classifier_grads)
