"""Atomic file output: write to a temporary file in the same folder, fsync, then rename over the target.

A crash or a failed write leaves either the old file or the new one, never a half-written file. Also the one
reader and writer of safetensors files (checkpoints, pretrained weights, the RR branch of the integrations),
so that a file that cannot be read is one error wherever it is read.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rrseg.errors import RRSegError

if TYPE_CHECKING:
    import torch

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "ensure_writable_dir",
    "jsonable",
    "read_safetensors",
    "remove_stale_temps",
    "safetensors_bytes",
    "write_safetensors",
]


def check_writable(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is (or could be created as) a writable directory; creates nothing."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if probe == p and not p.is_dir():
        raise RRSegError(f"{p}: output path exists and is not a directory")
    if not probe.is_dir():
        raise RRSegError(f"{p}: cannot create output directory ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RRSegError(f"{p}: output directory is not writable")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be created in it."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RRSegError(f"{p}: cannot create output directory ({e.strerror})") from None
    if not p.is_dir():
        raise RRSegError(f"{p}: output path exists and is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise RRSegError(f"{p}: output directory is not writable")
    return p


_TEMP_PATTERN = ".*.tmp"  # the names _create_temp gives: .<target name>.<8 hex digits>.tmp


def _create_temp(target: Path) -> tuple[int, str]:
    """A new temporary sibling of ``target``, created with the usual permissions (0o666 less the umask;
    ``tempfile.mkstemp`` would make it private, and the rename would carry that over to the output)."""
    folder = target.parent or Path(".")
    for _ in range(100):
        tmp = str(folder / f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it to ``path``.

    A write that fails (disk full, file size limit, I/O error: any ``OSError`` in the block) raises an
    ``RRSegError`` naming ``path``; the temporary file is removed and ``path`` keeps its old content."""
    target = Path(path)
    if target.is_dir():
        raise RRSegError(f"{target}: is a directory; expected a file path to write")
    if target.parent and not target.parent.exists():
        ensure_writable_dir(target.parent)
    try:
        fd, tmp = _create_temp(target)
    except OSError as e:
        raise RRSegError(f"{target}: cannot write ({e.strerror})") from None
    try:
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:  # disk full, file size limit, I/O error: one line naming the file
            raise RRSegError(f"{target}: cannot write ({e.strerror or e})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(target.parent or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None and numpy scalars/arrays as Python values (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalar or array, torch tensor
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Remove the temporary files of atomic writes in ``folder`` that a killed process left behind."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(_TEMP_PATTERN):
            stale.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ safetensors


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> bytes:
    """``state`` as a safetensors file: contiguous CPU tensors, shared storage cloned apart (safetensors refuses
    aliasing); ``metadata`` values that are not strings are stored as strict JSON (NaN / inf as null)."""
    from safetensors.torch import save

    seen: set[tuple[int, int]] = set()
    tensors = {}
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add(key)
        tensors[k] = t
    meta = {k: v if isinstance(v, str) else json.dumps(jsonable(v), allow_nan=False)
            for k, v in (metadata or {}).items()}
    return save(tensors, metadata=meta)


def write_safetensors(path: str | os.PathLike, state: dict[str, torch.Tensor],
                      metadata: dict[str, Any] | None = None) -> None:
    """Write ``state`` (and ``metadata``) to a safetensors file atomically."""
    atomic_write_bytes(path, safetensors_bytes(state, metadata))


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (on ``device``) and metadata (JSON values decoded) of a safetensors file. A file that cannot be
    read is an RRSegError naming it; one not named .safetensors (e.g. a .pt/.pth/.bin pickle) is said to be
    refused as such, since it is never unpickled here."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state = load_file(str(path), device=device)
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        if path.suffix.lower() != ".safetensors":
            raise RRSegError(f"{path}: not a safetensors checkpoint ({e}); checkpoints are read as safetensors "
                             f"only, a PyTorch pickle (.pt/.pth/.bin) is never unpickled here") from None
        raise RRSegError(f"{path}: truncated or corrupt safetensors file ({e})") from None
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            meta[k] = v
    return state, meta
