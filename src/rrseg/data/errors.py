"""Dataset problems: :class:`DataError` and the problem kinds that ``rrseg check-data`` counts.

Training and ``rrseg check-data`` raise / report the same :class:`DataError` objects, so a user sees the same
one-line message (naming the file) either way.
"""

from __future__ import annotations

from rrseg.errors import RRSegError

__all__ = ["PROBLEM_KINDS", "WARNING_KINDS", "DataError"]

# kind -> what it means, in the words of the check-data summary.
PROBLEM_KINDS: dict[str, str] = {
    "config": "invalid dataset description",
    "missing_dir": "split directory not found",
    "empty_split": "split without images",
    "corrupt_image": "unreadable or corrupt image",
    "missing_label": "image without label",
    "missing_image": "name in a split list without an image",
    "corrupt_label": "unreadable or corrupt label",
    "rgb_label": "colour (RGB) label where an index PNG is expected",
    "label_dtype": "label of the wrong pixel type (e.g. 8-bit where 16-bit is expected)",
    "size_mismatch": "label size differs from image size",
    "label_range": "label values outside the class range",
    "duplicate": "two files for one sample",
    "orphan_label": "label without image",
}
# Kinds that are reported but do not make a check fail.
WARNING_KINDS = frozenset({"orphan_label"})


class DataError(RRSegError):
    """A problem with one file or folder of a dataset; ``kind`` is one of :data:`PROBLEM_KINDS`.

    ``DataError(kind, message)``. A DataLoader worker's error comes back to the main process re-created from
    one string (its traceback); that form keeps only the original one-line message, with kind "unknown".
    """

    def __init__(self, kind: str, message: str | None = None) -> None:
        if message is None:  # re-raised by torch's DataLoader: "Caught DataError in ...Traceback...DataError: msg"
            message, kind = _last_message(kind), "unknown"
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # picklable across worker processes despite the extra argument
        return (type(self), (self.kind, str(self)))


def _last_message(text: str) -> str:
    marker = f"{DataError.__module__}.{DataError.__qualname__}: "
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(marker):
            return line[len(marker):]
    return lines[-1] if lines else text
