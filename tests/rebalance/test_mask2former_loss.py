"""Mask2Former's set criterion as a loss term: the semantic inference (against a naive loop), the semantic targets
from a label map (ADE20K-Full's ids above 255 included), the term against HF's own Mask2FormerLoss.forward with the
release's weights, the matching finding the right query wherever it is, deep supervision, and the model / loss
pairing the engine checks."""

from __future__ import annotations

import pytest
import torch

from rrseg.errors import RRSegError
from rrseg.rebalance.mask2former import (
    Mask2FormerCriterion,
    Mask2FormerLossOptions,
    semantic_targets,
)
from rrseg.types import MaskOutput, SegOutput

C = 5


def test_targets_one_mask_per_present_class_ignored_pixels_in_none():
    labels = torch.tensor([[[3, 3, 255, 0],
                            [1, 3, 255, 0]],
                           [[255, 255, 255, 255],
                            [255, 255, 255, 255]]], dtype=torch.uint8)
    classes, masks = semantic_targets(labels, 255)
    assert classes[0].tolist() == [0, 1, 3] and classes[0].dtype == torch.int64
    assert masks[0].dtype == torch.float32 and masks[0].shape == (3, 2, 4)
    assert masks[0].tolist() == [[[0, 0, 0, 1], [0, 0, 0, 1]],
                                 [[0, 0, 0, 0], [1, 0, 0, 0]],
                                 [[1, 1, 0, 0], [0, 1, 0, 0]]]
    assert masks[0].sum(0)[labels[0] == 255].eq(0).all()  # the ignored pixels: in no mask
    assert classes[1].numel() == 0 and masks[1].shape == (0, 2, 4)  # nothing labelled


def test_targets_for_ade20k_full_ids_above_255_and_255_a_class():
    labels = torch.tensor([[[846, 300, 255, 65535],
                            [256, 300, 0, 65535]]], dtype=torch.int64)
    classes, masks = semantic_targets(labels, 65535, num_classes=847)
    assert classes[0].tolist() == [0, 255, 256, 300, 846]
    for k, c in enumerate(classes[0].tolist()):
        assert torch.equal(masks[0][k].bool(), labels[0] == c)
    assert masks[0][:, :, 3].sum() == 0
    with pytest.raises(RRSegError, match=r"^label 846 is not a class of this 300-class model \(nor the ignore index "
                                         r"65535\)$"):
        semantic_targets(labels, 65535, num_classes=300)


def _output(b: int = 2, q: int = 6, h: int = 8, layers: int = 3, seed: int = 0) -> MaskOutput:
    g = torch.Generator().manual_seed(seed)
    preds = [(torch.randn(b, q, C + 1, generator=g, requires_grad=True),
              torch.randn(b, q, h, h, generator=g, requires_grad=True)) for _ in range(layers)]
    return MaskOutput(features=torch.randn(b, 4, h, h, generator=g), class_logits=preds[-1][0],
                      mask_logits=preds[-1][1], aux_outputs=preds[:-1])


def _labels(b: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (b, size // 8, size // 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    labels[:, :4] = 255
    return labels


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_the_term_is_hfs_criterion_with_the_releases_weights(deep_supervision):
    """Against HF's Mask2FormerLoss.forward (last layer, then the earlier ones, each matched anew), weighted as
    HF's model weights it (class 2, mask 5, dice 5; no-object 0.1), with the same random points (same seed)."""
    from transformers import Mask2FormerConfig
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

    out, labels = _output(), _labels()
    term = Mask2FormerLossOptions(num_points=200, deep_supervision=deep_supervision).build(None, C, 255)
    torch.manual_seed(7)
    parts = term(out, labels)
    assert set(parts) == {"loss_cls", "loss_mask", "loss_dice"}

    config = Mask2FormerConfig(num_labels=C, train_num_points=200)
    hf = Mask2FormerLoss(config, weight_dict={})
    classes, masks = semantic_targets(labels, 255)
    aux = [{"class_queries_logits": c, "masks_queries_logits": m} for c, m in out.aux_outputs]
    torch.manual_seed(7)
    losses = hf(out.mask_logits, out.class_logits, masks, classes, aux if deep_supervision else None)
    assert len(losses) == 3 * (3 if deep_supervision else 1)
    for ours, theirs, weight in (("loss_cls", "loss_cross_entropy", 2.0), ("loss_mask", "loss_mask", 5.0),
                                 ("loss_dice", "loss_dice", 5.0)):
        expected = weight * sum(v for k, v in losses.items() if k.startswith(theirs))
        torch.testing.assert_close(parts[ours], expected)
    sum(parts.values()).backward()
    layers = [(out.class_logits, out.mask_logits), *(out.aux_outputs if deep_supervision else [])]
    assert all(c.grad is not None and m.grad is not None for c, m in layers)
    if not deep_supervision:
        assert all(c.grad is None for c, _ in out.aux_outputs)


def test_matching_finds_the_right_query_wherever_it_is():
    """Independent of HF: one query per image predicts its class and mask (large logits; a class that fills the
    image), the others no object. Whichever queries do it, the loss is the same (seeded: the same points), the
    class CE about 0; the mask terms only see the points that the sampling blurs at the map's border. A wrong
    class or an empty mask on the matched query costs what it should."""
    labels = torch.stack([torch.full((32, 32), 3), torch.full((32, 32), 1)])
    q = 6
    term = Mask2FormerCriterion(C, num_points=300, deep_supervision=False)

    def predict(queries, mask_value=20.0):
        class_logits = torch.full((2, q, C + 1), -20.0)
        class_logits[:, :, C] = 20.0  # no object
        mask_logits = torch.full((2, q, 8, 8), -20.0)
        for b, (query, c) in enumerate(zip(queries, (3, 1))):
            class_logits[b, query, C], class_logits[b, query, c] = -20.0, 20.0
            mask_logits[b, query] = mask_value
        return MaskOutput(class_logits=class_logits, mask_logits=mask_logits)

    results = []
    for queries in ((0, 1), (4, 2), (5, 5)):
        torch.manual_seed(0)
        results.append(term(predict(queries), labels))
    assert results[0]["loss_cls"] < 1e-6
    for other in results[1:]:
        assert all(torch.equal(results[0][k], other[k]) for k in results[0])
    torch.manual_seed(0)
    empty = term(predict((4, 2), mask_value=-20.0), labels)  # right class, empty mask
    assert empty["loss_mask"] > 5 * results[0]["loss_mask"] and empty["loss_dice"] > 5 * results[0]["loss_dice"]
    # a wrong class on one matched query: CE 40 there, a weighted mean over the 12 queries (the 2 matched weigh 1,
    # the 10 no-object ones 0.1), x 2: 2 x 40 / (2 + 10 x 0.1) = 26.7
    wrong = predict((4, 2))
    wrong.class_logits[0, 4] = wrong.class_logits[0, 4].roll(1)
    torch.testing.assert_close(term(wrong, labels)["loss_cls"], torch.tensor(80 / 3), rtol=1e-3, atol=0)


def test_loss_weight_scales_every_part_and_a_pixel_output_is_refused():
    out, labels = _output(), _labels()
    term = Mask2FormerCriterion(C, num_points=100, loss_weight=0.5)
    torch.manual_seed(3)
    half = term(out, labels)
    term.loss_weight = 1.0
    torch.manual_seed(3)
    full = term(out, labels)
    for name in full:
        torch.testing.assert_close(half[name], 0.5 * full[name])
    with pytest.raises(RRSegError, match=r"^loss_mask2former: Mask2Former's set criterion needs a mask-classification "
                                         r"model's output \(class and mask logits\), got SegOutput$"):
        term(SegOutput(torch.zeros(2, C, 8, 8)), labels)


def test_the_engine_pairs_models_and_losses():
    from types import SimpleNamespace

    from rrseg.engine.components import build_criterion
    from rrseg.engine.config import parse_config
    from rrseg.rebalance import ClassCounts

    counts = ClassCounts.load([9, 5, 3, 2, 1], C)
    mask_model = SimpleNamespace(training_output="masks", auxiliary_head=None, rebalance=None)
    pixel_model = SimpleNamespace(auxiliary_head=None, rebalance=None)
    m2f = parse_config({"model": {"name": "mask2former_tiny"}, "loss": {"pixel": {"type": "mask2former"}}})
    ce = parse_config({"model": {"name": "mask2former_tiny"}})
    criterion = build_criterion(m2f, mask_model, counts, C)
    assert [t.name for t in criterion.terms] == ["loss_mask2former"]
    with pytest.raises(RRSegError, match=r"^loss.pixel.type 'ce' reads logits, but model 'mask2former_tiny' gives "
                                         r"masks in training: set loss.pixel.type to mask2former$"):
        build_criterion(ce, mask_model, counts, C)
    with pytest.raises(RRSegError, match=r"^loss.pixel.type 'mask2former' reads masks, but model 'mask2former_tiny' "
                                         r"gives logits in training: set loss.pixel.type to ce or weighted_ce or "):
        build_criterion(m2f, pixel_model, counts, C)


def test_the_criterion_dict_keeps_each_part_and_the_other_terms():
    from rrseg.rebalance import Criterion, CrossEntropyLoss

    class Const(CrossEntropyLoss):
        def forward(self, out, labels):
            return torch.tensor(1.5)

    term = Mask2FormerCriterion(C, num_points=50)
    criterion = Criterion([term, Const("loss_other")])
    torch.manual_seed(0)
    values = criterion(_output(), _labels())
    assert list(values) == ["loss_cls", "loss_mask", "loss_dice", "loss_other"]
