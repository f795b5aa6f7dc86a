"""The long-tail switches of Mask2Former's set criterion: the rebalanced query classifier (its classification loss
against a reference written query by query), LTSS's frequency-based matcher (q_c by hand, the widened assignment
against brute force and scipy on hand-made costs, HF's matcher when every q_c is 1, the criterion reading its
matches), their options, and RR's consistency term refused for mask models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from rrseg.errors import RRSegError
from rrseg.rebalance import ClassCounts, RegionRebalance
from rrseg.rebalance.mask2former import (
    FrequencyMatcher,
    Mask2FormerCriterion,
    Mask2FormerLossOptions,
    frequency_queries,
    repeated_assignment,
    semantic_targets,
)
from rrseg.rebalance.region import RROptions
from rrseg.types import MaskOutput
from tests.rebalance.test_mask2former_loss import C, _labels, _output  # the loss tests' tiny outputs

COUNTS = ClassCounts(np.array([40, 20, 9, 3, 1]), None, 50)


# ------------------------------------------------------------------------------ the rebalanced query classifier


def _reference_class_loss(class_logits, classes, indices, log_prior, unmatched: bool, no_object_weight=0.1):
    """Query by query: the target (the matched mask's class, else no object), the logits with log prior added to the
    C class logits (matched queries, or every query), -log softmax at the target weighted by its class weight (1,
    no object 0.1), summed and divided by the summed weights."""
    b, q, _ = class_logits.shape
    total, weights = 0.0, 0.0
    for i in range(b):
        match = {int(s): int(classes[i][t]) for s, t in zip(*indices[i])}
        for j in range(q):
            logits = class_logits[i, j].detach().double().clone()
            target = match.get(j, C)
            if j in match or unmatched:
                logits[:C] += log_prior.double()
            w = no_object_weight if target == C else 1.0
            total += -w * torch.log_softmax(logits, 0)[target].item()
            weights += w
    return total / weights


@pytest.mark.parametrize("unmatched", [False, True])
def test_the_adjusted_class_loss_query_by_query(unmatched):
    out, labels = _output(layers=1), _labels()
    log_prior = COUNTS.log_prior("region")
    term = Mask2FormerCriterion(C, num_points=100, deep_supervision=False, query_log_prior=log_prior,
                                prior_on_unmatched=unmatched)
    classes, masks = semantic_targets(labels, 255)
    torch.manual_seed(4)  # the matcher's points: the term's matching is this one
    indices = term.criterion.matcher(out.mask_logits.float(), out.class_logits.float(), masks, classes)
    torch.manual_seed(4)
    parts = term(out, labels)
    expected = 2.0 * _reference_class_loss(out.class_logits, classes, indices, log_prior, unmatched)
    assert parts["loss_cls"].item() == pytest.approx(expected, rel=1e-5)
    plain = Mask2FormerCriterion(C, num_points=100, deep_supervision=False)
    torch.manual_seed(4)
    unadjusted = plain(out, labels)
    assert unadjusted["loss_cls"].item() == pytest.approx(
        2.0 * _reference_class_loss(out.class_logits, classes, indices, torch.zeros(C), False), rel=1e-5)
    assert parts["loss_cls"].item() != pytest.approx(unadjusted["loss_cls"].item(), rel=1e-3)
    for name in ("loss_mask", "loss_dice"):  # the prior touches the classification only
        torch.testing.assert_close(parts[name], unadjusted[name])
    parts["loss_cls"].backward()
    assert out.class_logits.grad is not None


def test_the_prior_lifts_the_rare_class_only_in_training():
    """A matched query that scores its (rare) class at the frequent class's level loses more with the prior (the
    rare class's log prior is lower), and the model's output at inference is the same tensor either way (nothing is
    added outside the loss)."""
    labels = torch.full((1, 32, 32), 4)  # class 4: the rarest
    class_logits = torch.full((1, 2, C + 1), -5.0)
    class_logits[0, 0, 4] = class_logits[0, 0, 0] = 3.0  # query 0: the rare class, tied with the frequent one
    class_logits[0, 1, C] = 5.0  # query 1: no object
    mask_logits = torch.full((1, 2, 8, 8), -10.0)
    mask_logits[0, 0] = 10.0
    out = MaskOutput(class_logits=class_logits, mask_logits=mask_logits)
    losses = []
    for prior in (None, COUNTS.log_prior("region")):
        torch.manual_seed(0)
        losses.append(Mask2FormerCriterion(C, num_points=50, deep_supervision=False, query_log_prior=prior,
                                           prior_on_unmatched=False)(out, labels)["loss_cls"].item())
    assert losses[1] > losses[0] + 1.0
    torch.testing.assert_close(out.class_logits, class_logits)


# ------------------------------------------------------------------------------------ the frequency matcher


def test_queries_per_class_as_ltss_computes_them():
    # ADE20K-Full's matcher config: t = 3e-4, s = 2, 25574 images; q = max(1, ceil(2 sqrt(3e-4 x 25574 / n)))
    counts = [13445, 8, 7, 1, 0]
    by_hand = [1, 2, 3, 6, 6]  # 0.048 -> 1; 1.959 -> 2; 2.094 -> 3; 5.540 -> 6; no image: as one
    assert frequency_queries(counts, 25574, 3e-4, 2.0) == by_hand
    for n, q in zip(counts, by_hand):
        f = max(n, 1) / 25574
        assert q == max(1, math.ceil(2.0 * math.sqrt(3e-4 / f)))
    assert frequency_queries([50, 25], 100, t=0.5, s=1.0) == [1, 2]  # 1.0 -> 1; 1.41 -> 2


def _brute_force(cost: np.ndarray, repeats: list[int]) -> float:
    """The least total cost of giving target k ``repeats[k]`` queries (each query one target at most), or, when the
    queries are fewer than the copies, of matching every query to a target that has a copy left."""
    q, k = cost.shape
    slots = [t for t in range(k) for _ in range(repeats[t])]
    best = math.inf
    if len(slots) <= q:  # every copy gets a distinct query
        for queries in itertools.permutations(range(q), len(slots)):
            best = min(best, sum(cost[a, t] for a, t in zip(queries, slots)))
    else:  # every query gets a copy
        for chosen in itertools.permutations(range(len(slots)), q):
            best = min(best, sum(cost[a, slots[s]] for a, s in enumerate(chosen)))
    return best


@pytest.mark.parametrize(("queries", "repeats"), [(6, [2, 1, 3]), (5, [1, 1, 1]), (4, [3, 2]), (3, [1, 4, 1])])
def test_the_widened_assignment_against_brute_force_and_scipy(queries, repeats):
    rng = np.random.default_rng(queries + sum(repeats))
    for _ in range(5):
        cost = rng.random((queries, len(repeats)))
        rows, cols = repeated_assignment(cost, repeats)
        assert len(rows) == min(queries, sum(repeats)) and len(set(rows.tolist())) == len(rows)
        assert list(rows) == sorted(rows)
        taken = np.bincount(cols, minlength=len(repeats))
        assert (taken <= np.asarray(repeats)).all()
        if queries >= sum(repeats):
            assert taken.tolist() == repeats  # enough queries: each target exactly its q_c
        assert cost[rows, cols].sum() == pytest.approx(_brute_force(cost, repeats))
        # scipy on the copies written the other way round (each target's copies side by side)
        columns = [t for t in range(len(repeats)) for _ in range(repeats[t])]
        r, c = linear_sum_assignment(cost[:, columns])
        assert cost[rows, cols].sum() == pytest.approx(cost[r, np.asarray(columns)[c]].sum())


def test_a_rare_target_takes_the_queries_that_suit_it():
    """Hand-made: target 0 (rare, 3 queries) is cheap for queries 1, 3, 4; target 1 (1 query) for query 0; with the
    release's one-to-one matching the rare target keeps only its best query."""
    cost = np.array([[5.0, 0.0], [0.1, 5.0], [9.0, 9.0], [0.2, 4.0], [0.3, 6.0], [8.0, 7.0]])
    rows, cols = repeated_assignment(cost, [3, 1])
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0, 3: 0, 4: 0}
    rows, cols = repeated_assignment(cost, [1, 1])
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}
    with pytest.raises(ValueError, match="one repeat count per target"):
        repeated_assignment(cost, [1, 1, 1])


def test_with_one_query_per_class_it_is_hfs_matcher():
    out, labels = _output(q=8, layers=2), _labels()
    classes, masks = semantic_targets(labels, 255)
    hf = Mask2FormerCriterion(C, num_points=120).criterion.matcher
    ours = FrequencyMatcher([1] * C, 2.0, 5.0, 5.0, num_points=120)
    torch.manual_seed(9)
    expected = hf(out.mask_logits, out.class_logits, masks, classes)
    torch.manual_seed(9)
    got = ours(out.mask_logits, out.class_logits, masks, classes)
    for (a, b), (c, d) in zip(expected, got):
        assert torch.equal(a, c) and torch.equal(b, d)
    # the same random draws, in the same number: the generator is where HF's leaves it
    torch.manual_seed(9)
    ours(out.mask_logits, out.class_logits, masks, classes)
    after_ours = torch.rand(3)
    torch.manual_seed(9)
    hf(out.mask_logits, out.class_logits, masks, classes)
    assert torch.equal(after_ours, torch.rand(3))


def test_each_target_takes_its_classs_queries_and_an_empty_image_none():
    out, labels = _output(q=12, layers=2), _labels()
    labels[1] = 255  # nothing labelled in image 1
    classes, masks = semantic_targets(labels, 255)
    per_class = [1, 1, 2, 3, 4]
    matcher = FrequencyMatcher(per_class, num_points=64)
    torch.manual_seed(0)
    (src0, tgt0), (src1, tgt1) = matcher(out.mask_logits, out.class_logits, masks, classes)
    taken = np.bincount(tgt0.numpy(), minlength=len(classes[0]))
    assert taken.tolist() == [per_class[c] for c in classes[0].tolist()]  # 12 queries: enough for every copy
    assert len(set(src0.tolist())) == len(src0) and src0.dtype == torch.int64
    assert src1.numel() == 0 and tgt1.numel() == 0


def test_the_criterion_reads_the_frequency_matchers_matches():
    """The term's parts are HF's losses on the frequency matcher's matches (several queries per target; the mask
    losses still divided by the number of target masks, as LTSS's SetCriterion)."""
    out, labels = _output(q=10, layers=1), _labels()
    per_class = frequency_queries(COUNTS.image_counts, 50, t=0.1, s=1.0)
    assert per_class == [1, 1, 1, 2, 3]
    term = Mask2FormerCriterion(C, num_points=100, deep_supervision=False, queries_per_class=per_class)
    assert isinstance(term.criterion.matcher, FrequencyMatcher)
    classes, masks = semantic_targets(labels, 255)
    torch.manual_seed(5)
    parts = term(out, labels)
    torch.manual_seed(5)
    indices = term.criterion.matcher(out.mask_logits, out.class_logits, masks, classes)
    assert sum(len(s) for s, _ in indices) > sum(len(c) for c in classes)  # some target took several queries
    num_masks = torch.tensor(float(sum(len(c) for c in classes)))
    losses = {**term.criterion.loss_masks(out.mask_logits, masks, indices, num_masks),
              **term.criterion.loss_labels(out.class_logits, classes, indices)}
    torch.testing.assert_close(parts["loss_mask"], 5.0 * losses["loss_mask"])
    torch.testing.assert_close(parts["loss_dice"], 5.0 * losses["loss_dice"])
    torch.testing.assert_close(parts["loss_cls"], 2.0 * losses["loss_cross_entropy"])


# ------------------------------------------------------------------------------------------------- options


def test_the_options_build_the_switches_from_the_counts():
    plain = Mask2FormerLossOptions(num_points=10).build(None, C)
    assert plain.query_log_prior is None and not isinstance(plain.criterion.matcher, FrequencyMatcher)
    both = Mask2FormerLossOptions(query_prior="region", matcher="frequency", matcher_t=0.1, matcher_s=1.0).build(
        COUNTS, C)
    torch.testing.assert_close(both.query_log_prior[:C], COUNTS.log_prior("region"))
    assert both.query_log_prior[C] == 0 and both.prior_on_unmatched  # every query adjusted
    matched = Mask2FormerLossOptions(query_prior="region_matched").build(COUNTS, C)
    assert not matched.prior_on_unmatched and torch.equal(matched.query_log_prior, both.query_log_prior)
    assert both.criterion.matcher.queries_per_class == [1, 1, 1, 2, 3]
    with pytest.raises(RRSegError, match=r"^loss.pixel \(mask2former\): query_prior 'region' / matcher 'hungarian' "
                                         r"need class counts \(loss.counts\)$"):
        Mask2FormerLossOptions(query_prior="region").build(None, C)
    released = ClassCounts(np.array([40, 20, 9, 3, 1]))  # image counts without the number of images
    with pytest.raises(RRSegError, match=r"^loss.pixel.matcher frequency needs the number of training images"):
        Mask2FormerLossOptions(matcher="frequency").build(released, C)
    assert Mask2FormerLossOptions(query_prior="region").build(released, C).query_log_prior is not None
    with pytest.raises(ValueError, match="queries_per_class needs a count >= 1 per class"):
        Mask2FormerCriterion(C, queries_per_class=[1, 0, 1, 1, 1])


def test_the_config_takes_the_switches():
    from rrseg.engine.config import ConfigError, parse_config

    cfg = parse_config({"model": {"name": "mask2former_tiny"}, "loss": {"pixel": {
        "type": "mask2former", "query_prior": "region", "matcher": "frequency", "matcher_t": 0.01, "matcher_s": 3}}})
    p = cfg.loss.pixel
    assert (p.query_prior, p.matcher, p.matcher_t, p.matcher_s) == ("region", "frequency", 0.01, 3.0)
    with pytest.raises(ConfigError, match=r"loss.pixel.matcher.*'ltss' is not one of hungarian, frequency"):
        parse_config({"loss": {"pixel": {"type": "mask2former", "matcher": "ltss"}}})
    with pytest.raises(ConfigError, match=r"loss.pixel.matcher_t.*0 is not > 0"):
        parse_config({"loss": {"pixel": {"type": "mask2former", "matcher_t": 0}}})


# ---------------------------------------------------------------------------- RR on a mask model's features


def test_rr_pools_the_mask_features_and_refuses_the_consistency_term():
    out, labels = _output(layers=2), _labels()
    rr = RegionRebalance(4, C, COUNTS, dropout=0.0).train()
    torch.testing.assert_close(rr(out, labels), rr(out.features, labels))  # a MaskOutput: its features
    message = (r"^loss.region.consistency_weight: the consistency term needs per-pixel class logits, which a "
               r"mask-classification model \(Mask2Former\) does not have; set it to 0$")
    released = RegionRebalance(4, C, COUNTS, smooth=1.0, consistency_weight=0.5).train()
    with pytest.raises(RRSegError, match=message):
        released(out, labels)
    with pytest.raises(RRSegError, match=message):
        released.check_fits(4, C, pixel_logits=False)
    released.check_fits(4, C)  # a per-pixel model's

    from rrseg.models import build_model

    torch.manual_seed(0)
    model = build_model("mask2former_tiny", C)
    branch = RROptions(smooth=1.0, consistency_weight=0.5).build(model.feature_channels, C, COUNTS)
    with pytest.raises(RRSegError, match=message):
        model.set_rebalance(branch)
    assert model.set_rebalance(RROptions().build(model.feature_channels, C, COUNTS)) is model.rebalance
