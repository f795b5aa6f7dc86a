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
    "corrupt_label": "unreadable or corrupt label",
    "rgb_label": "colour (RGB) label where an index PNG is expected",
    "size_mismatch": "label size differs from image size",
    "label_range": "label values outside the class range",
    "duplicate": "two files for one sample",
    "orphan_label": "label without image",
}
# Kinds that are reported but do not make a check fail.
WARNING_KINDS = frozenset({"orphan_label"})


class DataError(RRSegError):
    """A problem with one file or folder of a dataset; ``kind`` is one of :data:`PROBLEM_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # picklable across worker processes despite the extra argument
        return (type(self), (self.kind, str(self)))
