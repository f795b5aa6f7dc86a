"""Atomic file output: write to a temporary file in the same folder, fsync, then rename over the target.

A crash or a failed write leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rrseg.errors import RRSegError

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "ensure_writable_dir",
    "jsonable",
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
