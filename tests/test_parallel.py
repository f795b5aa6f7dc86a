"""The one parallel map of the offline tools: ordered results, shared objects, the same in and out of process."""

from __future__ import annotations

import os

import pytest

from rrseg.parallel import chunk_size, default_workers, parallel_map


def square(x: int) -> int:
    return x * x


def scaled(x: int, shared: dict) -> tuple[int, int]:
    return x * shared["factor"], os.getpid()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_whatever_the_workers(workers):
    assert list(parallel_map(square, list(range(50)), workers)) == [x * x for x in range(50)]
    assert list(parallel_map(square, [], workers)) == []


def test_shared_object_reaches_every_call_in_and_out_of_process():
    serial = list(parallel_map(scaled, range(20), 1, shared={"factor": 3}))
    pooled = list(parallel_map(scaled, range(20), 2, shared={"factor": 3}))
    assert [v for v, _ in serial] == [v for v, _ in pooled] == [3 * x for x in range(20)]
    assert {pid for _, pid in serial} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in pooled}


def test_progress_counts_units_and_errors_propagate():
    assert list(parallel_map(square, [1, 2, 3], 2, progress=True, description="x", total=6, advance=lambda r: 2)) \
        == [1, 4, 9]
    with pytest.raises(ValueError, match="three"):
        list(parallel_map(fail_on_three, range(10), 2))


def test_defaults():
    assert default_workers(None) == min(os.cpu_count() or 1, 8)
    assert default_workers(0) == 1 and default_workers(3) == 3
    assert chunk_size(10, 4) == 1 and chunk_size(10_000, 2) == 64 and chunk_size(320, 2) == 20
