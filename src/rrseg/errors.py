"""Expected errors: bad input that the user can fix. The CLI prints the one-line message and exits 2."""

from __future__ import annotations

__all__ = ["ConfigError", "RRSegError"]


class RRSegError(Exception):
    """An expected error whose message names the file, key or value at fault, in one line."""


class ConfigError(RRSegError):
    """A YAML file (a config, a folder dataset's dataset.yaml) or a value that does not fit its schema
    (:mod:`rrseg.schema`)."""
