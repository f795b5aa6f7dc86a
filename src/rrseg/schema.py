"""The meanings of config keys, kept where the keys are declared.

The config's sections (:mod:`rrseg.engine.config`) are dataclasses whose fields are made with :func:`setting` (a
value) or :func:`section` (a nested dataclass): the field's metadata holds its meaning. A loss's options class
(:mod:`rrseg.rebalance`, whose fields also carry their allowed range, :func:`rrseg.ranges.ranged`) names its
options' meanings in a class table, ``OPTIONS_HELP: ClassVar[dict[str, str]] = {"gamma": "..."}``, read through
the class's bases too. :func:`field_help` reads either. The config reference (``rrseg config reference``,
docs/CONFIG.md) is generated from them, and a test fails for a key without a meaning. Torch-free: only the
standard library.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["HELP_KEY", "OPTIONS_HELP", "field_help", "section", "setting"]

HELP_KEY = "help"  # the metadata entry of a schema field that holds its meaning
OPTIONS_HELP = "OPTIONS_HELP"  # the class table of a loss's options class: {option: meaning}


def setting(default: Any, help: str) -> Any:
    """A config key with ``default`` (a list or mapping is copied for each instance) and its meaning ``help``."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={HELP_KEY: help})
    return dataclasses.field(default=default, metadata={HELP_KEY: help})


def section(factory: Callable[[], Any], help: str) -> Any:
    """A nested section (a dataclass made by ``factory``) and its meaning ``help``."""
    return dataclasses.field(default_factory=factory, metadata={HELP_KEY: help})


def field_help(cls: type, f: dataclasses.Field) -> str:
    """The meaning of the field ``f`` of the dataclass ``cls``: its own (:func:`setting`, :func:`section`), else the
    ``OPTIONS_HELP`` table of ``cls`` or of the nearest base class that has the name; "" when none says."""
    if f.metadata.get(HELP_KEY):
        return str(f.metadata[HELP_KEY])
    for klass in cls.__mro__:
        table = vars(klass).get(OPTIONS_HELP) or {}
        if f.name in table:
            return str(table[f.name])
    return ""
