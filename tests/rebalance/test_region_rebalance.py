"""RegionRebalance: released defaults, the loss against a from-scratch released-style computation, switches.

The references take their hyper-parameters from the released numbers written in ``released.py`` (never from
the rrseg module they check), the release's prior log(n / sum n + 1e-12), and counts with a zero."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rrseg.rebalance import ClassCounts, CountsError, RegionRebalance, region_pool, simplex_etf
from rrseg.types import SegOutput

from .released import CECO_SWIN_T, PRIOR_EPS, RR_UPERHEAD
from .test_region_pool import naive_region_pool

C = 6
COUNTS = [500, 120, 40, 9, 3, 0]  # includes a zero count


def released_prior(counts=COUNTS) -> torch.Tensor:
    """The release's prior (``uper_head_ceco.py`` L92-101, L260): log(n / sum n + 1e-12)."""
    n = torch.tensor(counts, dtype=torch.float64)
    return torch.log(n / n.sum() + PRIOR_EPS)


def released_loss(rr: RegionRebalance, features, labels, released: dict, mask=None):
    """The released branch written out with ``rr``'s layers (their random weights) and the hyper-parameters of
    ``released`` (a row of released.py): reduce, upsample, one-hot mean, gain, then RR: dropout -> classifier,
    CeCo: L2-normalise -> dropout -> ETF; x scale; + log(n / sum n + 1e-12); soft-target CE with true-class
    probability ``smooth`` over the regions, x img_cls_weight. ``mask``: the dropout mask rrseg's fixed table
    drew ([C, D] rows by class, [B x C, D] by image x C + class per image); None for p = 0."""
    reduced = rr.reduce(features)
    region_f, region_c, region_i = naive_region_pool(reduced, labels, C, per_image=rr.per_image)
    hidden = torch.relu(rr.gain[0](region_f.to(reduced.dtype)))
    drop = 1.0 if mask is None else mask[torch.where(region_i >= 0, region_i * C + region_c, region_c)]
    if released["etf"]:
        logits = (F.normalize(hidden, dim=1) * drop) @ rr.etf_weight.T
    else:
        logits = rr.classifier(hidden * drop)
    logits = released["scale"] * logits + released_prior().to(logits.dtype)
    s = released["smooth"]
    target = torch.full_like(logits, (1 - s) / (C - 1))
    target[torch.arange(len(region_c)), region_c] = s
    return released["img_cls_weight"] * -(target * F.log_softmax(logits, 1)).sum(1).mean()


def batch(seed=0, b=2, d=16, h=8, w=10, big=(32, 40), num_labels=C - 1):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(b, d, h, w, generator=gen)
    labels = torch.randint(0, num_labels, (b, *big), generator=gen)
    labels[torch.rand(b, *big, generator=gen) < 0.1] = 255
    return features, labels


def test_released_defaults():
    rr = RegionRebalance(512, 150, counts="ade20k")
    conv, bn = rr.reduce
    assert conv.weight.shape == (128, 512, 1, 1) and conv.bias is None
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == 128
    assert rr.gain[0].in_features == 128 and rr.gain[0].out_features == 512
    assert isinstance(rr.gain[1], torch.nn.ReLU)
    assert rr.dropout.p == pytest.approx(0.1)
    assert rr.classifier.in_features == 512 and rr.classifier.out_features == 150
    assert rr.smooth == 0.5 and rr.loss_weight == 1.0 and not rr.per_image and not rr.etf
    assert all(not p.requires_grad for p in rr.parameters())
    counts = ClassCounts.load("ade20k").image_counts.astype(float)
    torch.testing.assert_close(rr.log_prior.double(), torch.tensor(counts / counts.sum()).log(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options, released",
    [
        ({}, RR_UPERHEAD),
        ({"per_image": True}, RR_UPERHEAD),
        ({"trainable": True, "smooth": 0.8, "loss_weight": 0.4}, {**RR_UPERHEAD, "smooth": 0.8, "img_cls_weight": 0.4}),
        ({"etf": True, "loss_weight": 0.8}, CECO_SWIN_T),
    ],
    ids=["released", "per_image", "trainable", "ceco"],
)
def test_loss_and_gradients_match_released_computation(options, released):
    """rrseg's defaults (dropout, smoothing, scale) against the released numbers, dropout on: the mask is drawn
    under a shared seed over the fixed table's rows. ``prior_eps`` gives the release's prior (a zero count
    is present in the labels); the default prior differs from it only at zero counts (test below)."""
    torch.manual_seed(0)
    rr = RegionRebalance(16, C, COUNTS, prior_eps=PRIOR_EPS, **options).double().train()
    features, labels = batch(num_labels=C)
    features = features.double().requires_grad_(True)
    state = {k: v.clone() for k, v in rr.state_dict().items()}
    torch.manual_seed(123)
    loss = rr(features, labels)
    (g_fast,) = torch.autograd.grad(loss, features)
    rr.load_state_dict(state)  # same BatchNorm running statistics for the reference pass
    torch.manual_seed(123)
    rows = labels.shape[0] * C if rr.per_image else C
    mask = F.dropout(torch.ones(rows, 512, dtype=torch.float64), p=released["dropout"], training=True)
    ref = released_loss(rr, features, labels, released, mask)
    (g_ref,) = torch.autograd.grad(ref, features)
    # the prior buffer is stored in float32, hence 1e-6 rather than float64 round-off
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-6, atol=1e-9)
    assert rr.last_logits.shape == (len(rr.last_labels), C)


def test_ceco_reference_applies_dropout_after_normalising():
    """``released_loss`` follows the released CeCo order; the earlier order (dropout, then normalise) differs."""
    torch.manual_seed(0)
    rr = RegionRebalance(16, C, COUNTS, etf=True, loss_weight=0.8, prior_eps=PRIOR_EPS).double().train()
    features, labels = batch(num_labels=C)
    features = features.double()
    mask = F.dropout(torch.ones(C, 512, dtype=torch.float64), p=0.5, training=True)
    ref = released_loss(rr, features, labels, CECO_SWIN_T, mask)
    region_f, region_c, _ = naive_region_pool(rr.reduce(features), labels, C)
    hidden = torch.relu(rr.gain[0](region_f)) * mask[region_c]
    logits = 5.0 * F.normalize(hidden, dim=1) @ rr.etf_weight.T + released_prior()
    earlier = 0.8 * F.cross_entropy(logits, region_c)  # smooth 1.0: hard targets
    assert (earlier - ref).abs().item() > 1e-3


def test_default_prior_is_the_released_one_where_no_count_is_zero():
    """Default: log(n / sum n), the release's log(n / sum n + 1e-12) to float32 precision where no count is zero;
    a zero count is taken as 1 (finite, and the others shift by log(sum / (sum + 1))). ``prior_eps=1e-12`` is
    the release's everywhere: log(1e-12) at a zero count."""
    no_zero = [500, 120, 40, 9, 3, 1]
    torch.testing.assert_close(RegionRebalance(16, C, no_zero).log_prior.double(), released_prior(no_zero),
                               rtol=1e-6, atol=1e-6)
    default = RegionRebalance(16, C, COUNTS).log_prior.double()
    exact = RegionRebalance(16, C, COUNTS, prior_eps=PRIOR_EPS).log_prior.double()
    torch.testing.assert_close(exact, released_prior(), rtol=1e-6, atol=1e-6)
    total = sum(COUNTS)
    torch.testing.assert_close(default[:-1], exact[:-1] + math.log(total / (total + 1)), rtol=1e-6, atol=1e-6)
    assert exact[-1].item() == pytest.approx(math.log(1e-12), rel=1e-6) and default[-1].item() > -7


def test_frozen_branch_shapes_only_the_features_and_updates_bn_statistics():
    rr = RegionRebalance(16, C, COUNTS).train()
    features, labels = batch()
    features.requires_grad_(True)
    before = rr.reduce[1].running_mean.clone()
    rr(features, labels).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert all(p.grad is None for p in rr.parameters())
    assert not torch.equal(before, rr.reduce[1].running_mean)


def test_trainable_branch_gets_gradients():
    rr = RegionRebalance(16, C, COUNTS, trainable=True).train()
    features, labels = batch()
    rr(features, labels).backward()
    grads = {n: p.grad for n, p in rr.named_parameters()}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()


def test_eval_mode_costs_nothing_and_changes_nothing():
    rr = RegionRebalance(16, C, COUNTS).eval()
    features, labels = batch()
    state = {k: v.clone() for k, v in rr.state_dict().items()}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = rr(features, labels)
    assert float(out) == 0.0
    ops = {e.name for e in prof.events()}
    assert not ops & {"aten::matmul", "aten::mm", "aten::bmm", "aten::conv2d", "aten::index_add_"}, ops
    assert all(torch.equal(v, rr.state_dict()[k]) for k, v in state.items())


def test_prior_switches():
    counts = ClassCounts(torch.tensor(COUNTS).numpy(), torch.tensor([9, 8, 7, 6, 5, 4]).numpy())
    region = RegionRebalance(16, C, counts)
    pixel = RegionRebalance(16, C, counts, prior="pixel")
    none = RegionRebalance(16, C, prior="none")
    assert torch.isfinite(region.log_prior).all()
    assert torch.allclose(pixel.log_prior, torch.log(torch.tensor([9, 8, 7, 6, 5, 4.0]) / 39))
    assert torch.equal(none.log_prior, torch.zeros(C))
    with pytest.raises(ValueError, match="needs class counts"):
        RegionRebalance(16, C)
    with pytest.raises(CountsError, match="pixel counts"):
        RegionRebalance(16, C, COUNTS, prior="pixel")


def test_zero_counts_never_give_inf_or_nan():
    rr = RegionRebalance(16, C, [0] * C).train()
    features, labels = batch()
    labels[:, :4] = C - 1  # a class whose count is zero is present
    loss = rr(features, labels)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "bad, match", [([1, 2, 3], "3 entries but num_classes is 6"), ([1, -2, 3, 4, 5, 6], "negative")]
)
def test_bad_counts(bad, match):
    with pytest.raises(CountsError, match=match):
        RegionRebalance(16, C, bad)


def test_per_image_pools_each_image_separately():
    rr = RegionRebalance(16, C, COUNTS, per_image=True).train()
    features, labels = batch()
    rr(features, labels)
    present = sum(len(set(labels[i][labels[i] != 255].tolist())) for i in range(2))
    assert len(rr.last_labels) == present
    rr_batch = RegionRebalance(16, C, COUNTS).train()
    rr_batch(features, labels)
    assert len(rr_batch.last_labels) == len(set(labels[labels != 255].tolist()))


def test_all_ignored_gives_zero_loss_with_graph():
    rr = RegionRebalance(16, C, COUNTS).train()
    features = torch.randn(2, 16, 4, 4, requires_grad=True)
    loss = rr(features, torch.full((2, 16, 16), 255))
    loss.backward()
    assert loss.item() == 0.0 and features.grad is not None


def test_accepts_seg_output_as_a_loss_term():
    rr = RegionRebalance(16, C, COUNTS).train()
    features, labels = batch()
    torch.manual_seed(0)
    a = rr(SegOutput(logits=torch.zeros(2, C, 8, 10), features=features), labels)
    torch.manual_seed(0)
    b = rr(features, labels)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no pre-classifier features"):
        rr(SegOutput(logits=torch.zeros(1)), labels)


def test_simplex_etf_geometry():
    w = simplex_etf(512, 150, torch.Generator().manual_seed(0))
    assert w.shape == (150, 512)
    gram = w.double() @ w.double().T
    torch.testing.assert_close(gram.diagonal(), torch.ones(150, dtype=torch.float64), rtol=0, atol=1e-5)
    off = gram[~torch.eye(150, dtype=bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / 149), rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        simplex_etf(10, 20)


def test_ceco_defaults():
    rr = RegionRebalance(16, C, COUNTS, etf=True)
    assert rr.smooth == 1.0 and rr.logit_scale == 5.0 and rr.classifier is None
    assert "etf_weight" in dict(rr.named_buffers())
    # logits are bounded by the scale (unit features . unit rows) plus the prior; dropout comes after the
    # normalisation (as released) and rescales the features, so the bound holds without it
    rr = RegionRebalance(16, C, COUNTS, etf=True, dropout=0.0).train()
    features, labels = batch()
    rr(features, labels)
    bound = 5.0 + rr.log_prior.abs().max() + 1e-4
    assert rr.last_logits.abs().max() <= bound
    assert math.isfinite(float(rr.last_logits.sum()))


def test_half_precision_features():
    rr = RegionRebalance(16, C, COUNTS).train()
    features, labels = batch()
    loss = rr(features.bfloat16(), labels)
    assert torch.isfinite(loss)


class ReleasedBranch(torch.nn.Module):
    """``UPerHead_ceco``'s region branch as released, with its own layers: reduce (conv + BN) -> bilinear
    upsample (align_corners=True) to the labels -> drop 255 -> one-hot mean over the classes present (sorted)
    -> gain (Linear + ReLU) -> RR: Dropout -> Linear | CeCo: L2-normalise -> Dropout -> ETF; x scale;
    then + log(n / sum n + 1e-12) and the soft-target cross-entropy averaged over regions, x img_cls_weight.
    Only the layers' (random) weights come from ``rr``; smooth, scale, dropout p and the loss weight come from
    ``released`` (a row of released.py), the counts from ``counts``."""

    def __init__(self, rr: RegionRebalance, released: dict, counts=COUNTS):
        super().__init__()
        conv, bn = rr.reduce
        self.conv = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(bn.num_features)
        self.gain = torch.nn.Linear(rr.gain[0].in_features, rr.gain[0].out_features)
        self.conv.load_state_dict(conv.state_dict())
        self.bn.load_state_dict(bn.state_dict())
        self.gain.load_state_dict(rr.gain[0].state_dict())
        if released["etf"]:
            self.cls = None
            self.register_buffer("etf", rr.etf_weight.clone())
        else:
            self.cls = torch.nn.Linear(rr.classifier.in_features, rr.classifier.out_features)
            self.cls.load_state_dict(rr.classifier.state_dict())
        self.p, self.scale, self.smooth = released["dropout"], released["scale"], released["smooth"]
        self.img_cls_weight, self.num_classes = released["img_cls_weight"], len(counts)
        n = torch.tensor(counts, dtype=torch.float64)
        self.register_buffer("weight", (n / n.sum()).view(1, -1))  # the release's self.weight (L92-101)
        self.normalise_after_dropout = False  # True: the order rrseg had before (to show the test can fail)

    def forward(self, features, labels, dropout_mask):
        x = self.bn(self.conv(features))
        x = F.interpolate(x, size=labels.shape[-2:], mode="bilinear", align_corners=True)
        x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        y = labels.reshape(-1)
        x, y = x[y != 255], y[y != 255]
        classes = torch.unique(y)  # sorted
        onehot = (y.unsqueeze(1) == classes.unsqueeze(0)).to(x.dtype)
        region = (onehot.T @ x) / onehot.sum(0).unsqueeze(1)
        hidden = torch.relu(self.gain(region))
        mask = dropout_mask[classes]  # this row's mask: the fixed table draws one row per class
        if self.cls is None and self.normalise_after_dropout:
            logits = self.scale * (F.normalize(hidden * mask, dim=1) @ self.etf.T)
        elif self.cls is None:
            logits = self.scale * ((F.normalize(hidden, dim=1) * mask) @ self.etf.T)
        else:
            logits = self.cls(hidden * mask) * self.scale
        # the release's loss (L255-260): smoothed one-hot targets, summed, divided by their sum (= the regions)
        img_onehot = F.one_hot(classes, self.num_classes).to(logits.dtype)
        img_onehot = self.smooth * img_onehot + (1 - self.smooth) / (self.num_classes - 1) * (1 - img_onehot)
        log_p = F.log_softmax(logits + torch.log(self.weight + PRIOR_EPS), dim=1)
        return -(img_onehot * log_p).sum() / (img_onehot.sum() + 1e-12) * self.img_cls_weight


@pytest.mark.parametrize(
    "options, released", [({}, RR_UPERHEAD), ({"etf": True, "loss_weight": 0.8}, CECO_SWIN_T)], ids=["rr", "ceco"]
)
def test_matches_released_forward_with_dropout(options, released):
    """Dropout on (rrseg's default p against the released 0.1): the released order, normalise *before* dropout
    for CeCo, is what rrseg computes. The mask is drawn under a shared seed over the fixed table's C rows;
    the zero-count class is present and rrseg uses the release's prior (prior_eps)."""
    torch.manual_seed(0)
    rr = RegionRebalance(16, C, COUNTS, hidden_channels=32, prior_eps=PRIOR_EPS, **options).double().train()
    ref = ReleasedBranch(rr, released).double().train()
    features, labels = batch(num_labels=C)
    features = features.double().requires_grad_(True)
    torch.manual_seed(123)
    loss = rr(features, labels)
    (g_fast,) = torch.autograd.grad(loss, features)
    torch.manual_seed(123)
    mask = F.dropout(torch.ones(C, 32, dtype=torch.float64), p=released["dropout"], training=True)
    expected = ref(features, labels, mask)
    (g_ref,) = torch.autograd.grad(expected, features)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-6, atol=1e-9)
    # running statistics of the two BatchNorms moved the same way
    torch.testing.assert_close(rr.reduce[1].running_var, ref.bn.running_var)


def test_ceco_with_dropout_before_normalising_would_be_caught():
    """The check above can fail: the earlier order (dropout, then normalise) gives another loss (p=0.5 on both
    sides, to make the order visible)."""
    torch.manual_seed(0)
    rr = RegionRebalance(16, C, COUNTS, dropout=0.5, hidden_channels=32, etf=True, loss_weight=0.8,
                         prior_eps=PRIOR_EPS).double().train()
    ref = ReleasedBranch(rr, {**CECO_SWIN_T, "dropout": 0.5}).double().train()
    features, labels = batch(num_labels=C)
    torch.manual_seed(123)
    loss = rr(features.double(), labels)
    torch.manual_seed(123)
    mask = F.dropout(torch.ones(C, 32, dtype=torch.float64), p=0.5, training=True)
    released = ref(features.double(), labels, mask)
    ref.normalise_after_dropout = True  # the same reference with the earlier order
    earlier = ref(features.double(), labels, mask)
    torch.testing.assert_close(loss, released, rtol=1e-6, atol=1e-9)
    assert (earlier - released).detach().abs().item() > 1e-3


def compact_loss(rr: RegionRebalance, features, labels):
    """The previous training path (present regions only, via ``region_pool``), kept as the reference that the
    fixed-table path must equal."""
    b, _, h, w = features.shape
    conv, bn = rr.reduce
    reduced = bn(torch.matmul(conv.weight.flatten(1), features.flatten(2)).view(b, -1, h, w))
    regions = region_pool(reduced, labels, rr.num_classes, rr.ignore_index, rr.per_image, rr.align_corners)
    hidden = rr.gain(regions.features)
    if rr.etf:
        logits = rr.logit_scale * F.normalize(hidden, dim=1) @ rr.etf_weight.T
    else:
        logits = rr.classifier(hidden)
    logits = logits + rr.log_prior
    if regions.labels.numel() == 0:
        return features.sum() * 0.0
    target = torch.full_like(logits, (1.0 - rr.smooth) / (rr.num_classes - 1))
    target.scatter_(1, regions.labels.unsqueeze(1), rr.smooth)
    return rr.loss_weight * -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


@pytest.mark.parametrize("per_image", [False, True], ids=["batch", "per_image"])
@pytest.mark.parametrize("etf", [False, True], ids=["rr", "ceco"])
@pytest.mark.parametrize("case", ["absent_and_ignored", "one_class", "all_ignored_image"])
def test_fixed_table_equals_present_regions_path(per_image, etf, case):
    torch.manual_seed(0)
    rr = RegionRebalance(16, C, COUNTS, dropout=0.0, per_image=per_image, etf=etf, trainable=True).train()
    features, labels = batch(seed=3)
    if case == "one_class":
        labels = torch.where(labels == 255, 255, 2)
    elif case == "all_ignored_image":
        labels[0] = 255
    labels[labels == 4] = 1  # class 4 and 5 absent
    features.requires_grad_(True)
    state = {k: v.clone() for k, v in rr.state_dict().items()}
    loss = rr(features, labels)
    grads = torch.autograd.grad(loss, [features, *rr.parameters()])
    rr.load_state_dict(state)
    ref = compact_loss(rr, features, labels)
    grads_ref = torch.autograd.grad(ref, [features, *rr.parameters()], allow_unused=True)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-7)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, torch.zeros_like(g) if r is None else r, rtol=1e-4, atol=1e-6)
