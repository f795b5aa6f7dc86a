"""Reading label maps: index PNGs (mode L, P or I;16) and TIFFs (e.g. ADE20K-Full's uint16), checked, with
the usual id conversions."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rrseg.data.errors import DataError
from rrseg.errors import RRSegError

__all__ = ["check_label_dtype", "find_files", "read_class_names", "read_label", "reduce_zero_label"]

INDEX_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I", "1")
# Several channels: a colour picture of the classes, not their ids.
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "LA", "La", "PA")


def _pixel_type(dtype: np.dtype) -> str:
    """``uint16 (16-bit)``: how a label's pixel type is named in messages."""
    dtype = np.dtype(dtype)
    return f"{dtype.name} ({dtype.itemsize * 8}-bit)"


def check_label_dtype(label: np.ndarray, path: str | os.PathLike, expected: np.dtype | type, hint: str = "") -> None:
    """Raise a ``label_dtype`` :class:`DataError` naming ``path`` unless ``label`` has pixel type ``expected``
    (as :func:`read_label` returns it: byte order already native); ``hint`` ends the message."""
    expected = np.dtype(expected)
    if label.dtype != expected:
        tail = f"; {hint}" if hint else ""
        raise DataError(
            "label_dtype",
            f"{path}: label pixels are {_pixel_type(label.dtype)}, expected {_pixel_type(expected)}{tail}",
        )


def read_label(path: str | os.PathLike, writable: bool = True) -> np.ndarray:
    """The label map of an index PNG or TIFF as a 2-D integer array in native byte order (uint8 for 8-bit
    files, uint16 for 16-bit ones); ``writable=False`` saves a copy when the array is only read.

    Raises :class:`~rrseg.data.errors.DataError` (an ``RRSegError``) naming the file for an unreadable,
    truncated or corrupt file, for a colour (RGB/RGBA) image where an index image is expected, and for
    pixels that are not integers (a float TIFF, kind ``label_dtype``).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in COLOUR_MODES:
                raise DataError(
                    "rgb_label",
                    f"{path}: label is a {mode} image; expected a single-channel index PNG "
                    f"(mode L or P) whose pixel values are class ids"
                )
            if mode not in INDEX_MODES:
                raise DataError(
                    "label_dtype",
                    f"{path}: label is a mode {mode} image; expected integer class ids "
                    f"(an index PNG of mode L, P or I;16, or an integer TIFF)"
                )
            arr = np.array(im) if writable else np.asarray(im)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError("missing_label", f"{path}: label file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            "corrupt_label", f"{path}: unreadable or corrupt label image ({e.__class__.__name__}: {e})"
        ) from None
    if arr.ndim != 2:
        raise DataError("corrupt_label", f"{path}: label has shape {arr.shape}; expected a 2-D index map")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif not arr.dtype.isnative:  # I;16B: big-endian 16-bit
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """mmsegmentation's reduce_zero_label: 0 ("other") becomes ignore, 1..K become 0..K-1, the ignore value stays.

    The one implementation, for datasets (at load time), ``rrseg stats`` (on a histogram's values) and ``rrseg
    score``. uint8 stays uint8 when ``ignore_index`` fits (int64 otherwise)."""
    if label.dtype == np.uint8:  # one look-up in a 256-entry table instead of three passes over the image
        return _zero_label_table(ignore_index)[label]
    return _shift_down(label.astype(np.int64), ignore_index)


def _shift_down(values: np.ndarray, ignore_index: int) -> np.ndarray:
    out = values - 1
    out[(values == 0) | (values == ignore_index)] = ignore_index
    return out


@functools.lru_cache(maxsize=8)
def _zero_label_table(ignore_index: int) -> np.ndarray:
    table = _shift_down(np.arange(256, dtype=np.int64), ignore_index)
    table = table.astype(np.uint8) if ignore_index <= 255 else table
    table.flags.writeable = False  # shared by every call (cached)
    return table


def find_files(root: str | os.PathLike, suffix: str = ".png") -> list[Path]:
    """All files under ``root`` (recursively) whose name ends with ``suffix``, sorted."""
    root = Path(root)
    if not root.exists():
        raise RRSegError(f"{root}: directory not found")
    if not root.is_dir():
        raise RRSegError(f"{root}: not a directory")
    return sorted(p for p in root.rglob(f"*{suffix}") if p.is_file())


def read_class_names(path: str | os.PathLike, num_classes: int) -> list[str]:
    """One class name per non-empty line; exactly ``num_classes`` of them."""
    path = Path(path)
    if not path.is_file():
        raise RRSegError(f"{path}: class-names file not found")
    try:
        names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RRSegError(f"{path}: cannot read class names ({type(e).__name__})") from None
    if len(names) != num_classes:
        raise RRSegError(f"{path}: {len(names)} class names, but --num-classes is {num_classes}")
    return names
