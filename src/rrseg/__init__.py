"""rrseg: Region Rebalance for long-tailed semantic segmentation."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SegOutput", "__version__"]


def __getattr__(name: str) -> Any:
    # torch is imported when a model or loss is used, not by `import rrseg` (so `rrseg --help` answers at once)
    if name == "SegOutput":
        from rrseg.types import SegOutput

        return SegOutput
    raise AttributeError(f"module 'rrseg' has no attribute {name!r}")
