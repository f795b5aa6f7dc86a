"""Checkpoints: model weights as safetensors (with the config in its metadata) plus a small state file.

A training checkpoint is a folder ``checkpoints/iter_NNNNNNN/`` holding ``model.safetensors`` and
``state.pt`` (optimizer, grad scaler, RNG states, iteration, the callbacks' states such as the best score;
loaded with ``torch.load(weights_only=True)``, so a pickle carrying code is refused). The folder is written under
a temporary name, fsynced and renamed, and only then is ``checkpoints/latest`` updated (atomically), so a crash
at any moment leaves the previous checkpoint loadable. The last ``keep_last`` folders are kept, and
``best.safetensors`` holds the weights with the best validation mIoU.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rrseg.errors import RRSegError
from rrseg.io import atomic_write_text, read_safetensors, safetensors_bytes, write_safetensors

__all__ = [
    "capture_rng",
    "find_checkpoint",
    "latest_checkpoint",
    "load_state",
    "load_weights",
    "read_weights",
    "remove_partial_checkpoints",
    "restore_rng",
    "save_training_checkpoint",
    "save_weights",
    "work_dir_of",
]

CKPT_DIR = "checkpoints"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# The safetensors reader and writer are rrseg.io's (one error text wherever weights are read).
save_weights = write_safetensors


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata (JSON values decoded) of a safetensors file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RRSegError(f"{path}: checkpoint not found")
    return read_safetensors(path)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """Load ``state`` into ``model``; a checkpoint of another architecture is a clear error, never a
    silent partial load."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise RRSegError(f"{source}: checkpoint of another architecture: {', '.join(parts)}")
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        k, got, want = mismatched[0]
        raise RRSegError(
            f"{source}: weights do not fit this model: {k} has shape {got} in the checkpoint, {want} in the model"
            + (f" (and {len(mismatched) - 1} more mismatches)" if len(mismatched) > 1 else "")
        )
    model.load_state_dict(state, strict=False)


# ------------------------------------------------------------------------------------------------ RNG


def capture_rng() -> dict[str, Any]:
    """All RNG states as tensors / plain Python values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ training ckpt


def save_training_checkpoint(
    work_dir: str | os.PathLike,
    iteration: int,
    model_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    metadata: dict[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write ``checkpoints/iter_NNNNNNN`` atomically, point ``latest`` at it, prune older ones."""
    root = Path(work_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    remove_partial_checkpoints(work_dir)
    name = f"iter_{iteration:07d}"
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        for fname, data in (
            ("model.safetensors", safetensors_bytes(model_state, {**metadata, "iteration": iteration})),
            ("state.pt", _torch_bytes(state)),
        ):
            with open(tmp / fname, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            old = root / f".{name}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", name + "\n")
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter_"))
    for old in done[:-keep_last] if keep_last > 0 else []:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial_checkpoints(work_dir: str | os.PathLike) -> None:
    """Remove the checkpoint folders a process killed while writing left under their temporary names
    (``.iter_NNNNNNN.tmp-PID``, ``.iter_NNNNNNN.old-PID``)."""
    for stale in (Path(work_dir) / CKPT_DIR).glob(".iter_*"):
        shutil.rmtree(stale, ignore_errors=True)


def _torch_bytes(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder ``latest`` points to, or the newest complete one; None when there is none."""
    root = Path(work_dir) / CKPT_DIR
    pointer = root / "latest"
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / "model.safetensors").is_file() and (cand / "state.pt").is_file():
            return cand
    if not root.is_dir():
        return None
    done = sorted(
        p for p in root.iterdir()
        if p.is_dir() and p.name.startswith("iter_") and (p / "state.pt").is_file()
    )
    return done[-1] if done else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A weights file from a path that may be a .safetensors file, a checkpoint folder or a work dir
    (its best.safetensors, else its latest checkpoint)."""
    p = Path(path)
    if p.is_file():
        return p
    if (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    if (p / "best.safetensors").is_file():
        return p / "best.safetensors"
    latest = latest_checkpoint(p) if p.is_dir() else None
    if latest is not None:
        return latest / "model.safetensors"
    raise RRSegError(f"{p}: no checkpoint found (expected a .safetensors file, a checkpoint folder or a work dir)")


def work_dir_of(file: str | os.PathLike) -> Path:
    """The work dir a weights file belongs to: W for ``W/best.safetensors`` (or any file directly in W) and for
    ``W/checkpoints/iter_N/model.safetensors``."""
    file = Path(file)
    return file.parent.parent.parent if file.parent.parent.name == CKPT_DIR else file.parent


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """The training state file, loaded with weights_only=True: objects carrying code are refused."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RRSegError(f"{path}: state file not found") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise RRSegError(f"{path}: refused to load: not plain tensors and data ({first[:150]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise RRSegError(f"{path}: truncated or corrupt state file ({e.__class__.__name__})") from None
