"""``--import MODULE``: a user's own models, datasets and losses for the commands that read configs, checkpoints
or datasets. The module is imported before anything else runs (before the config is read, which checks the names
it registers); its code registers them with rrseg's public decorators (``@rrseg.models.register_model``,
``@rrseg.data.register_dataset``, ``@rrseg.rebalance.register_loss``). A config only names them: it stays data
and never says what to import. Under torchrun every rank runs the same command line, so every rank imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from rrseg.errors import RRSegError

logger = logging.getLogger(__name__)


def add_import_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this Python module first (repeatable), e.g. one that registers a model, dataset or "
                        "loss of your own (@register_model, ...) that the config then names; a module of the current "
                        "folder is found too (my_models for ./my_models.py)")


def import_modules(names: Sequence[str]) -> None:
    """Import each module named on the command line; a failure is one RRSegError naming the module."""
    if not names:
        return
    # ./my_models.py is importable as `python -m` makes it, but after the installed packages (appended, not
    # prepended as -m does), so that a file of the current folder never hides a library of the same name
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                raise RRSegError(f"--import {name}: no module named {e.name!r} (looked in the current folder "
                                 f"{here} and the installed packages)") from None
            logger.debug("--import %s", name, exc_info=True)
            raise RRSegError(f"--import {name}: importing it failed: {e}") from None
        except RRSegError as e:
            raise RRSegError(f"--import {name}: {e}") from None
        except Exception as e:  # the module's own error (a typo, a name registered twice): -v shows the traceback
            logger.debug("--import %s", name, exc_info=True)
            detail = " ".join(str(e).split())
            raise RRSegError(f"--import {name}: importing it raised {type(e).__name__}"
                             f"{': ' + detail if detail else ''} (-v shows where)") from None
