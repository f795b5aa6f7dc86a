"""The dataset registry: ``@register_dataset(name, aliases=..., detect=...)`` on a dataset class.

A dataset is one file: a :class:`~rrseg.data.base.LayoutDataset` subclass that declares its folders, suffixes,
classes, palette, ignore index and reduce_zero_label as class attributes, registered by this decorator. The
decorator works from any module, also one outside rrseg; :func:`rrseg.data.build_dataset`,
:func:`rrseg.data.detect_layout`, ``rrseg check-data`` / ``rrseg stats`` and the configs' ``data.*.type`` then
know the dataset. :mod:`rrseg.data.builder` builds and recognises datasets from this registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rrseg.data.base import LayoutDataset, SegDataset
from rrseg.errors import RRSegError

__all__ = ["DATASETS", "Detector", "dataset_key", "detectors", "load_builtins", "register_dataset", "resolve_name"]

Detector = Callable[[Path], Path | None]
"""A layout detector: the dataset's root when the folder given is (or holds) the dataset, else None."""

_T = TypeVar("_T", bound=type[SegDataset])

# The datasets that ship with rrseg, by module, in the order DATASETS lists them (and messages name them).
_BUILTINS = ("ade20k", "ade20k_full", "coco_stuff", "cityscapes", "folder")

DATASETS: dict[str, type[SegDataset]] = {}
"""Registered name -> dataset class: the built-in datasets first, then the others in registration order."""
_ALIASES: dict[str, str] = {}


@dataclass(frozen=True)
class _Detection:
    detect: Detector
    priority: int


_DETECTORS: dict[str, _Detection] = {}
_builtins_loaded = False


def dataset_key(name: str) -> str:
    """The registry's spelling of a name: case, surrounding blanks and ``-`` / ``_`` are forgiven."""
    return name.strip().lower().replace("-", "_")


def resolve_name(name: str) -> str | None:
    """The registered name that ``name`` (a name or an alias, any case) stands for, or None."""
    key = dataset_key(name)
    key = _ALIASES.get(key, key)
    return key if key in DATASETS else None


def _rank(cls: type) -> int:
    module = cls.__module__
    short = module.rpartition(".")[2] if module.startswith("rrseg.data.") else ""
    return _BUILTINS.index(short) if short in _BUILTINS else len(_BUILTINS)


def load_builtins() -> None:
    """Import (and so register) the datasets that ship with rrseg; once."""
    global _builtins_loaded
    if not _builtins_loaded:
        for module in _BUILTINS:
            importlib.import_module(f"rrseg.data.{module}")
        _builtins_loaded = True


def register_dataset(
    name: str,
    *,
    aliases: Iterable[str] = (),
    detect: Detector | bool | None = None,
    priority: int = 0,
) -> Callable[[_T], _T]:
    """Class decorator: register a dataset class under ``name`` (and ``aliases``) for ``build_dataset`` and
    the configs' ``data.train.type``::

        from rrseg.data import LayoutDataset, register_dataset

        @register_dataset("toy", aliases=("toy_v1",), detect=True)
        class ToyDataset(LayoutDataset):
            SPLITS = {"train": "training", "val": "validation"}   # split name -> folder name
            IMAGES_DIR, LABELS_DIR = "images", "annotations"      # ROOT/<dir>/<split folder>/**/NAME<suffix>
            IMAGE_SUFFIX, LABEL_SUFFIX = ".jpg", ".png"
            CLASSES = ("background", "cat", "dog")
            PALETTE = ((0, 0, 0), (255, 0, 0), (0, 0, 255))       # optional: a default palette otherwise
            IGNORE_INDEX = 255
            REDUCE_ZERO_LABEL = False

    Names and aliases are matched without regard to case, ``-`` or ``_`` (``Toy-V1`` is ``toy_v1``). The class
    must subclass :class:`~rrseg.data.base.SegDataset` and take ``(root, split="train", transforms=None,
    strict=True)``; a :class:`~rrseg.data.base.LayoutDataset` subclass needs only its class attributes.
    The decorator sets the class's ``NAME`` to ``name``.

    ``detect``: how :func:`rrseg.data.detect_layout` (``rrseg check-data PATH``, ``rrseg stats PATH``)
    recognises the dataset on disk: a function ``(folder: Path) -> root or None``, or ``True`` for the class's
    own ``detect`` (a ``LayoutDataset``: one of its split folders under ``IMAGES_DIR``); None: found only by name.
    A folder with ``dataset.yaml`` is a folder dataset before any detector is asked, and a folder that no
    detector takes but that has an ``images/`` folder is one after all of them. Detectors are tried by
    ``priority`` (higher first), then in the order of DATASETS. ``LAYOUT`` (a class attribute, e.g.
    ``"Cityscapes leftImg8bit"``) names the layout in the message when nothing is recognised.

    A name or alias that is already taken (as a name or an alias) is an ``RRSegError``.
    """
    key = dataset_key(name)
    if not key:
        raise RRSegError(f"register_dataset: a dataset needs a name, got {name!r}")
    alias_keys = [a for a in dict.fromkeys(dataset_key(a) for a in aliases) if a != key]
    if not (detect is True or detect is None or callable(detect)):
        raise RRSegError(f"register_dataset({name!r}): detect must be a function, True or None, got {detect!r}")

    def decorate(cls: _T) -> _T:
        if not (isinstance(cls, type) and issubclass(cls, SegDataset)):
            raise RRSegError(f"register_dataset({name!r}): {cls!r} is not a subclass of rrseg.data.SegDataset")
        if _rank(cls) == len(_BUILTINS):
            load_builtins()  # a clash with a built-in name is then reported here, naming this class
        taken = {**{n: n for n in DATASETS}, **_ALIASES}  # a name or alias -> the dataset it stands for
        for new in (key, *alias_keys):
            if new in taken:
                owner = taken[new]
                raise RRSegError(
                    f"register_dataset: {'name' if new == key else 'alias'} {new!r} of {_describe(cls)} is already "
                    f"taken by dataset {owner!r} ({_describe(DATASETS[owner])}); choose another"
                )
        detector: Detector | None = None
        if detect is True:
            detector = getattr(cls, "detect", None)
            if not callable(detector):
                raise RRSegError(f"register_dataset({name!r}, detect=True): {_describe(cls)} has no detect(folder) "
                                 "method; pass detect=a function (folder -> root or None)")
        elif callable(detect):
            detector = detect
        if issubclass(cls, LayoutDataset):
            cls.check_declaration(key)
        cls.NAME = key
        entries = sorted([*DATASETS.items(), (key, cls)], key=lambda item: _rank(item[1]))  # stable
        DATASETS.clear()
        DATASETS.update(entries)
        _ALIASES.update(dict.fromkeys(alias_keys, key))
        if detector is not None:
            _DETECTORS[key] = _Detection(detector, int(priority))
        return cls

    return decorate


def _describe(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def detectors() -> list[tuple[str, Detector]]:
    """(name, detector) of the datasets with one, in the order they are tried."""
    order = [name for name in DATASETS if name in _DETECTORS]
    order.sort(key=lambda name: -_DETECTORS[name].priority)  # stable: DATASETS order among equals
    return [(name, _DETECTORS[name].detect) for name in order]
