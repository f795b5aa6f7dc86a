"""An error on one rank of two ends both ranks promptly, each with the same one-line message
(``rrseg.engine.distributed.ranks_end_together``): real runs of ``rrseg train`` with two gloo processes on the
CPU, under torchrun and under a plain env:// launch (where rank 0 hosts the key-value store itself)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.test_faults import _file_size_limit, work_dir

# Well under the process-group timeout (30 min) and torchrun's 30 s grace between SIGTERM and SIGKILL, and
# still room for two interpreter start-ups and model builds on a busy 2-core machine.
PROMPT_S = 60

# ``rrseg train`` whose image reads fail on one rank only, from read number argv[4] on: an expected error
# (RRSegError, one line and exit status 2) or an unexpected one (RuntimeError, a traceback and exit status 1).
FAULT_ON_ONE_RANK = '''
import os, sys
from rrseg.cli.main import main
from rrseg.data.base import SegDataset
from rrseg.errors import RRSegError

cfg, kind, rank, after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
load_image, reads = SegDataset.load_image, [0]

def faulty(self, index):
    reads[0] += 1
    if int(os.environ["RANK"]) == rank and reads[0] > after:
        raise (RRSegError if kind == "expected" else RuntimeError)(f"injected fault on rank {rank}")
    return load_image(self, index)

SegDataset.load_image = faulty
sys.exit(main(["train", cfg, "--device", "cpu"]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(launcher: str, argv: list[str], env: dict, logs: Path, rank0_preexec=None,
              all_preexec=None) -> tuple[list[int], list[str], float]:
    """Run ``python ARGV`` as ranks 0 and 1 of a gloo process group. ``torchrun``: ``--standalone`` (a free port;
    torchrun's agent hosts the store), each rank's stderr in its log file; ``env``: two processes with RANK,
    WORLD_SIZE, MASTER_ADDR and MASTER_PORT (rank 0 hosts the store). Returns the exit statuses (torchrun's, or
    one per rank), each rank's stderr and the wall time; a run still going after PROMPT_S is killed."""
    start = time.monotonic()
    if launcher == "torchrun":
        module = argv[:2] == ["-m", "rrseg"]
        procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                   f"--log-dir={logs}", "--redirects=2", *(["-m"] if module else []),
                                   *(argv[1:] if module else argv)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True, preexec_fn=all_preexec)]
    else:
        port = free_port()
        procs = [subprocess.Popen([sys.executable, *argv],
                                  env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                  preexec_fn=rank0_preexec if r == 0 else all_preexec)
                 for r in range(2)]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=max(1.0, PROMPT_S - (time.monotonic() - start))))
        except subprocess.TimeoutExpired:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)  # torchrun and both ranks
                p.communicate()
            pytest.fail(f"the ranks did not end within {PROMPT_S} s: one stopped while the other waits")
    wall = time.monotonic() - start
    if launcher == "torchrun":
        stderr = [next(logs.rglob(f"attempt_0/{r}/stderr.log")).read_text() for r in range(2)]
        return [procs[0].returncode], stderr, wall
    return [p.returncode for p in procs], [err for _, err in outputs], wall


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


@pytest.mark.parametrize("launcher", ["torchrun", "env"])
@pytest.mark.slow
@pytest.mark.multiprocess
def test_checkpoint_write_failing_on_rank_0_ends_both_ranks(tiny_config, env, tmp_path, launcher):
    """Rank 0 writes checkpoints alone while rank 1 waits for it in a barrier: a write that fails there (a
    256 KiB file size limit, EFBIG) ends both ranks at once, and both print rank 0's line."""
    cfg = tiny_config(launcher, data={"batch_size": 2}, schedule={"iters": 3, "warmup_iters": 0},
                      eval={"interval": 0, "batch_size": 4},
                      train={"checkpoint_interval": 1, "progress": False, "tensorboard": False})
    limit = _file_size_limit(256 * 1024)
    codes, stderr, wall = two_ranks(launcher, ["-m", "rrseg", "train", str(cfg), "--device", "cpu"], env,
                                    tmp_path / "logs", rank0_preexec=limit, all_preexec=limit)
    line = (f"rrseg train: error: {work_dir(cfg) / 'checkpoints'}: cannot write the checkpoint of iteration 1 "
            f"(File too large); no earlier checkpoint")
    for rank, err in enumerate(stderr):
        assert error_lines(err) == [line] and "Traceback" not in err, f"rank {rank}:\n{err[-3000:]}"
    assert codes == ([1] if launcher == "torchrun" else [2, 2]), (codes, stderr)
    assert wall < PROMPT_S


@pytest.mark.parametrize(("launcher", "kind"), [("torchrun", "unexpected"), ("env", "expected")])
@pytest.mark.slow
@pytest.mark.multiprocess
def test_error_on_rank_1_ends_both_ranks(tiny_config, env, tmp_path, launcher, kind):
    """Rank 1 fails reading an image in iteration 2 while rank 0 waits for its gradients: rank 0 ends too, with
    rank 1's line (for an unexpected error, rank 1 prints its traceback and rank 0 a line that points to it)."""
    script = tmp_path / "fault_on_one_rank.py"
    script.write_text(FAULT_ON_ONE_RANK)
    cfg = tiny_config(launcher, data={"batch_size": 2}, schedule={"iters": 4, "warmup_iters": 0},
                      eval={"interval": 0, "batch_size": 4},
                      train={"checkpoint_interval": 100, "progress": False, "tensorboard": False})
    codes, (err0, err1), wall = two_ranks(launcher, [str(script), str(cfg), kind, "1", "2"], env, tmp_path / "logs")
    if kind == "expected":
        line = "rrseg train: error: injected fault on rank 1"
        assert error_lines(err1) == [line] and "Traceback" not in err1, err1[-3000:]
        assert codes == [2, 2], (codes, err0, err1)
    else:
        line = ("rrseg train: error: rank 1 stopped on an unexpected error (its traceback is in rank 1's output): "
                "RuntimeError: injected fault on rank 1")
        assert "Traceback" in err1 and err1.rstrip().endswith("RuntimeError: injected fault on rank 1"), err1[-3000:]
        assert codes == [1], (codes, err0, err1)
    assert error_lines(err0) == [line] and "Traceback" not in err0, err0[-3000:]
    assert wall < PROMPT_S
