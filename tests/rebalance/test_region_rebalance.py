"""RegionRebalance: released defaults, the loss against a from-scratch released-style computation, switches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rrseg.rebalance import ClassCounts, CountsError, RegionRebalance, simplex_etf
from rrseg.types import SegOutput

from .test_region_pool import naive_region_pool

C = 6
COUNTS = [500, 120, 40, 9, 3, 0]  # includes a zero count


def released_loss(rr: RegionRebalance, features, labels):
    """The released branch written out: module reduce, upsample, one-hot mean, gain, classifier, log prior,
    soft-target CE with true-class probability ``smooth``."""
    reduced = rr.reduce(features)
    region_f, region_c, _ = naive_region_pool(reduced, labels, rr.num_classes, per_image=rr.per_image)
    hidden = rr.dropout(rr.gain(region_f.to(reduced.dtype)))
    if rr.etf:
        logits = rr.logit_scale * F.normalize(hidden, dim=1) @ rr.etf_weight.T
    else:
        logits = rr.classifier(hidden)
    n = torch.tensor(COUNTS, dtype=torch.float64).clamp(min=1)
    logits = logits + torch.log(n / n.sum()).to(logits.dtype)
    target = torch.full_like(logits, (1 - rr.smooth) / (rr.num_classes - 1))
    target[torch.arange(len(region_c)), region_c] = rr.smooth
    return rr.loss_weight * -(target * F.log_softmax(logits, 1)).sum(1).mean()


def batch(seed=0, b=2, d=16, h=8, w=10, big=(32, 40)):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(b, d, h, w, generator=gen)
    labels = torch.randint(0, C - 1, (b, *big), generator=gen)
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
    "options",
    [
        {},
        {"per_image": True},
        {"trainable": True, "smooth": 0.8, "loss_weight": 0.4},
        {"etf": True, "loss_weight": 0.8},
    ],
    ids=["released", "per_image", "trainable", "ceco"],
)
def test_loss_and_gradients_match_released_computation(options):
    torch.manual_seed(0)
    rr = RegionRebalance(16, C, COUNTS, dropout=0.0, **options).double().train()
    features, labels = batch()
    features = features.double().requires_grad_(True)
    state = {k: v.clone() for k, v in rr.state_dict().items()}
    loss = rr(features, labels)
    (g_fast,) = torch.autograd.grad(loss, features)
    rr.load_state_dict(state)  # same BatchNorm running statistics for the reference pass
    ref = released_loss(rr, features, labels)
    (g_ref,) = torch.autograd.grad(ref, features)
    # the prior buffer is stored in float32, hence 1e-6 rather than float64 round-off
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-6, atol=1e-9)
    assert rr.last_logits.shape == (len(rr.last_labels), C)


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
    # logits are bounded by the scale (unit features . unit rows) plus the prior
    rr.train()
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
