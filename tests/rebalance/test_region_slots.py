"""RR's region slots (issue 24): the table's rows filled from the regions present, against the full table."""

from __future__ import annotations

import logging

import pytest
import torch

from rrseg.rebalance import RegionRebalance, region_slots, region_table


def labels_of(classes_per_image, size=(12, 10), ignore_frac=0.1, seed=0):
    """[B, H, W] labels, image i drawing from ``classes_per_image[i]``; some pixels ignored (255)."""
    g = torch.Generator().manual_seed(seed)
    maps = []
    for classes in classes_per_image:
        pick = torch.randint(0, len(classes), size, generator=g)
        y = torch.tensor(classes)[pick]
        y[torch.rand(size, generator=g) < ignore_frac] = 255
        maps.append(y)
    return torch.stack(maps)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("align_corners", [True, False])
def test_slots_equal_the_table_rows_of_the_present_regions(per_image, align_corners):
    c = 847
    features = torch.randn(3, 8, 4, 5, dtype=torch.float64)
    labels = labels_of([[0, 5, 846], [5, 400, 401, 12], [700]])
    means, counts = region_table(features, labels, c, per_image=per_image, align_corners=align_corners)
    present = (counts > 0).nonzero().squeeze(1)
    got = region_slots(features, labels, c, 16, per_image=per_image, align_corners=align_corners)
    k = present.numel()
    assert got.means.shape == (16, 8) and got.counts.shape == got.keys.shape == (16,)
    assert torch.equal(got.keys[:k], present)  # row order by default
    torch.testing.assert_close(got.means[:k], means[present], rtol=1e-12, atol=1e-12)
    assert torch.equal(got.counts[:k], counts[present]) and (got.counts[k:] == 0).all()
    assert (got.means[k:] == 0).all() and int(got.overflow) == 0


def test_priority_orders_the_slots_and_an_overflow_leaves_the_last_out():
    c = 20
    features = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    labels = labels_of([[1, 2, 3], [3, 7, 9]], ignore_frac=0.0)
    means, counts = region_table(features, labels, c)
    priority = torch.arange(c - 1, -1, -1)  # highest class first
    got = region_slots(features, labels, c, 3, priority=priority)
    assert got.keys.tolist() == [9, 7, 3]  # present: 1 2 3 7 9; two left out
    assert int(got.overflow) == 2
    torch.testing.assert_close(got.means, means[[9, 7, 3]], rtol=1e-12, atol=1e-12)
    assert got.counts.tolist() == counts[[9, 7, 3]].tolist()


@pytest.mark.parametrize(("per_image", "released_cnn"), [(False, False), (True, False), (False, True)],
                         ids=["batch", "per-image", "released-cnn-heads"])  # (consistency: batch pooling only)
def test_branch_with_slots_gives_the_table_loss(per_image, released_cnn):
    """Same loss and feature gradient as the full table (dropout 0: its mask is the one thing the row count
    changes), with far fewer rows than classes."""
    c = 300
    counts = torch.randint(1, 1000, (c,)).tolist()
    options = dict(dropout=0.0, per_image=per_image)
    if released_cnn:
        options.update(prior_eps=1e-12, ignored_region=True, consistency_weight=1.0, smooth=1.0)
    torch.manual_seed(0)
    table = RegionRebalance(8, c, counts, slots=None, **options).train()
    slots = RegionRebalance(8, c, counts, slots=24, **options).train()
    slots.load_state_dict(table.state_dict())
    features = torch.randn(2, 8, 5, 6, requires_grad=True)
    labels = labels_of([[0, 3, 299, 150], [3, 4, 250]])
    logits = torch.randn(2, c, 5, 6) if released_cnn else None
    losses, grads = [], []
    for rr in (table, slots):
        features.grad = None
        loss = rr(features, labels, logits=logits)
        loss.backward()
        losses.append(loss.detach())
        grads.append(features.grad.clone())
    assert slots.uses_slots and not table.uses_slots and int(slots.overflow) == 0
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
    # the present regions: the same rows, in rarity order (the slots) rather than in class order (the table)
    order = [torch.argsort(rr.last_labels + 1000 * (rr.last_labels < 0)) for rr in (table, slots)]
    assert torch.equal(slots.last_labels[order[1]], table.last_labels[order[0]])
    torch.testing.assert_close(slots.last_logits[order[1]], table.last_logits[order[0]])


def test_overflow_keeps_the_rarest_classes_and_is_counted():
    c = 50
    counts = list(range(c, 0, -1))  # class 49 the rarest
    rr = RegionRebalance(4, c, counts, slots=2, dropout=0.0).train()
    labels = labels_of([[0, 10, 48], [49, 10]], ignore_frac=0.0)
    rr(torch.randn(2, 4, 3, 3), labels)
    assert sorted(rr.last_labels.tolist()) == [48, 49]
    assert int(rr.overflow) == 2
    rr(torch.randn(2, 4, 3, 3), labels)
    assert int(rr.overflow) == 4  # accumulates until read


def test_slots_do_not_enter_the_checkpoint():
    a = RegionRebalance(4, 300, [1] * 300, slots=8)
    b = RegionRebalance(4, 300, [1] * 300, slots=None)
    assert a.state_dict().keys() == b.state_dict().keys()


def test_the_train_record_reports_an_overflow(tiny_config, caplog):
    """A batch with more regions than slots: the train record says how many were left out, with a warning."""
    from rrseg.engine.config import load_config
    from rrseg.engine.trainer import Trainer
    from tests.engine.test_host_syncs import _log  # the log reader of the trainer tests

    cfg = load_config(tiny_config(
        "overflow", loss={"region": {"type": "rr", "slots": 1}}, schedule={"iters": 2, "warmup_iters": 0},
        train={"log_interval": 1, "progress": False, "tensorboard": False}, eval={"interval": 0, "batch_size": 4}))
    with caplog.at_level(logging.WARNING, logger="rrseg.engine.callbacks"):
        trainer = Trainer(cfg, device="cpu")
        trainer.train()
    records = [r for r in _log(trainer) if r["event"] == "train"]
    assert [r["iteration"] for r in records] == [1, 2]
    assert 0 < records[0]["region_overflow"] < records[1]["region_overflow"]
    assert any("regions out of its 1 slots" in r.getMessage() for r in caplog.records)
