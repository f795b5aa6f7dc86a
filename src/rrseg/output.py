"""What rrseg shows while it works: results, progress, warnings and errors, as logging levels.

The library writes nothing itself; it logs through ``logging.getLogger("rrseg.<module>")`` at these levels:

- **progress** (``logging.INFO``): what happens on the way: progress bars, one line per image or run,
  set-up messages ("global batch 8 = ...", "loaded 84/84 tensors", a dataset's statistics);
- **results** (``RESULT`` = 25, between INFO and WARNING): what a command is run for: its final tables
  (the evaluation report at the end of training, the demo's comparison) and the paths of what it wrote;
- **warnings and errors** (``logging.WARNING`` and above).

``rrseg -q`` sets the ``rrseg`` logger to ``RESULT``: results, warnings and errors stay, progress goes, for
every command alike. In Python, ``logging.basicConfig(level=logging.INFO)`` shows what the CLI shows,
``logging.getLogger("rrseg").setLevel(RESULT)`` what ``-q`` shows and ``setLevel(logging.WARNING)`` silences
both. Progress bars are progress: they are drawn only when the ``rrseg`` logger lets INFO through
(:func:`show_progress`).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["RESULT", "show_progress", "show_progress_bar"]

RESULT = 25
logging.addLevelName(RESULT, "RESULT")


def show_progress(logger: str = "rrseg") -> bool:
    """Whether progress (INFO) is shown: the ``rrseg`` logger (or ``logger``) lets INFO through."""
    return logging.getLogger(logger).isEnabledFor(logging.INFO)


def show_progress_bar(stream: TextIO | None = None) -> bool:
    """Whether to draw a progress bar: progress is shown (:func:`show_progress`) and ``stream`` (default
    ``sys.stderr``) is a terminal."""
    stream = sys.stderr if stream is None else stream
    return show_progress() and bool(getattr(stream, "isatty", lambda: False)())
