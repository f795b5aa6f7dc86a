"""The one schema mechanism of the YAML the package reads (a training config, a folder dataset's dataset.yaml).

A schema is a dataclass. A field's type says what a value may be: ``bool``, ``int``, ``float``, ``str``,
``Literal["a", "b"]`` (the allowed strings), ``list[...]``, ``dict[str, Any]`` (free-form), ``X | None``, or a
nested dataclass (a section). Its metadata holds its meaning (:func:`setting`, :func:`section`) and its allowed
range (:func:`rrseg.ranges.ranged`). A loss's options class (:mod:`rrseg.rebalance`) names its options'
meanings in a class table, ``OPTIONS_HELP: ClassVar[dict[str, str]] = {"gamma": "..."}``, read through the
class's bases too; :func:`field_help` reads either. The config reference (``rrseg config reference``,
docs/CONFIG.md) is generated from them, and a test fails for a key without a meaning.

:class:`Checker` checks a mapping against a schema: an unknown key is an error naming the closest valid key, a
value of the wrong type or outside its range (or not a name its :class:`Registered` registry knows) an error
naming the key and the value, each a one-line :class:`~rrseg.errors.ConfigError`. :func:`read_yaml` is the one
reader of such files: YAML's safe loader (plain data; a ``!!python`` tag is refused), duplicate keys refused.
Torch-free: the standard library and PyYAML.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from rrseg.errors import ConfigError, RRSegError
from rrseg.ranges import Range, field_range

__all__ = [
    "HELP_KEY",
    "OPTIONS_HELP",
    "Checker",
    "Registered",
    "field_help",
    "parse_yaml",
    "read_yaml",
    "section",
    "setting",
    "type_name",
]

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


# ---------------------------------------------------------------------------------------------- checking


@dataclasses.dataclass(frozen=True)
class Registered:
    """A string key that names an entry of a registry (a dataset type, a model): ``check(name)`` raises an
    RRSegError naming close or known names; ``names()`` lists them and ``note`` follows the list (the config
    reference)."""

    check: Callable[[str], Any]
    names: Callable[[], Iterable[str]]
    note: str = ""


def type_name(tp: Any) -> str:
    """A field type in the words of the messages: ``list of int``, ``float or null``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin is Literal:
        return " | ".join(map(str, typing.get_args(tp)))
    if origin is dict or tp is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _close(value: str, valid: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(value, list(valid), n=1, cutoff=0.5)
    return close[0] if close else None


@dataclasses.dataclass(frozen=True)
class Checker:
    """Checks mappings against schema dataclasses; every error is one line naming the key (its dotted path).

    ``noun``: how a message names a key (``config key 'optim.lr': ...``). ``ranges``: ranges by dotted key,
    besides those the fields declare. ``registered``: the keys whose value names a registry entry.
    ``builders``: sections of these (declared) types built by the function given instead of field by field
    (a loss section, whose ``type`` picks its options class)."""

    noun: str = "config key"
    ranges: Mapping[str, Range] = dataclasses.field(default_factory=dict)
    registered: Mapping[str, Registered] = dataclasses.field(default_factory=dict)
    builders: Mapping[type, Callable[[type, dict, str], Any]] = dataclasses.field(default_factory=dict)

    def error(self, key: str, msg: str) -> ConfigError:
        """``config key 'optim.lr': msg``."""
        return ConfigError(f"{self.noun} {key!r}: {msg}")

    def unknown(self, key: str, valid: Iterable[str], prefix: str = "") -> typing.NoReturn:
        """Raise for the unknown key ``key`` of section ``prefix``, suggesting the closest of ``valid``."""
        valid = sorted(valid)
        where = f"{prefix}.{key}" if prefix else key
        close = _close(key, valid)
        hint = f"; did you mean {(prefix + '.' if prefix else '') + close!r}?" if close else ""
        raise ConfigError(f"unknown {self.noun} {where!r}{hint} (valid here: {', '.join(valid)})")

    def build(self, cls: type, data: Mapping, prefix: str = "") -> Any:
        """An instance of the schema dataclass ``cls`` from ``data`` (keys left out: the defaults), checked."""
        return cls(**self.values(cls, data, prefix))

    def values(self, cls: type, data: Mapping, prefix: str = "") -> dict[str, Any]:
        """The checked values of the keys ``data`` gives (``prefix``: the dotted path of the section ``cls``)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                self.unknown(str(key), fields, prefix)
            full = f"{prefix}.{key}" if prefix else key
            out[key] = self.coerce(value, hints[key], full)
            if full in self.registered:
                try:
                    self.registered[full].check(out[key])
                except RRSegError as e:  # the registry's own message, naming close or known names
                    raise self.error(full, str(e)) from None
            allowed = self.ranges.get(full) or field_range(fields[key])
            if allowed is not None:
                self.check_range(full, out[key], allowed)
        return out

    def coerce(self, value: Any, tp: Any, key: str) -> Any:
        """``value`` checked against the field type ``tp`` (an int where a float is expected: the float)."""
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(tp):
                try:
                    return self.coerce(value, arg, key)
                except ConfigError:
                    continue
            raise self.error(key, f"{value!r} is not a {type_name(tp)}")
        if tp is type(None):
            if value is None:
                return None
            raise self.error(key, f"expected null, got {value!r}")
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise self.error(key, f"expected a {type_name(tp)}, got {value!r}")
            (item,) = typing.get_args(tp)
            return [self.coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise self.error(key, f"expected a mapping, got {value!r}")
            return copy.deepcopy(value)
        if tp is Any:
            return value
        if origin is Literal:
            allowed = typing.get_args(tp)
            if isinstance(value, str) and value in allowed:
                return value
            close = _close(str(value), allowed)
            hint = f"; did you mean {close!r}?" if close else ""
            raise self.error(key, f"{value!r} is not one of {', '.join(allowed)}{hint}")
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise self.error(key, f"expected a section (mapping), got {value!r}")
            return self.builders.get(tp, self.build)(tp, value, key)
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads 6e-5 as a string
                try:
                    return float(value)
                except ValueError:
                    pass
        elif tp is str and isinstance(value, str):
            return value
        raise self.error(key, f"expected {type_name(tp)}, got {value!r}")

    def check_range(self, key: str, value: Any, allowed: Range) -> None:
        """Raise if a number (or a list's length or items, nested lists item by item) is outside ``allowed``;
        None (an unset optional key) passes."""
        if value is None:
            return
        if isinstance(value, list):
            n = len(value)
            if allowed.length is not None and n != allowed.length:
                raise self.error(key, f"{value!r} has {n} item{'' if n == 1 else 's'}, expected {allowed.length} "
                                      f"(each {allowed})")
            if n < allowed.min_length:
                raise self.error(key, f"{value!r} has {n} item{'' if n == 1 else 's'}, expected at least "
                                      f"{allowed.min_length} (each {allowed})")
            for i, item in enumerate(value):
                self.check_range(f"{key}[{i}]", item, allowed)
            return
        if value not in allowed:
            raise self.error(key, f"{value!r} is not {allowed}")


# ---------------------------------------------------------------------------------------------- reading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that also refuses duplicate keys (a silent override is a bug in the file)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> Any:
    """The plain data of YAML ``text`` (the safe loader). A duplicate key is a ConfigError; a refused tag
    (``!!python/...``) or invalid YAML is PyYAML's error (:func:`read_yaml` words them)."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain data only


def read_yaml(path: str | os.PathLike, what: str = "config") -> dict:
    """The YAML mapping in the file ``path`` (:func:`parse_yaml`); every problem is a ConfigError naming the file.
    ``what``: what the file is, in the messages (``config``, ``dataset description``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read {what} ({e.__class__.__name__})") from None
    try:
        data = parse_yaml(text)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.constructor.ConstructorError as e:
        tag = getattr(e, "problem", "") or str(e)
        raise ConfigError(f"{path}: refused a YAML tag ({tag.strip()}); {what}s are plain data") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        detail = " ".join(str(getattr(e, "problem", None) or e).split())  # a ReaderError spans lines
        raise ConfigError(f"{path}: invalid YAML{where} ({detail})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys, got {type(data).__name__}")
    return data
