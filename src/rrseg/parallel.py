"""One parallel map with a progress bar, for the offline tools (stats, check-data, make-synthetic, convert, score).

Results come back in input order, so what a tool computes does not depend on the number of processes. The
default number of processes, the chunk size and the progress bar are the same for every tool.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["MAX_DEFAULT_WORKERS", "chunk_size", "default_workers", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")

MAX_DEFAULT_WORKERS = 8  # the default: all cores, at most this many processes
_NO_SHARED: Any = object()


def default_workers(workers: int | None) -> int:
    """``workers`` (at least 1), or when None all cores, at most :data:`MAX_DEFAULT_WORKERS`."""
    return min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS) if workers is None else max(1, int(workers))


def chunk_size(n: int, workers: int) -> int:
    """Items per task for ``n`` items: about 8 tasks per process (an even spread), at most 64 items a task."""
    return max(1, min(64, n // (max(1, workers) * 8)))


# In a worker process: the object passed as ``shared`` (sent once per process, not once per task).
_shared: Any = _NO_SHARED
_torch_threads_set = False


def _init_worker(has_shared: bool, shared: Any) -> None:
    global _shared
    _shared = shared if has_shared else _NO_SHARED  # the sentinel itself does not survive pickling


def _run(fn: Callable[..., Any], item: Any) -> Any:
    global _torch_threads_set
    torch = sys.modules.get("torch")  # imported with ``fn``'s module, if that uses torch
    if torch is not None and not _torch_threads_set:
        torch.set_num_threads(1)  # N processes with a thread per core each would oversubscribe the CPU
        _torch_threads_set = True
    return fn(item) if _shared is _NO_SHARED else fn(item, _shared)


def parallel_map(
    fn: Callable[..., R],
    items: Sequence[T],
    workers: int | None = None,
    *,
    shared: Any = _NO_SHARED,
    progress: bool = False,
    description: str = "",
    total: int | None = None,
    advance: Callable[[R], int] | None = None,
    transient: bool = True,
) -> Iterator[R]:
    """``fn(item)`` (``fn(item, shared)`` when ``shared`` is given) for each item, in order, over
    ``default_workers(workers)`` processes (in this process for one worker or one item).

    ``fn`` must be a module-level function and ``shared`` picklable. ``progress``: a rich progress bar
    (``description``; ``total`` units, by default one per item; each result moves it by ``advance(result)``,
    by default 1), removed when done unless ``transient`` is false. Stopping early (an exception in the caller's
    loop) cancels the tasks not started yet.
    """
    workers = default_workers(workers)
    bar = task = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=transient)
        bar.start()
        task = bar.add_task(description, total=len(items) if total is None else total)
    pool = None
    try:
        if workers <= 1 or len(items) < 2:
            call = fn if shared is _NO_SHARED else functools.partial(_call_with, fn, shared)
            results: Iterator[R] = map(call, items)
        else:
            has_shared = shared is not _NO_SHARED
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                       initargs=(has_shared, shared if has_shared else None))
            results = pool.map(functools.partial(_run, fn), items, chunksize=chunk_size(len(items), workers))
        for result in results:
            if bar is not None:
                bar.advance(task, 1 if advance is None else advance(result))
            yield result
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.stop()


def _call_with(fn: Callable[..., R], shared: Any, item: Any) -> R:
    return fn(item, shared)
