"""Deterministic data order and augmentation: a function of (seed, sample position) only."""

from __future__ import annotations

import itertools

import torch

from rrseg.engine.loader import InfiniteSampler, SeededTransformDataset, ShardSampler, collate


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_epochs_are_permutations_and_resume_continues_the_stream():
    full = take(InfiniteSampler(7, seed=3), 21)
    for e in range(3):
        assert sorted(i for i, _ in full[7 * e : 7 * e + 7]) == list(range(7))
    assert [k for _, k in full] == list(range(21))
    assert take(InfiniteSampler(7, seed=3, start=9), 12) == full[9:]
    assert take(InfiniteSampler(7, seed=4), 7) != full[:7]


def test_ranks_take_consecutive_blocks_of_the_single_process_stream():
    single = take(InfiniteSampler(10, seed=0, start=4, batch_size=2), 12)
    r0 = take(InfiniteSampler(10, seed=0, rank=0, world_size=2, start=4, batch_size=2), 6)
    r1 = take(InfiniteSampler(10, seed=0, rank=1, world_size=2, start=4, batch_size=2), 6)
    # step s: rank 0 has the positions of micro-batch 2s of one process, rank 1 those of micro-batch 2s+1
    for s in range(3):
        assert r0[2 * s : 2 * s + 2] == single[4 * s : 4 * s + 2]
        assert r1[2 * s : 2 * s + 2] == single[4 * s + 2 : 4 * s + 4]


def test_shards_cover_each_index_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(11))


class Items:
    def __len__(self):
        return 4

    def __getitem__(self, i):
        label = torch.zeros(2, 2, dtype=torch.uint8)
        return {"image": torch.full((3, 2, 2), float(i)), "label": label, "meta": {"i": i}}


def noisy(image, label):
    return image + torch.rand(()), label


def test_augmentation_depends_on_position_not_on_history():
    ds = SeededTransformDataset(Items(), noisy, seed=1)
    a = ds[(2, 5)]["image"]
    torch.rand(100)  # unrelated use of the global RNG
    ds[(0, 1)]
    assert torch.equal(ds[(2, 5)]["image"], a)
    assert not torch.equal(ds[(2, 6)]["image"], a)
    state = torch.get_rng_state()
    ds[(1, 1)]
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched


def test_augmentation_draws_from_the_cpu_seed_and_leaves_the_accelerators_alone(monkeypatch):
    """Sample k's draws are those of torch.manual_seed((seed * 1_000_003 + k) mod 2^63) on the CPU generator (the
    figures of every run so far), and no accelerator generator is seeded: with workers=0 on a GPU that would reset
    the training's own generator (dropout) at every sample."""
    ds = SeededTransformDataset(Items(), noisy, seed=1)
    seeded = []
    for name in ("cuda", "xpu", "mps", "mtia"):
        module = getattr(torch, name, None)
        for fn in ("manual_seed_all", "manual_seed"):
            if module is not None and hasattr(module, fn):
                monkeypatch.setattr(module, fn, lambda *a, _n=f"{name}.{fn}", **k: seeded.append(_n))
    got = ds[(2, 5)]["image"]
    assert seeded == []
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed((1 * 1_000_003 + 5) % (2**63))
        expected = Items()[2]["image"] + torch.rand(())
    assert torch.equal(got, expected)


def test_collate():
    batch = collate([Items()[0], Items()[1]])
    assert batch["image"].shape == (2, 3, 2, 2) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (2, 2, 2)
    assert batch["meta"] == [{"i": 0}, {"i": 1}]
