"""Expected errors: bad input that the user can fix. The CLI prints the one-line message and exits 2."""

from __future__ import annotations

__all__ = ["ConfigError", "RRSegError", "own_name_hint"]


class RRSegError(Exception):
    """An expected error whose message names the file, key or value at fault, in one line."""


class ConfigError(RRSegError):
    """A YAML file (a config, a folder dataset's dataset.yaml) or a value that does not fit its schema
    (:mod:`rrseg.schema`)."""


def own_name_hint(what: str) -> str:
    """The end of an "unknown name" message of a registry (models, datasets, losses): how a name of one's own
    becomes known."""
    return f"a {what} of your own: import the module that registers it first (rrseg COMMAND --import MODULE)"
