"""Distributed helpers: torchrun environment, process group, rank-0-only work, ending together.

``torchrun --nproc_per_node=N -m rrseg train CFG`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT; multi-node runs add ``--nnodes``, ``--node_rank`` and ``--rdzv_endpoint`` as usual. NCCL is
used on CUDA, gloo on CPU.

Ending together (``ranks_end_together``)
----------------------------------------
An error on one rank leaves the others waiting in their next collective: rank 0 writes a checkpoint alone
while the others wait for it in a barrier. If the write fails, they wait there until the process-group
timeout (30 min) or until torchrun stops them, or, with gloo, until rank 0's exit closes its connections and
they fail with an error of their own ("Connection closed by peer"); either way only rank 0 says why.
Every rank already shares a key-value store: the one the process group met through, at
``MASTER_ADDR:MASTER_PORT`` (torchrun's agent hosts it, for as long as torchrun runs; under a plain env://
launch rank 0 does). Each rank opens its own client to it, and:

1. A rank that fails publishes its one-line message: ``compare_set(MESSAGE, "", mine)`` sets it only when no
   rank has yet, and returns the message that stands, so that ranks failing at once agree on the first.
2. A daemon thread on every rank polls ``check([MESSAGE])`` (it does not block) every ``POLL_S``. When the
   message appears, the thread reports it, exactly as the failing rank does, and ends the process with
   ``os._exit(2)``: the main thread may be blocked in a gloo or NCCL collective, which neither an exception
   nor a signal can interrupt.
3. Every rank that ends on a failure, its own or another's, marks ``ended/<rank>`` and waits until every rank
   has (at most ``ENDING_WAIT_S``) before it leaves or destroys its process group: the store may live on this
   rank, and the peers of a destroyed gloo group fail with the error above, which must not come first. So
   ``cleanup()`` leaves the group to ``ranks_end_together``, which destroys it when it ends. A failing rank
   also ignores SIGTERM from then on: torchrun sends it to the ranks still running as soon as one has ended,
   and it must not cut the failing rank's own message short.

The keys carry torchrun's restart count (its agent keeps one store across restarts). An error before the
process group exists (in a config that every rank reads) ends each rank by itself, as before.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from rrseg.errors import RRSegError

__all__ = ["DistInfo", "barrier", "cleanup", "on_main", "pick_device", "ranks_end_together", "setup"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

POLL_S = 0.2  # how often each rank looks for another rank's failure
ENDING_WAIT_S = 5.0  # how long a failing rank waits for the others to have its message
STORE_TIMEOUT = timedelta(seconds=30)  # to reach the store, and for each request to it
MESSAGE = "message"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(request: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU; ``cpu`` / ``cuda``: that one."""
    use_cuda = torch.cuda.is_available() if request == "auto" else request.startswith("cuda")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world, timeout=timedelta(minutes=30)
        )
    if world > 1 and _ending is not None:
        _ending.watch(rank, world)
    return DistInfo(rank, world, local, dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group; inside ``ranks_end_together``, that does it when it ends (step 3 above)."""
    if _ending is None:
        _destroy_process_group()


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        # A reference cycle (e.g. a closure on the trainer that points back at it) can still hold the DDP wrapper
        # and through it the gloo group, whose worker threads then live on into interpreter exit. A worker that
        # frees a just-finished collective's tensors there needs the GIL, which a finalizing interpreter never
        # gives: it aborts the process ("terminate called without an active exception", pytorch#190489).
        # Collecting now frees the group here, and its destructor joins its threads (without holding the GIL).
        gc.collect()


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank. An RRSegError raised there is raised
    on every rank, so that no rank is left waiting at the next collective while rank 0 stops."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fn()
    box: list = [(None, None)]
    if dist.get_rank() == 0:
        try:
            box = [(fn(), None)]
        except RRSegError as e:
            box = [(None, e)]
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result


class _Ending:
    """One rank's side of ending together (steps 1-3 in the module docstring)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.store: dist.Store | None = None  # set by watch(), once the process group exists
        self.rank, self.world = 0, 1
        self.lock = threading.Lock()  # the watcher and the main thread: one of them ends this rank
        self.stopped = threading.Event()  # set by whichever does, or when the command has ended well
        self.poller: threading.Thread | None = None

    def watch(self, rank: int, world: int) -> None:
        if self.store is not None:
            return
        client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                               timeout=STORE_TIMEOUT)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.store = dist.PrefixStore(f"rrseg/attempt_{attempt}", client)
        self.rank, self.world = rank, world
        self.poller = threading.Thread(target=self._poll, name="rrseg-ranks", daemon=True)
        self.poller.start()

    def join(self) -> None:
        """Stop the watcher and wait for it: a daemon thread still inside a store call (C++) when the
        interpreter exits aborts the process ("terminate called without an active exception")."""
        self.stopped.set()
        if self.poller is not None and self.poller is not threading.current_thread():
            self.poller.join(timeout=STORE_TIMEOUT.total_seconds())

    def _poll(self) -> None:
        while not self.stopped.wait(POLL_S):
            try:
                failed = self.store.check([MESSAGE])
                message = self.store.get(MESSAGE).decode() if failed else None
            except RuntimeError:  # the store has gone with its host (rank 0 under env://): nothing to watch
                return
            if message is None:
                continue
            with self.lock:
                if self.stopped.is_set():  # the main thread ends this rank itself
                    return
                self.stopped.set()
                self.report(message)  # (the CLI's report flushes: os._exit does not)
                self._leave_together()
                os._exit(2)

    def fail(self, error: Exception) -> str | None:
        """Publish this rank's error. Returns the first error published when it is another rank's, else None."""
        with self.lock:
            self.stopped.set()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        mine = str(error) if isinstance(error, RRSegError) else (
            f"rank {self.rank} stopped on an unexpected error (its traceback is in rank {self.rank}'s output): "
            f"{type(error).__name__}: {error}")
        try:
            first = self.store.compare_set(MESSAGE, "", mine).decode()
        except RuntimeError:  # the store has gone with its host (rank 0 under env://)
            logger.debug("rank %d: could not publish its error", self.rank, exc_info=True)
            return None
        self._leave_together()
        return None if first == mine else first

    def _leave_together(self) -> None:
        """Mark this rank's end; wait until every rank has, or ENDING_WAIT_S (step 3)."""
        keys = [f"ended/{r}" for r in range(self.world)]
        deadline = time.monotonic() + ENDING_WAIT_S
        try:
            self.store.set(keys[self.rank], "1")
            while not self.store.check(keys):  # (store.wait would log its time-out as a C++ warning)
                if time.monotonic() > deadline:
                    logger.debug("rank %d: not every rank marked its end in %.0f s", self.rank, ENDING_WAIT_S)
                    return
                time.sleep(0.05)
        except RuntimeError:  # the store has gone with its host (rank 0 under env://)
            logger.debug("rank %d: the store has gone", self.rank, exc_info=True)


_ending: _Ending | None = None  # while ranks_end_together runs


@contextlib.contextmanager
def ranks_end_together(report: Callable[[str], None]) -> Iterator[None]:
    """While this runs, an error on any rank of the process group (``setup`` makes it) ends every rank within
    about a second, each with the same message: ``report(message)`` on the ranks that did not fail (then exit
    status 2), the error itself on the first rank that failed, and ``RRSegError(message)`` on any rank that
    failed after it (its own error is logged at debug level: it is mostly a consequence of the first one).
    ``report`` is given ``str(error)`` for an RRSegError, a line naming the rank and the error otherwise."""
    global _ending
    _ending = ending = _Ending(report)
    try:
        yield
    except Exception as error:
        first = ending.fail(error) if ending.store is not None else None  # None: not distributed (yet)
        if first is None:
            raise
        logger.debug("rank %d failed after another rank; its own error:", ending.rank, exc_info=True)
        raise RRSegError(first) from None
    finally:
        ending.join()
        _ending = None
        _destroy_process_group()
