"""Data loading for iteration-based training, deterministic in the iteration.

Sample ``k`` of the run (k = iteration * global_batch + position) is a fixed function of the seed: the
index comes from an epoch-seeded permutation, and its random augmentation is drawn from a generator
seeded with (seed, k). Training data therefore does not depend on the number of workers, on where a run
was resumed, or on the number of processes (each micro-batch step takes ``world_size * batch_size`` consecutive
positions, rank r the r-th block of ``batch_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from rrseg.data.base import seg_collate

__all__ = ["InfiniteSampler", "SeededTransformDataset", "ShardSampler", "collate"]

collate = seg_collate  # the data package's collate function, under the name the engine has used


class InfiniteSampler(Sampler):
    """Yields ``(index, k)`` forever from sample position ``start`` on, for this rank's share.

    Each step of ``batch_size`` samples per rank takes ``world_size * batch_size`` consecutive positions,
    rank r the r-th block: N ranks see exactly the micro-batches one process sees with N accumulation
    steps (so even BatchNorm statistics are computed over the same groups of images).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0,
                 shuffle: bool = True, batch_size: int = 1) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world = size, seed, rank, world_size
        self.start, self.shuffle, self.batch_size = start, shuffle, batch_size

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(self.size, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, None
        step_size = self.world * self.batch_size
        step = 0
        while True:
            base = self.start + step * step_size + self.rank * self.batch_size
            for k in range(base, base + self.batch_size):
                e, pos = divmod(k, self.size)
                if e != epoch:
                    epoch, order = e, self._order(e)
                yield int(order[pos]), k
            step += 1


class ShardSampler(Sampler):
    """Evaluation: every index exactly once over all ranks (no padding, so no double counting)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededTransformDataset(Dataset):
    """Applies ``transforms(image, label)`` to ``dataset[i]`` with torch's RNG seeded from (seed, k).

    Indexed with ``(i, k)`` pairs from :class:`InfiniteSampler`. The global RNG state is restored after
    each item, so this is safe with ``num_workers=0`` too.
    """

    def __init__(self, dataset: Any, transforms: Callable | None, seed: int) -> None:
        self.dataset, self.transforms, self.seed = dataset, transforms, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, k = key
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only, which the transforms draw from: torch.manual_seed would also seed every
            # accelerator (each not yet initialised keeps a formatted stack trace per call, a fifth of the demo's
            # loading time), and fork_rng restores the CPU state only
            torch.default_generator.manual_seed((self.seed * 1_000_003 + k) % (2**63))
            item = self.dataset[index]
            if self.transforms is not None:
                item["image"], item["label"] = self.transforms(item["image"], item["label"])
        return item
