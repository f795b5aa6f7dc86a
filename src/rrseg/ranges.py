"""Allowed ranges of numeric config values, written as data: ``Range(">= 1")``, ``Range("(0, 1]")``.

The config schema (``rrseg.engine.config.RANGES``, a table of dotted keys) and each loss's options class (its
fields declared with :func:`ranged`) give the range of every numeric key; loading a config checks each value
against it (a list item by item, and its number of items when the range says). The text of a range is the one
the error messages show: ``config key 'optim.lr': -1.0 is not > 0``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

__all__ = ["RANGE", "Range", "field_range", "ranged"]

RANGE = "range"  # the key of a field's range in its dataclass metadata

_BOUND = re.compile(r"(>=|>|<=|<)\s*([^\s,\[\]()]+)")
_INTERVAL = re.compile(r"([\[(])\s*([^\s,\[\]()]+)\s*,\s*([^\s,\[\]()]+)\s*([\])])")


class Range:
    """The finite numbers a key allows: ``">= 1"``, ``"> 0"``, ``"<= 1"``, ``"< 1"``, or an interval closed or
    open at either end, ``"[0, 1]"``, ``"(0, 1]"``, ``"[0, 1)"``, ``"(0, 1)"``. ``.nan`` and ``.inf`` are never
    inside. For a list key every item must be inside, and ``length`` (exact) or ``min_length`` bound its number
    of items."""

    __slots__ = ("high", "high_open", "length", "low", "low_open", "min_length", "spec")

    def __init__(self, spec: str, *, length: int | None = None, min_length: int = 0) -> None:
        self.low: float | None = None
        self.high: float | None = None
        self.low_open = self.high_open = False
        self.length, self.min_length = length, min_length
        text = spec.strip()
        if m := _BOUND.fullmatch(text):
            op, num = m.groups()
            if op.startswith(">"):
                self.low, self.low_open = _number(num, spec), op == ">"
            else:
                self.high, self.high_open = _number(num, spec), op == "<"
            self.spec = f"{op} {num}"
        elif m := _INTERVAL.fullmatch(text):
            left, lo, hi, right = m.groups()
            self.low, self.high = _number(lo, spec), _number(hi, spec)
            self.low_open, self.high_open = left == "(", right == ")"
            if self.low > self.high:
                raise ValueError(f"range {spec!r}: the low end is above the high end")
            self.spec = f"{left}{lo}, {hi}{right}"
        else:
            raise ValueError(f"range {spec!r}: write it as '>= 1', '> 0', '<= 1', '[0, 1]', '(0, 1]' or '[0, 1)'")

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        """``>= 1`` or ``in [0, 1]``: what follows "is not" in a message."""
        return self.spec if self.low is None or self.high is None else f"in {self.spec}"

    def __repr__(self) -> str:
        extra = f", length={self.length}" if self.length is not None else ""
        extra += f", min_length={self.min_length}" if self.min_length else ""
        return f"Range({self.spec!r}{extra})"


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"range {spec!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"range {spec!r}: a bound must be finite (leave the side out instead)")
    return value


def ranged(default: Any, spec: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and an allowed range: ``gamma: float = ranged(2.0, ">= 0")``; ``default``
    may be a field already (``ranged(setting(2.0, "..."), ">= 0")``: its default and metadata are kept).
    ``kwargs``: those of :class:`Range`."""
    allowed = Range(spec, **kwargs)
    if isinstance(default, dataclasses.Field):
        return dataclasses.field(default=default.default, default_factory=default.default_factory,
                                 metadata={**default.metadata, RANGE: allowed})
    return dataclasses.field(default=default, metadata={RANGE: allowed})


def field_range(f: dataclasses.Field) -> Range | None:
    """The range a dataclass field declares (:func:`ranged`), or None."""
    return f.metadata.get(RANGE)
