"""Pixel loss terms (CE, weighted/aux CE, focal, balanced softmax, BLV) against naive per-pixel formulas.

The references are written here, pixel by pixel, for every averaging the terms offer: the sum of per-pixel
losses (times the class weight) divided by the labelled pixels (``avg_non_ignore=True``, mmseg >= 0.23), by all
pixels, ignored ones included (``False``, mmseg 0.17) or by the labelled pixels' class weights
(``divide_by_weight_sum``, PyTorch's rule).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rrseg.rebalance import (
    BalancedSoftmaxLoss,
    BLVLoss,
    ClassCounts,
    Criterion,
    CrossEntropyLoss,
    FocalLoss,
    class_weights,
)
from rrseg.types import SegOutput

C = 4
IGNORE = 255
PIXEL_COUNTS = np.array([5000, 0, 120, 30])  # class 1 has no pixels: taken as 1
IMAGE_COUNTS = np.array([40, 0, 9, 3])
COUNTS = ClassCounts(IMAGE_COUNTS, PIXEL_COUNTS)


def make(seed=0, logit_hw=(5, 7), label_hw=(5, 7), batch=2, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, C, *logit_hw, generator=g, dtype=torch.float64) * 2).requires_grad_()
    labels = torch.randint(0, C, (batch, *label_hw), generator=g)
    labels[torch.rand(labels.shape, generator=g) < ignore_frac] = IGNORE
    return logits, labels


def naive_resize(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (align_corners=False), one output pixel at a time."""
    b, c, h, w = x.shape
    out = np.zeros((b, c, out_h, out_w))

    def source(i, n_in, n_out):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(math.floor(s), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        return i0, i1, s - i0

    for i in range(out_h):
        y0, y1, fy = source(i, h, out_h)
        for j in range(out_w):
            x0, x1, fx = source(j, w, out_w)
            out[:, :, i, j] = ((1 - fy) * (1 - fx) * x[:, :, y0, x0] + (1 - fy) * fx * x[:, :, y0, x1]
                               + fy * (1 - fx) * x[:, :, y1, x0] + fy * fx * x[:, :, y1, x1])
    return out


def pixels(logits: np.ndarray, labels: np.ndarray):
    """(logit vector, label) of every labelled pixel."""
    b, _, h, w = logits.shape
    for n in range(b):
        for i in range(h):
            for j in range(w):
                y = int(labels[n, i, j])
                if y != IGNORE:
                    yield [float(v) for v in logits[n, :, i, j]], y


def log_softmax(z: list[float], y: int) -> float:
    m = max(z)
    return z[y] - m - math.log(sum(math.exp(v - m) for v in z))


def denominator(labels, divide_by: str, weight=None) -> float:
    """labelled: labelled pixels; all: every pixel of the label map; weights: the labelled pixels' weights."""
    labels = np.asarray(labels)
    if divide_by == "all":
        return float(labels.size)
    valid = [int(y) for y in labels.reshape(-1) if int(y) != IGNORE]
    if divide_by == "weights":
        return sum(1.0 if weight is None else float(weight[y]) for y in valid)
    assert divide_by == "labelled"
    return float(len(valid))


def naive_ce(logits, labels, weight=None, offset=None, divide_by="labelled") -> float:
    num = 0.0
    for z, y in pixels(np.asarray(logits), np.asarray(labels)):
        if offset is not None:
            z = [v + float(o) for v, o in zip(z, offset)]
        w = 1.0 if weight is None else float(weight[y])
        num += -w * log_softmax(z, y)
    return num / denominator(labels, divide_by, weight)


def mmseg017_ce(logits, labels, weight=None) -> float:
    """mmseg 0.17's ``cross_entropy`` order: per-pixel F.cross_entropy (reduction none, class weights), then the
    plain mean of the [B, H, W] map (``weight_reduce_loss`` -> ``reduce_loss``), ignored pixels included as 0."""
    per_pixel = torch.nn.functional.cross_entropy(
        torch.as_tensor(logits), torch.as_tensor(labels).long(), weight=weight, reduction="none",
        ignore_index=IGNORE)
    return per_pixel.mean().item()


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def test_ce_matches_naive():
    logits, labels = make()
    loss = CrossEntropyLoss()(SegOutput(logits), labels)
    assert loss.item() == pytest.approx(naive_ce(np_(logits), labels.numpy()), rel=1e-6)
    assert CrossEntropyLoss(loss_weight=0.4)(SegOutput(logits), labels).item() == pytest.approx(0.4 * loss.item())


def test_ce_over_all_pixels_as_mmseg_017():
    logits, labels = make(seed=20, ignore_frac=0.4)
    n_labelled = int((labels != IGNORE).sum())
    assert 0 < n_labelled < labels.numel()  # the two averages differ on this batch
    loss = CrossEntropyLoss(avg_non_ignore=False, loss_weight=0.7)(SegOutput(logits), labels).item()
    assert loss == pytest.approx(0.7 * naive_ce(np_(logits), labels.numpy(), divide_by="all"), rel=1e-6)
    assert loss == pytest.approx(0.7 * mmseg017_ce(logits.detach(), labels), rel=1e-6)
    labelled = CrossEntropyLoss(avg_non_ignore=True, loss_weight=0.7)(SegOutput(logits), labels).item()
    assert loss == pytest.approx(labelled * n_labelled / labels.numel(), rel=1e-6)


@pytest.mark.parametrize(("logit_hw", "label_hw"), [((3, 4), (7, 9)), ((6, 10), (4, 5)), ((4, 4), (8, 8))])
def test_ce_resizes_logits_to_label_size(logit_hw, label_hw):
    logits, labels = make(seed=1, logit_hw=logit_hw, label_hw=label_hw)
    loss = CrossEntropyLoss()(SegOutput(logits), labels)
    resized = naive_resize(np_(logits), *label_hw)
    assert loss.item() == pytest.approx(naive_ce(resized, labels.numpy()), rel=1e-6)
    loss.backward()
    assert logits.grad.shape == logits.shape and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("options", "divide_by"),
    [({}, "labelled"), ({"avg_non_ignore": False}, "all"), ({"divide_by_weight_sum": True}, "weights")],
)
def test_weighted_ce_matches_naive(options, divide_by):
    logits, labels = make(seed=2)
    weight = class_weights(COUNTS, "log")
    loss = CrossEntropyLoss(weight=weight, **options)(SegOutput(logits), labels).item()
    z, y = np_(logits), labels.numpy()
    assert loss == pytest.approx(naive_ce(z, y, weight=weight.tolist(), divide_by=divide_by), rel=1e-6)
    assert loss != pytest.approx(naive_ce(z, y, divide_by=divide_by), rel=1e-3)  # the weights matter
    others = {"labelled", "all", "weights"} - {divide_by}
    for other in others:  # and so does the denominator
        assert loss != pytest.approx(naive_ce(z, y, weight=weight.tolist(), divide_by=other), rel=1e-3)
    if divide_by == "all":  # mmseg 0.17 with class weights: weighted per-pixel losses over every pixel
        assert loss == pytest.approx(mmseg017_ce(logits.detach(), labels, weight.double()), rel=1e-6)


def test_divide_by_weight_sum_needs_avg_non_ignore():
    with pytest.raises(ValueError, match="avg_non_ignore"):
        CrossEntropyLoss(weight=torch.ones(C), avg_non_ignore=False, divide_by_weight_sum=True)


@pytest.mark.parametrize(("avg_non_ignore", "divide_by"), [(True, "labelled"), (False, "all")])
def test_aux_source(avg_non_ignore, divide_by):
    logits, labels = make(seed=3)
    aux, _ = make(seed=4, logit_hw=(3, 4))
    term = CrossEntropyLoss("loss_aux", loss_weight=0.4, source="aux_logits", avg_non_ignore=avg_non_ignore)
    loss = term(SegOutput(logits, aux_logits=aux), labels)
    expected = 0.4 * naive_ce(naive_resize(np_(aux), 5, 7), labels.numpy(), divide_by=divide_by)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="aux_logits"):
        term(SegOutput(logits), labels)
    with pytest.raises(ValueError, match="source"):
        CrossEntropyLoss(source="features")


def naive_focal(logits, labels, gamma, divide_by="labelled") -> float:
    losses = []
    for z, y in pixels(np.asarray(logits), np.asarray(labels)):
        logp = log_softmax(z, y)
        losses.append(-((1 - math.exp(logp)) ** gamma) * logp)
    return sum(losses) / denominator(labels, divide_by)


@pytest.mark.parametrize("avg_non_ignore", [True, False])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.5])
def test_focal_matches_naive(gamma, avg_non_ignore):
    logits, labels = make(seed=5)
    divide_by = "labelled" if avg_non_ignore else "all"
    loss = FocalLoss(gamma=gamma, loss_weight=0.7, avg_non_ignore=avg_non_ignore)(SegOutput(logits), labels)
    expected = naive_focal(np_(logits), labels.numpy(), gamma, divide_by)
    assert loss.item() == pytest.approx(0.7 * expected, rel=1e-6)
    if gamma == 0.0:
        ce = CrossEntropyLoss(avg_non_ignore=avg_non_ignore)(SegOutput(logits), labels).item()
        assert loss.item() == pytest.approx(0.7 * ce, rel=1e-6)


def test_focal_gradient_matches_autograd_of_naive_formula():
    logits, labels = make(seed=6, batch=1, logit_hw=(2, 3), label_hw=(3, 5))
    FocalLoss(gamma=2.0)(SegOutput(logits), labels).backward()
    ref_logits = logits.detach().clone().requires_grad_()
    z = torch.nn.functional.interpolate(ref_logits, size=(3, 5), mode="bilinear", align_corners=False)
    terms = []
    for i in range(3):
        for j in range(5):
            y = int(labels[0, i, j])
            if y != IGNORE:
                logp = torch.log_softmax(z[0, :, i, j], 0)[y]
                terms.append(-((1 - logp.exp()) ** 2) * logp)
    torch.stack(terms).mean().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("avg_non_ignore", "divide_by"), [(True, "labelled"), (False, "all")])
@pytest.mark.parametrize(("prior", "tau"), [("pixel", 1.0), ("region", 0.5)])
def test_balanced_softmax_matches_naive(prior, tau, avg_non_ignore, divide_by):
    logits, labels = make(seed=7)
    term = BalancedSoftmaxLoss(COUNTS, C, prior=prior, tau=tau, avg_non_ignore=avg_non_ignore)
    loss = term(SegOutput(logits), labels)
    n = [max(int(v), 1) for v in (PIXEL_COUNTS if prior == "pixel" else IMAGE_COUNTS)]
    offset = [tau * math.log(v / sum(n)) for v in n]
    expected = naive_ce(np_(logits), labels.numpy(), offset=offset, divide_by=divide_by)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_balanced_softmax_checks_counts():
    with pytest.raises(ValueError, match="num_classes is 5"):
        BalancedSoftmaxLoss(COUNTS, 5)
    with pytest.raises(ValueError, match="pixel counts"):
        BalancedSoftmaxLoss([1, 2, 3, 4], C, prior="pixel")


def test_class_weights_formulas():
    f = [max(int(v), 1) for v in PIXEL_COUNTS]
    w = class_weights(COUNTS, "log")
    np.testing.assert_allclose(w.numpy(), [1 + math.log(max(f) / v) for v in f], rtol=1e-6)
    assert w[0].item() == pytest.approx(1.0) and torch.isfinite(w).all()
    w = class_weights(COUNTS, "inv_sqrt")
    raw = [1 / math.sqrt(v) for v in f]
    np.testing.assert_allclose(w.numpy(), [r / (sum(raw) / len(raw)) for r in raw], rtol=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    w = class_weights(COUNTS, "log", kind="region")
    g = [max(int(v), 1) for v in IMAGE_COUNTS]
    np.testing.assert_allclose(w.numpy(), [1 + math.log(max(g) / v) for v in g], rtol=1e-6)
    with pytest.raises(ValueError, match="scheme"):
        class_weights(COUNTS, "inverse")


TERMS = {
    "ce": lambda avg: CrossEntropyLoss(avg_non_ignore=avg),
    "weighted_ce": lambda avg: CrossEntropyLoss(weight=class_weights(COUNTS, "inv_sqrt"), avg_non_ignore=avg),
    "weighted_ce_weight_sum": lambda avg: CrossEntropyLoss(weight=class_weights(COUNTS, "inv_sqrt"),
                                                           divide_by_weight_sum=avg, avg_non_ignore=avg),
    "focal": lambda avg: FocalLoss(avg_non_ignore=avg),
    "balanced_softmax": lambda avg: BalancedSoftmaxLoss(COUNTS, C, avg_non_ignore=avg),
    "blv": lambda avg: BLVLoss(COUNTS, C, avg_non_ignore=avg),
}


@pytest.mark.parametrize("avg_non_ignore", [True, False])
@pytest.mark.parametrize("name", list(TERMS))
def test_all_ignored_batch_gives_zero_with_graph(name, avg_non_ignore):
    logits, labels = make(seed=8, logit_hw=(3, 4), label_hw=(6, 8))
    labels[:] = IGNORE
    loss = TERMS[name](avg_non_ignore)(SegOutput(logits), labels)
    assert loss.item() == 0.0 and loss.requires_grad and loss.dim() == 0
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("avg_non_ignore", [True, False])
@pytest.mark.parametrize("name", list(TERMS))
def test_ignored_pixels_do_not_count(name, avg_non_ignore):
    # changing the logits under ignored pixels only changes nothing
    logits, labels = make(seed=9, ignore_frac=0.3)
    term = TERMS[name](avg_non_ignore)
    if name == "blv":
        term.sigma = 0.0
    a = term(SegOutput(logits), labels)
    changed = logits.detach().clone()
    changed[(labels == IGNORE).unsqueeze(1).expand_as(changed)] = 50.0
    b = term(SegOutput(changed), labels)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def blv_scale() -> list[float]:
    f = [max(int(v), 1) for v in PIXEL_COUNTS]
    gap = [math.log(sum(f)) - math.log(v) for v in f]
    return [g / max(gap) for g in gap]


def test_blv_perturbation_formula(monkeypatch):
    logits, labels = make(seed=10)
    term = BLVLoss(COUNTS, C, sigma=4.0)
    np.testing.assert_allclose(term.scale.numpy(), blv_scale(), rtol=1e-6)
    scale = blv_scale()
    out = SegOutput(logits)

    # noise N(0, 1) * sigma, clipped to [-1, 1], absolute value, times the class scale
    draws = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=logits.dtype) * 0.4
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: draws.to(x.dtype))
    delta = (draws * 4.0).clamp(-1, 1).abs().numpy() * np.asarray(scale).reshape(1, C, 1, 1)
    clipped = np.abs(draws.numpy() * 4.0) > 1
    assert clipped.any() and (~clipped).any()  # both branches of the clip are exercised
    expected = naive_ce(np_(logits) + delta, labels.numpy())
    assert term(out, labels).item() == pytest.approx(expected, rel=1e-6)

    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.zeros_like(x))
    assert term(out, labels).item() == pytest.approx(naive_ce(np_(logits), labels.numpy()), rel=1e-6)
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.full_like(x, -100.0))  # |clip| = 1
    assert term(out, labels).item() == pytest.approx(naive_ce(np_(logits), labels.numpy(), offset=scale), rel=1e-6)
    over_all = BLVLoss(COUNTS, C, sigma=4.0, avg_non_ignore=False, loss_weight=0.5)
    expected = naive_ce(np_(logits), labels.numpy(), offset=scale, divide_by="all")
    assert over_all(out, labels).item() == pytest.approx(0.5 * expected, rel=1e-6)


def test_blv_random_loss_lies_within_the_perturbation_bounds():
    # The perturbation d lies in [0, scale_c] per class. CE falls as d_y (the true class) grows and rises as
    # any other d_c grows, so per pixel the loss lies between CE(z + scale_y e_y) and CE(z + scale - scale_y e_y).
    # (CE(z) and CE(z + scale) are NOT bounds in general: d = scale_y e_y goes below both.)
    logits, labels = make(seed=11, logit_hw=(8, 8), label_hw=(8, 8))
    scale = np.asarray(blv_scale())
    z = np_(logits)
    lo = hi = 0.0
    n = 0
    for v, y in pixels(z, labels.numpy()):
        only_true = [a + (scale[c] if c == y else 0.0) for c, a in enumerate(v)]
        only_others = [a + (0.0 if c == y else scale[c]) for c, a in enumerate(v)]
        lo -= log_softmax(only_true, y)
        hi -= log_softmax(only_others, y)
        n += 1
    term = BLVLoss(COUNTS, C)
    torch.manual_seed(0)
    values = [term(SegOutput(logits), labels).item() for _ in range(5)]
    for value in values:
        assert lo / n <= value <= hi / n
    assert len(set(values)) > 1  # the perturbation is random


def test_blv_with_vanishing_sigma_is_plain_ce():
    logits, labels = make(seed=12, logit_hw=(3, 4), label_hw=(5, 7))
    ce = CrossEntropyLoss()(SegOutput(logits), labels).item()
    assert BLVLoss(COUNTS, C, sigma=1e-9)(SegOutput(logits), labels).item() == pytest.approx(ce, rel=1e-6)
    blv = BLVLoss(COUNTS, C, sigma=1e-9, kind="region", loss_weight=0.5)
    assert blv(SegOutput(logits), labels).item() == pytest.approx(0.5 * ce, rel=1e-6)


def test_criterion_names_and_sum():
    logits, labels = make(seed=13)
    aux, _ = make(seed=14, logit_hw=(3, 3))
    crit = Criterion([CrossEntropyLoss(), CrossEntropyLoss("loss_aux", 0.4, source="aux_logits"), FocalLoss()])
    losses = crit(SegOutput(logits, aux_logits=aux), labels)
    assert list(losses) == ["loss_ce", "loss_aux", "loss_focal"]
    assert losses["loss_ce"].item() == pytest.approx(naive_ce(np_(logits), labels.numpy()), rel=1e-6)
    sum(losses.values()).backward()
    assert logits.grad is not None and aux.grad is not None
    with pytest.raises(ValueError, match="unique"):
        Criterion([CrossEntropyLoss(), CrossEntropyLoss()])


def test_default_averaging_is_pytorchs_mean_bit_for_bit():
    # user configs and the demo keep avg_non_ignore=True: the same numbers as before the switch existed
    logits, labels = make(seed=21)
    logits = logits.detach().float()
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
    assert torch.equal(CrossEntropyLoss()(SegOutput(logits), labels), expected)
    assert torch.equal(CrossEntropyLoss("loss_aux", 1.0, source="aux_logits")(SegOutput(logits, aux_logits=logits),
                                                                                 labels), expected)


def test_cpu_logits_become_pixel_rows_without_a_copy():
    from rrseg.rebalance.pixel import class_last

    logits, labels = make(seed=22, logit_hw=(3, 4), label_hw=(6, 8))
    resized = CrossEntropyLoss()._logits(SegOutput(logits), labels)
    assert resized.is_contiguous(memory_format=torch.channels_last) and resized.shape == (2, C, 6, 8)
    rows, flat = class_last(resized, labels)
    assert rows.shape == (2 * 6 * 8, C) and rows.data_ptr() == resized.data_ptr()  # a view
    assert torch.equal(rows, resized.permute(0, 2, 3, 1).reshape(-1, C)) and torch.equal(flat, labels.reshape(-1))
    nchw = logits.detach().float()
    assert class_last(nchw, labels)[0] is nchw  # any other layout passes unchanged


@pytest.mark.parametrize("name", ["ce", "wce", "focal", "bsm"])
def test_pixel_rows_give_the_nchw_loss_and_gradient(name):
    # the CPU path (channels_last resize, softmax over pixel rows) against the same terms computed on NCHW logits
    # by PyTorch's own functions: the values and gradients agree to float32 rounding
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(23)
    base = torch.randn(2, C, 6, 6, generator=g) * 3
    labels = torch.randint(0, C, (2, 24, 24), generator=g)
    labels[:, :3] = IGNORE
    w = class_weights(COUNTS, "inv_sqrt")
    prior = COUNTS.log_prior("pixel").float().view(1, C, 1, 1)
    term = {"ce": CrossEntropyLoss(), "wce": CrossEntropyLoss(weight=w), "focal": FocalLoss(gamma=2.0),
            "bsm": BalancedSoftmaxLoss(COUNTS, C)}[name]

    def reference(x):
        up = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
        valid = labels != IGNORE
        if name == "focal":
            logp = F.log_softmax(up, 1).gather(1, labels.clamp(0, C - 1).unsqueeze(1)).squeeze(1)
            return (-((1 - logp.exp()) ** 2) * logp * valid).sum() / valid.sum()
        if name == "bsm":
            up = up + prior
        return F.cross_entropy(up, labels, weight=w if name == "wce" else None, ignore_index=IGNORE,
                               reduction="sum") / valid.sum()

    x, y = base.clone().requires_grad_(), base.clone().requires_grad_()
    got, want = term(SegOutput(x), labels), reference(y)
    got.backward(), want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-7)
