"""glibc's malloc set for training: the step's large tensors reuse heap memory instead of fresh pages.

glibc gives every allocation above ``M_MMAP_THRESHOLD`` its own ``mmap`` and unmaps it when freed; it starts at
128 KiB and rises (to at most 32 MiB) only as such blocks are freed, and an explicit setting stops that rise. The
heap's top is returned to the system whenever more than ``M_TRIM_THRESHOLD`` of it is free. A CPU training step
allocates and frees the same few-MiB activations every iteration, so the kernel maps and zero-fills fresh pages
for them step after step: page faults, not arithmetic. With the threshold at its maximum (32 MiB) and the trim
threshold at 1 GiB, those blocks stay in the heap and are reused:

- the demo's training step, one thread: 0.77x (CE) and 0.73x (RR) of its time, 3 % of its page faults;
- the ADE20K training transforms (512^2 crops): 0.73x per image
(``benchmarks/allocator_cpu.py``, docs/BENCHMARKS.md).

Results are the same bit for bit (only where the memory comes from changes). The cost: memory freed during a
step stays with the process (up to 1 GiB above what it uses), as with PyTorch's CUDA caching allocator.

:func:`tune_malloc` is called by the ``rrseg`` command at start (its DataLoader workers inherit it) and by the
trainer on the CPU. It does nothing off glibc, or when the environment sets glibc's malloc itself
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or a ``glibc.malloc`` tunable), or
with ``RRSEG_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

logger = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2); mallopt refuses more
TRIM_THRESHOLD = 1024 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_done: bool | None = None  # the outcome, once tried


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring) once per process; True when they are set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("RRSEG_TUNE_MALLOC", "1") == "0":
        return False
    if any(k in os.environ for k in _USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        logger.debug("malloc left as the environment sets it")
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
    return _done
