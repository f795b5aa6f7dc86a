"""rrseg: Region Rebalance for long-tailed semantic segmentation."""

from rrseg.types import SegOutput

__version__ = "0.1.0"
__all__ = ["SegOutput", "__version__"]
