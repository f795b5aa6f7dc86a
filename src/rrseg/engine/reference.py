"""The config reference (docs/CONFIG.md), generated from the schema: every key, dotted, with its type and allowed
values, its default and its meaning, the loss sections' options per registered loss, and the packaged presets.

The meanings are the schema's own (:mod:`rrseg.schema`: the config sections' fields and the losses' options
tables), the allowed values those the config checks (``Literal`` types, ``RANGES``, the fields' ranges, the
registries), so the reference cannot say something the loader does not do. ``rrseg config reference -o docs/CONFIG.md``
writes it; tests/engine/test_config_reference.py fails when docs/CONFIG.md differs from :func:`config_reference`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

import yaml

from rrseg.engine import config as C
from rrseg.ranges import Range, field_range
from rrseg.rebalance.registry import loss_registry
from rrseg.schema import field_help

__all__ = ["REGENERATE", "config_reference", "schema_keys"]

REGENERATE = "rrseg config reference -o docs/CONFIG.md"

_INTRO = f"""\
# Config reference

> Generated from the schema (src/rrseg/engine/config.py, the loss options classes in src/rrseg/rebalance/) by
> `{REGENERATE}`. Do not edit by hand: change the schema and regenerate;
> tests/engine/test_config_reference.py fails when this file and the schema differ.

A config is a YAML file of the keys below; every key is optional and takes the default shown when left out.

- **`_base_`**: a file name or a list of them, relative to the config's folder, merged in order before the
  config's own keys (a nested mapping merges key by key; `_delete_: true` in a mapping replaces the base's
  instead).
- **`--set KEY=VALUE`** (`rrseg train`, `rrseg eval`, `rrseg config show`): overrides a dotted key; the value
  is read as YAML (`--set optim.lr=1e-4 data.crop_size=[256,256] loss.region.type=rr`).
- **Checks**: an unknown key is an error that names the closest valid one; a value of the wrong type, outside
  its range or not one of its choices (`model.name`, `data.*.type`, `loss.*.type`: the names registered) is an
  error naming the key and the value, as is a `model.options` key the model does not take; a key given twice
  in one mapping is an error. Nothing in a config is executed (`!!python` tags are refused).
- **By name**: a config that is not an existing file is looked up among the packaged presets (below), so
  `rrseg train upernet_swin_t/ade20k_160k_rr` and `rrseg train demo` work from any directory after
  `pip install`; in a checkout `configs/` is that folder (`rrseg train configs/demo.yaml`).
- **`rrseg config show CFG [--set ...]`** prints a config resolved: bases merged, overrides applied, every
  default filled in, `name` and `work_dir` set. Its output is a config itself.

In the tables a list's range applies to each item; "n items" is the length it must have.
"""


# ---------------------------------------------------------------------------------------------- formatting


def _value(value: Any) -> str:
    """A value as YAML writes it, on one line (what ``rrseg config show`` prints)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def _cell(text: str) -> str:
    text = re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", text)  # Sphinx roles (:func:`x`) as plain code
    return " ".join(text.split()).replace("|", "\\|")


def _sentence(text: str) -> str:
    text = _cell(text)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type(typing.get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _allowed(key: str, tp: Any, allowed: Range | None) -> str:
    """The type (a Literal: its choices) with what else the loader checks: a registry, a range (items: length)."""
    text = _type(tp)
    if key in C.REGISTERED:  # the dataset types, the models
        registry = C.REGISTERED[key]
        text += ": " + " \\| ".join(f"`{n}`" for n in registry.names()) + registry.note
    if allowed is not None:
        parts = []
        if allowed.length is not None:
            parts.append(f"{allowed.length} items")
        elif allowed.min_length:
            parts.append(f"at least {allowed.min_length} item{'s' if allowed.min_length > 1 else ''}")
        parts.append(str(allowed))
        text += f", {', '.join(parts)}"
    return text


def _row(key: str, tp: Any, default: Any, allowed: Range | None, meaning: str) -> str:
    return f"| `{key}` | {_allowed(key, tp, allowed)} | `{_value(default)}` | {_cell(meaning)} |"


_HEADER = "| key | type | default | meaning |\n|---|---|---|---|"


# ---------------------------------------------------------------------------------------------- the schema


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _is_loss(tp: Any) -> bool:
    return C._is_loss_section(tp)


def schema_keys() -> list[tuple[str, type, dataclasses.Field]]:
    """(dotted key, the dataclass that declares it, its field) of every plain key of :class:`Config` (sections
    walked; a loss section's keys are those of every registered loss of its kind), in schema order."""
    out: list[tuple[str, type, dataclasses.Field]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            tp = hints[f.name]
            if _is_loss(tp):
                for loss in loss_registry(tp.KIND).values():
                    out.extend((f"{key}.{g.name}", loss, g) for g in dataclasses.fields(loss))
            elif _is_section(tp):
                walk(tp, f"{key}.")
            else:
                out.append((key, cls, f))

    walk(C.Config, "")
    return out


def _table(cls: type, instance: Any, prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = [_HEADER]
    for f in dataclasses.fields(cls):
        if f.name in skip or _is_section(hints[f.name]):
            continue
        key = f"{prefix}{f.name}"
        allowed = C.RANGES.get(key) or field_range(f)
        lines.append(_row(key, hints[f.name], getattr(instance, f.name), allowed, field_help(cls, f)))
    return lines


def _own_options(cls: type, base: type) -> tuple[str, ...]:
    """The fields of a loss's options class that its kind's base class lacks or defaults otherwise."""
    shared = {f.name: f for f in dataclasses.fields(base)}
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "type" and (
        f.name not in shared or getattr(cls(), f.name) != getattr(base(), f.name)))


def _loss_section(key: str, base: Any, default: str, meaning: str) -> list[str]:
    losses = loss_registry(base.KIND)
    common = [f.name for f in dataclasses.fields(base) if f.name != "type"]
    lines = [f"### `{key}`", "", _sentence(meaning), "",
             f"`{key}.type` (str, default `{default}`) names the loss: "
             + ", ".join(f"`{n}`" for n in losses)
             + ". The section's other keys are that loss's options, listed below per loss with their defaults; a "
               "key of another loss is an error.", ""]
    if common:
        lines += [f"Every {base.KIND} loss takes:", "", *_table(base, base(), f"{key}.", skip=("type",)), ""]
    for name, cls in losses.items():
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        own = _own_options(cls, base)
        lines += [f"#### `{key}.type: {name}`", "", _sentence(doc.removeprefix(f"{name}:").strip()), ""]
        if not own:
            lines += [f"No options{' besides those above' if common else ''}.", ""]
            continue
        if common:
            lines += ["Besides those above:", ""]
        skip = tuple(f.name for f in dataclasses.fields(cls) if f.name not in own)
        lines += [*_table(cls, cls(), f"{key}.", skip=skip), ""]
    return lines


def _sections(cls: type, instance: Any, prefix: str, meaning: str) -> list[str]:
    """The table of a section's plain keys, then its sections, each under its own heading."""
    hints = typing.get_type_hints(cls)
    title = f"`{prefix.rstrip('.')}`" if prefix else "Top-level keys"
    lines = [f"{'##' if prefix.count('.') <= 1 else '###'} {title}", "", _sentence(meaning), ""]
    if any(not _is_section(hints[f.name]) for f in dataclasses.fields(cls)):
        lines += [*_table(cls, instance, prefix), ""]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if _is_loss(tp):
            lines += _loss_section(key, tp, getattr(instance, f.name).type, field_help(cls, f))
        elif _is_section(tp):
            lines += _sections(tp, getattr(instance, f.name), f"{key}.", field_help(cls, f))
    return lines


def _presets() -> list[str]:
    names = C.preset_names()
    folders: dict[str, list[str]] = {}
    for name in names:
        folder, _, stem = name.rpartition("/")
        folders.setdefault(folder, []).append(stem)
    lines = ["## Packaged presets", "",
             "Configs shipped with the package (`src/rrseg/configs/`; `configs/` in a checkout), each reachable by "
             "name: `rrseg train NAME`, `rrseg eval NAME CHECKPOINT`, `rrseg check-data NAME`, `rrseg config show "
             "NAME` (`rrseg config list` names them). `_base_/` holds the fragments they share. The paper presets' "
             "datasets are in mmseg's layout under `data/`; `--set data.train.root=DIR data.val.root=DIR` points "
             "them elsewhere.", ""]
    for folder, stems in sorted(folders.items()):
        listed = ", ".join(f"`{folder + '/' if folder else ''}{s}`" for s in stems)
        lines.append(f"- {listed}")
    return [*lines, ""]


def config_reference() -> str:
    """docs/CONFIG.md: the config reference, generated from the schema."""
    lines = [_INTRO]
    lines += _sections(C.Config, C.Config(), "", "The run's name and work dir; the sections follow")
    lines += _presets()
    return "\n".join(lines).rstrip("\n") + "\n"
