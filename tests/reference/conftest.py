"""tests/reference: comparisons against mmsegmentation 1.2.2's own modules (marker ``mmseg``), run by
``make test-mmseg`` in its venv (.venv-mmseg). Anywhere mmseg does not import (the normal .venv, CI) every test here
marked ``mmseg`` is skipped, with the reason. Test modules here must import mmseg / mmcv / mmengine / mmpretrain
lazily (inside tests or fixtures, or through ``mmseg_env``), never at module level, so that collection works
without them."""

from __future__ import annotations

import pytest

from tests.reference import mmseg_env


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("mmseg") is not None and not mmseg_env.available():
        pytest.skip(f"needs mmsegmentation (make test-mmseg): {mmseg_env.unavailable_reason()}")
