"""Expected errors: bad input that the user can fix. The CLI prints the one-line message and exits 2."""

from __future__ import annotations

__all__ = ["RRSegError"]


class RRSegError(Exception):
    """An expected error whose message names the file, key or value at fault, in one line."""
