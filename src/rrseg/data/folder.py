"""One's own data: a folder of images and a folder of label maps; split folders, split lists and
``dataset.yaml`` are all optional.

Layout (ROOT is the dataset's root, ``data.train.root`` in a training config; a relative root is taken from
the current directory)::

    ROOT/images/**/NAME.jpg|png        images (sub-folders allowed)
    ROOT/masks/**/NAME.png             index PNGs (pixel value = class id), matched to the image by relative
                                       path and stem; the label folder is the first of masks/, labels/,
                                       annotations/ that holds label files (two that do: an error; set
                                       ``labels_dir``)
    ROOT/dataset.yaml                  optional: class names, palette, ignore index, ... (below)

Splits. For split S (``data.train.split`` / ``data.val.split``) the first of these that applies:

1. ``split_file`` (an option): a text file of sample names, one a line (mmseg's ``ann_file``): the image's
   path relative to the images folder, without suffix (``a/b/x`` for ``images/a/b/x.jpg``; a suffix, ``./``,
   a path from ROOT and a second word, e.g. the label's path, are forgiven); empty lines and lines starting
   with ``#`` are skipped. Relative to ROOT. When ``images/S`` exists the names are relative to it.
2. a split list file ``ROOT/splits/S.txt`` or ``ROOT/S.txt`` (found by itself; the same format).
3. split folders: ``images/S/`` and ``masks/S/`` (``images/`` holding only sub-folders and no images of its
   own: each sub-folder is a split, any names).
4. no split (images directly in ``images/``, no lists): an automatic split into ``train`` and ``val``. The
   images are ranked by the SHA-256 hash of ``"<split_seed>:<name>"`` (name: the relative path without
   suffix); the first ``round(n * val_fraction)`` (at least 1, at most n - 1) are ``val``, the others
   ``train``: disjoint, together every image, the same on every machine and run, and an added image moves at
   most one other image between the two (``val_fraction`` 0.1 and ``split_seed`` 0 by default).

Classes. From ``classes`` (dataset.yaml or options), else from the labels: ``num_classes`` = the largest
label value + 1 over every label file under the label folder (every split), ignoring ``ignore_index``
(default 255); the classes are named by id ("0", "1", ...). The labels are read once per process (cached while
the files are unchanged), in parallel for large sets.

Keys of ``dataset.yaml``, every one optional (each may also be given as an option of the dataset, e.g.
``data.train.options.labels_dir`` in a training config or ``FolderDataset(root, labels_dir=...)``; an option
wins over the YAML)::

    name: my-dataset                 # default: the folder's name
    classes: [road, building, sky]   # names in label-value order (or a count); default: counted, named by id
    palette: [[128, 64, 128], ...]   # one RGB triple per class
    ignore_index: 255                # default 255
    reduce_zero_label: false         # 0 = "other" -> ignore, 1..K -> 0..K-1
    image_suffix: .jpg               # default: any of .jpg .jpeg .png .bmp .webp .tif .tiff
    label_suffix: .png               # default .png (e.g. _labelTrainIds.png)
    images_dir: images               # default images
    labels_dir: masks                # default: the first of masks, labels, annotations holding label files
    val_fraction: 0.1                # the automatic split's validation share (0 < f < 1)
    split_seed: 0                    # the automatic split's seed
    info: {...}                      # free-form (e.g. how the data was made)

``split_file`` is an option only (it is per split). Every not-found or mismatch message names the folders or
files looked at, as absolute paths, and the key that changes them. :func:`inspect_folder` describes a folder
without building a dataset per split by hand (layout, splits, class count, ignore index, image sizes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrseg.data.base import IMAGE_SUFFIXES, Sample, ScanResult, SegDataset, _walk, image_sizes
from rrseg.data.errors import DataError
from rrseg.data.registry import register_dataset
from rrseg.errors import ConfigError
from rrseg.ranges import ranged
from rrseg.schema import Checker, read_yaml

__all__ = [
    "AUTO_SPLITS",
    "DEFAULT_SPLIT_SEED",
    "DEFAULT_VAL_FRACTION",
    "LABEL_DIRS",
    "FolderDataset",
    "FolderLayout",
    "FolderSpec",
    "FolderSummary",
    "count_classes",
    "inspect_folder",
    "load_folder_spec",
    "resolve_layout",
    "split_keys",
]

SPEC_NAME = "dataset.yaml"
IMAGES_DIR = "images"
LABEL_DIRS = ("masks", "labels", "annotations")  # in order of preference
SPLITS_DIR = "splits"
# ROOT/<name>.txt files taken for split lists (besides every ROOT/splits/*.txt and the requested split's)
LIST_NAMES = ("train", "val", "test", "trainval", "training", "validation")
AUTO_SPLITS = ("train", "val")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 0
DEFAULT_IGNORE_INDEX = 255

# The schema of dataset.yaml and of a folder dataset's options (the keys are described above), checked by
# rrseg.schema.Checker as a training config is: types, ranges, unknown keys. These classes are never made: only
# their fields' types and ranges are read (a field without a default: ranged(MISSING, ...)). What no type says
# (class names unique, strings not empty, palette triples, the keys together) is checked by _parse.
@dataclass
class _FolderKeys:
    name: str | None
    classes: int | list[str | int]  # a count, or the names in label-value order
    palette: list[list[int]] | None = ranged(dataclasses.MISSING, "[0, 255]")
    ignore_index: int = ranged(dataclasses.MISSING, ">= 0")
    reduce_zero_label: bool
    image_suffix: str | None
    label_suffix: str | None
    images_dir: str | None
    labels_dir: str | None
    val_fraction: float = ranged(dataclasses.MISSING, "(0, 1)")
    split_seed: int


@dataclass
class _YamlKeys(_FolderKeys):
    info: dict[str, Any] | None  # free-form


@dataclass
class _OptionKeys(_FolderKeys):
    split_file: str | None  # an option only (it is per split)


_YAML_KEYS = frozenset(f.name for f in dataclasses.fields(_YamlKeys))
_NOT_EMPTY = ("image_suffix", "label_suffix", "images_dir", "labels_dir", "split_file")


# ---------------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class FolderSpec:
    """What describes a folder dataset: ``dataset.yaml`` (if any) merged with the options; ``root`` is absolute.

    ``class_names`` None: counted from the labels; ``labels_dir`` None: detected (see :func:`resolve_layout`).
    """

    root: Path
    yaml_path: Path | None
    class_names: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int = DEFAULT_IGNORE_INDEX
    reduce_zero_label: bool = False
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    label_suffix: str = ".png"
    images_dir: str = IMAGES_DIR
    labels_dir: str | None = None
    name: str = ""
    info: dict | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    split_seed: int = DEFAULT_SPLIT_SEED
    split_file: str | None = None
    config_key: str = ""  # "data.train" when built from a training config: named in messages
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> "yaml" | "options"

    def key(self, name: str) -> str:
        """The config key of dataset setting ``name`` ("root", "split", "options.labels_dir"), as a message
        names it: ``data.train.options.labels_dir`` (``data.<train|val>...`` outside a training config)."""
        return f"{self.config_key or 'data.<train|val>'}.{name}"

    def option_hint(self, name: str) -> str:
        """``set data.train.options.labels_dir (or labels_dir in dataset.yaml)``."""
        tail = f" (or {name} in {SPEC_NAME})" if name in _YAML_KEYS else ""
        return f"set {self.key('options.' + name)}{tail}"

    def splits(self) -> list[str]:
        """The split names of this dataset (see :func:`resolve_layout`)."""
        return list(resolve_layout(self).splits)


def _parse(data: Mapping[str, Any], where: str, schema: type, checker: Checker, prefix: str = "") -> dict:
    """The checked values of ``data`` (dataset.yaml or the options; ``prefix``: their config section, when they
    come from a config) against ``schema``; a null value is a key left out; errors name ``where`` and the key."""
    def bad(msg: str) -> DataError:
        return DataError("config", f"{where}: {msg}")

    def quote(key: str) -> str:
        return repr(f"{prefix}.{key}" if prefix else key)

    try:
        out = {k: v for k, v in checker.values(schema, data, prefix).items() if v is not None}
    except ConfigError as e:
        raise bad(str(e)) from None
    if "classes" in out:
        classes = out["classes"]
        if isinstance(classes, int):
            names = tuple(f"class_{i}" for i in range(classes))
        else:
            names = tuple(str(c) for c in classes)
        if not names:
            raise bad(f"{quote('classes')} must be a non-empty list of class names (or a class count)")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise bad(f"class name {dup!r} appears twice in {quote('classes')}")
        out["classes"] = names
    if "palette" in out:
        if not all(len(c) == 3 for c in out["palette"]):
            raise bad(f"{quote('palette')} must be a list of [R, G, B] triples of integers 0..255")
        out["palette"] = tuple(tuple(c) for c in out["palette"])
    for key in _NOT_EMPTY:
        if out.get(key) == "":
            raise bad(f"{quote(key)} must not be empty")
    _cross_check(out, bad, quote)
    return out


def _cross_check(values: Mapping[str, Any], bad: Callable[[str], DataError], quote: Callable[[str], str]) -> None:
    names = values.get("classes")
    if names is None:
        return
    palette = values.get("palette")
    if palette is not None and len(palette) != len(names):
        raise bad(f"{quote('palette')} has {len(palette)} colours, {quote('classes')} has {len(names)} names")
    ignore_index = values.get("ignore_index", DEFAULT_IGNORE_INDEX)
    if 0 <= ignore_index < len(names):
        raise bad(f"{quote('ignore_index')} {ignore_index} is also a class id (0..{len(names) - 1})")


def _resolved_note(given: Path, key: str) -> str:
    if given.is_absolute():
        return f"set {key}"
    return f"{key} {str(given)!r} is taken from the current directory {os.getcwd()}"


def load_folder_spec(
    root_or_yaml: str | os.PathLike,
    options: Mapping[str, Any] | None = None,
    config_key: str = "",
) -> FolderSpec:
    """The description of the folder dataset at ``root_or_yaml`` (a folder, or a YAML file in it): its
    ``dataset.yaml`` when there is one, checked, merged with the dataset's ``options`` (options win).
    ``config_key`` ("data.train") is the config section the dataset comes from, named in messages."""
    given = Path(root_or_yaml).expanduser()
    path = Path(os.path.abspath(given))
    key = f"{config_key or 'data.<train|val>'}.root"
    if path.is_file():
        yaml_path: Path | None = path
        root = path.parent
    elif path.is_dir():
        root = path
        yaml_path = path / SPEC_NAME if (path / SPEC_NAME).is_file() else None
    else:
        raise DataError("config", f"{path}: dataset folder or YAML file not found ({_resolved_note(given, key)})")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if yaml_path is not None:
        try:  # the config's reader: plain data, duplicate keys refused
            data = read_yaml(yaml_path, "dataset description")
        except ConfigError as e:
            raise DataError("config", str(e)) from None
        values = _parse(data, str(yaml_path), _YamlKeys, Checker(noun="key"))
        sources = dict.fromkeys(values, "yaml")
    if options:
        # from a training config: named as its keys (data.train.options.labels_dir); else as options
        checker = Checker(noun="config key" if config_key else "option")
        opts = _parse(options, f"{root} (dataset options)", _OptionKeys, checker,
                      f"{config_key}.options" if config_key else "")
        values.update(opts)
        sources.update(dict.fromkeys(opts, "options"))
        _cross_check(values, lambda msg: DataError("config", f"{root} ({SPEC_NAME} and dataset options): {msg}"),
                     lambda k: repr(k))
    return FolderSpec(
        root=root,
        yaml_path=yaml_path,
        class_names=values.get("classes"),
        palette=values.get("palette"),
        ignore_index=values.get("ignore_index", DEFAULT_IGNORE_INDEX),
        reduce_zero_label=values.get("reduce_zero_label", False),
        image_suffixes=(values["image_suffix"],) if "image_suffix" in values else IMAGE_SUFFIXES,
        label_suffix=values.get("label_suffix", ".png"),
        images_dir=values.get("images_dir", IMAGES_DIR),
        labels_dir=values.get("labels_dir"),
        name=values.get("name") or root.name,
        info=values.get("info"),
        val_fraction=values.get("val_fraction", DEFAULT_VAL_FRACTION),
        split_seed=values.get("split_seed", DEFAULT_SPLIT_SEED),
        split_file=values.get("split_file"),
        config_key=config_key,
        sources=sources,
    )


# -------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class FolderLayout:
    """Where a folder dataset's files are (absolute paths) and how it is split.

    ``mode``: ``"lists"`` (split list files, ``list_files``), ``"folders"`` (split sub-folders) or ``"auto"``
    (no split on disk: :func:`split_keys` makes ``train`` and ``val``); ``splits``: the split names.
    ``labels_detected``: the label folder was found among :data:`LABEL_DIRS` (not set by ``labels_dir``).
    """

    spec: FolderSpec
    images: Path
    labels: Path
    labels_detected: bool
    mode: str
    splits: tuple[str, ...]
    list_files: Mapping[str, Path] = field(default_factory=dict)

    @property
    def has_split(self) -> bool:
        """Whether the data on disk says how it is split (lists or folders), not the automatic split."""
        return self.mode != "auto"

    def describe(self) -> str:
        """``images/ + masks/ (detected), split folders train, val``: the layout in words."""
        root = self.spec.root
        labels = f"{_rel(self.labels, root)}/" + (" (detected)" if self.labels_detected else "")
        how = {
            "lists": f"split lists {', '.join(f'{s} ({_rel(p, root)})' for s, p in self.list_files.items())}",
            "folders": f"split folders {', '.join(self.splits)}",
            "auto": f"no split: automatic train/val (val_fraction {self.spec.val_fraction:g}, "
                    f"split_seed {self.spec.split_seed})",
        }[self.mode]
        return f"{_rel(self.images, root)}/ + {labels}, {how}"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _has_files(folder: Path, suffixes: Sequence[str]) -> bool:
    """Whether any file under ``folder`` ends with one of ``suffixes`` (stops at the first)."""
    low = tuple(s.lower() for s in suffixes)
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(n.lower().endswith(low) and not n.startswith(".") for n in filenames):
            return True
    return False


def _find_label_dir(spec: FolderSpec) -> tuple[Path, bool]:
    if spec.labels_dir is not None:
        return spec.root / spec.labels_dir, False
    existing = [spec.root / d for d in LABEL_DIRS if (spec.root / d).is_dir()]
    holding = [d for d in existing if _has_files(d, [spec.label_suffix])]
    if len(holding) > 1:
        names = " and ".join(f"{d.name}/" for d in holding)
        raise DataError(
            "config",
            f"{spec.root}: ambiguous label folders: {names} {'both' if len(holding) == 2 else 'all'} hold "
            f"*{spec.label_suffix} files "
            f"({', '.join(map(str, holding))}); {spec.option_hint('labels_dir')} to the one to use",
        )
    if holding:
        return holding[0], True
    if existing:
        return existing[0], True
    looked = ", ".join(str(spec.root / d) for d in LABEL_DIRS)
    raise DataError(
        "missing_dir",
        f"{spec.root}: no label folder (looked for {looked}); put the label maps (index PNGs) in masks/, "
        f"or {spec.option_hint('labels_dir')}",
    )


def _find_lists(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    folder = root / SPLITS_DIR
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix == ".txt" and not f.name.startswith("."):
                found[f.stem] = f
    for name in LIST_NAMES:
        f = root / f"{name}.txt"
        if name not in found and f.is_file():
            found[name] = f
    return found


def _top_level(images: Path, suffixes: Sequence[str]) -> tuple[list[str], bool]:
    """(sub-folder names, whether ``images`` holds images of its own)."""
    low = tuple(s.lower() for s in suffixes)
    subdirs, has_images = [], False
    for entry in sorted(os.scandir(images), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            subdirs.append(entry.name)
        elif entry.name.lower().endswith(low):
            has_images = True
    return subdirs, has_images


def resolve_layout(spec: FolderSpec) -> FolderLayout:
    """The images and label folders and the split layout of ``spec``'s folder (see the module docstring).

    Raises a :class:`DataError` naming the paths looked at and the key to set when there is no images folder,
    no label folder, or two candidate label folders that both hold labels."""
    images = spec.root / spec.images_dir
    if not images.is_dir():
        if spec.yaml_path is None and spec.sources.get("images_dir") is None:
            raise DataError(
                "missing_dir",
                f"{spec.root}: not a dataset folder: no {SPEC_NAME} and no {spec.images_dir}/ folder "
                f"(looked for {spec.root / SPEC_NAME} and {images}); a dataset folder holds images/ and masks/ "
                f"(or labels/, annotations/); {spec.option_hint('images_dir')} if the images are elsewhere, or "
                f"{spec.key('root')} to the folder that holds them",
            )
        raise DataError(
            "missing_dir",
            f"{images}: image folder not found (looked in {spec.root}); {spec.option_hint('images_dir')}",
        )
    labels, detected = _find_label_dir(spec)
    lists = _find_lists(spec.root)
    subdirs, own_images = _top_level(images, spec.image_suffixes)
    if lists:
        return FolderLayout(spec, images, labels, detected, "lists", tuple(lists), lists)
    if subdirs and not own_images:
        return FolderLayout(spec, images, labels, detected, "folders", tuple(subdirs))
    return FolderLayout(spec, images, labels, detected, "auto", AUTO_SPLITS)


# --------------------------------------------------------------------------------------------------- split


def _rank(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_keys(
    keys: Iterable[str], val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SPLIT_SEED
) -> dict[str, list[str]]:
    """The automatic split: ``{"train": [...], "val": [...]}`` (each sorted) of sample names ``keys``.

    The names are ranked by the SHA-256 hash of ``"<seed>:<name>"``; the first ``round(n * val_fraction)``
    (at least 1 and at most n - 1; none of 1 name) are ``val``. Deterministic (no RNG state, no file order),
    disjoint, covering; adding a name moves at most one other name from ``val`` to ``train``."""
    keys = sorted(set(keys))
    n = len(keys)
    k = 0 if n < 2 else min(n - 1, max(1, int(n * val_fraction + 0.5)))
    ranked = sorted(keys, key=lambda key: (_rank(key, seed), key))
    val = set(ranked[:k])
    return {"train": [key for key in keys if key not in val], "val": [key for key in keys if key in val]}


def _read_list(path: Path) -> list[tuple[int, str]]:
    """(line number, entry) of each line of a split list file that is not blank or a ``#`` comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError("config", f"{path}: cannot read the split list ({e.__class__.__name__})") from None
    entries = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    return [(number, line) for number, line in entries if line and not line.startswith("#")]


def _list_key(entry: str, images: Mapping[str, Path], images_dir: str, suffixes: Sequence[str]) -> str | None:
    """The sample of ``images`` a split list entry names: the whole line, else its first word (lists that pair
    an image with its label on one line); ``./`` and an image suffix are forgiven, and a path from the root
    (``images/NAME``)."""
    low = tuple(s.lower() for s in (*suffixes, *IMAGE_SUFFIXES))
    words = entry.split()
    for name in dict.fromkeys((entry, words[0] if words else entry)):
        name = name.replace("\\", "/").lstrip("/")
        while name.startswith("./"):
            name = name[2:]
        for s in low:
            if name.lower().endswith(s):
                name = name[: len(name) - len(s)]
                break
        for key in (name, name[len(images_dir) + 1:] if name.startswith(f"{images_dir}/") else None):
            if key is not None and key in images:
                return key
    return None


# ------------------------------------------------------------------------------------------------- classes

# label file -> ((size, mtime), its distinct values): a file is read again only when it changed
_VALUES_CACHE: dict[str, tuple[tuple[int, int], frozenset[int]]] = {}
_CACHE_LIMIT = 1_000_000


def _label_values(path: str) -> tuple[int, ...] | str:
    """The distinct values of one label file, or the error message."""
    from rrseg.data.labels import read_label
    from rrseg.data.stats import uint8_histogram

    try:
        label = read_label(path, writable=False)
    except DataError as e:
        return str(e)
    if label.dtype == np.uint8:
        return tuple(np.flatnonzero(uint8_histogram(label)).tolist())
    return tuple(np.unique(label).tolist())


def count_classes(
    labels_dir: str | os.PathLike,
    label_suffix: str = ".png",
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    reduce_zero_label: bool = False,
    workers: int | None = None,
    hint: str = "set classes in dataset.yaml",
) -> int:
    """The class count of the labels under ``labels_dir`` (recursively, every ``*label_suffix``): the largest
    value + 1, ``ignore_index`` left out (after reduce_zero_label). Each file is read once per process while
    its size and time are unchanged (added or changed files are read, the others not); in parallel from 256
    files (``workers``: default all cores, at most 8). ``hint`` ends the messages (how to give the classes instead)."""
    from rrseg.data.labels import reduce_zero_label as reduce
    from rrseg.parallel import parallel_map

    folder = Path(os.path.abspath(labels_dir))
    files = sorted(_walk(folder, [label_suffix]).values()) if folder.is_dir() else []
    if not files:
        raise DataError("missing_label", f"{folder}: no *{label_suffix} label files to count the classes from; "
                                         f"{hint}")
    found: set[int] = set()
    todo: list[tuple[str, tuple[int, int]]] = []
    for f in files:
        st = f.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        cached = _VALUES_CACHE.get(str(f))
        if cached is not None and cached[0] == stamp:
            found.update(cached[1])
        else:
            todo.append((str(f), stamp))
    errors: list[str] = []
    if todo:
        if len(_VALUES_CACHE) + len(todo) > _CACHE_LIMIT:
            _VALUES_CACHE.clear()
        n_workers = 1 if len(todo) < 256 else workers
        results = parallel_map(_label_values, [path for path, _ in todo], n_workers)
        for (path, stamp), result in zip(todo, results):
            if isinstance(result, str):
                errors.append(result)
            else:
                found.update(result)
                _VALUES_CACHE[path] = (stamp, frozenset(result))
    if errors and len(errors) == len(files):
        raise DataError("corrupt_label", f"{errors[0]} (no label file under {folder} could be read to count the "
                                         f"classes; {hint})")
    values = found
    raw = np.array(sorted(values), dtype=np.int64)
    mapped = reduce(raw, ignore_index) if reduce_zero_label else raw
    classes = mapped[(mapped != ignore_index) & (mapped >= 0)]
    if classes.size == 0:
        raise DataError("label_range", f"{folder}: every label pixel is the ignore index {ignore_index}, so there "
                                       f"are no classes to count; {hint}")
    num = int(classes.max()) + 1
    if 0 <= ignore_index < num:
        raise DataError(
            "label_range",
            f"{folder}: label values go up to {num - 1}, past the ignore index {ignore_index}, so the ignore index "
            f"would be a class; set ignore_index or classes ({hint})",
        )
    return num


# ------------------------------------------------------------------------------------------------- dataset


# no detector: detect_layout takes a folder with dataset.yaml for one first, and one with images/ last
@register_dataset("folder", aliases=("synthetic",))
class FolderDataset(SegDataset):
    """A dataset of one's own in the folder layout (see the module docstring); ``split`` is ``train`` / ``val``
    (or a split folder's or list's name). ``options``: the keys of ``dataset.yaml`` plus ``split_file`` (a
    config's ``data.train.options``). ``config_key`` ("data.train") names the config section in messages.
    ``strict=False`` collects problems in ``self.scan`` instead of raising the first (``rrseg check-data``).
    """

    def __init__(
        self,
        root_or_yaml: str | os.PathLike,
        split: str = "train",
        transforms: Callable[..., Any] | None = None,
        strict: bool = True,
        config_key: str = "",
        **options: Any,
    ) -> None:
        self.spec = spec = load_folder_spec(root_or_yaml, options, config_key)
        self.layout = layout = resolve_layout(spec)
        self.scan = _scan_split(layout, split)
        if strict:
            self.scan.raise_first()
        class_names = spec.class_names
        if class_names is None:
            try:
                num = count_classes(layout.labels, spec.label_suffix, spec.ignore_index, spec.reduce_zero_label,
                                    hint=f"give the classes ({spec.option_hint('classes')})")
            except DataError as e:
                if strict:
                    raise
                self.scan.problems.insert(0, e)
                num = 0
            class_names = tuple(str(i) for i in range(num))
        super().__init__(
            self.scan.samples,
            class_names,
            spec.palette,
            ignore_index=spec.ignore_index,
            reduce_zero_label=spec.reduce_zero_label,
            transforms=transforms,
            root=spec.root,
            split=split,
            name=spec.name,
        )

    @staticmethod
    def available_splits(root_or_yaml: str | os.PathLike, config_key: str = "", **options: Any) -> list[str]:
        """The split names of the folder dataset at ``root_or_yaml`` (lists, split folders, or train/val)."""
        return list(resolve_layout(load_folder_spec(root_or_yaml, options, config_key)).splits)


def _scan_split(layout: FolderLayout, split: str) -> ScanResult:
    """The (image, label) pairs of ``split`` and every problem found (messages name the paths and keys)."""
    spec = layout.spec
    split_images, split_labels = layout.images / split, layout.labels / split
    has_folder = bool(split) and split_images.is_dir()
    list_file: Path | None = None
    if spec.split_file is not None:
        list_file = Path(os.path.abspath(spec.root / Path(spec.split_file).expanduser()))
        if not list_file.is_file():
            result = ScanResult(split_images if has_folder else layout.images, layout.labels)
            result.problems.append(DataError(
                "missing_dir", f"{list_file}: split list file of split {split!r} not found "
                               f"({spec.option_hint('split_file')}; relative to {spec.root})"))
            return result
    elif split in layout.list_files or (spec.root / f"{split}.txt").is_file():
        list_file = layout.list_files.get(split, spec.root / f"{split}.txt")
    if list_file is not None:
        image_dir, label_dir = (split_images, split_labels) if has_folder else (layout.images, layout.labels)
        return _scan_list(layout, split, list_file, image_dir, label_dir)
    if has_folder:
        return _scan_pool(layout, split, split_images, split_labels, None)
    result = ScanResult(split_images, split_labels)
    if layout.mode == "folders":
        result.problems.append(DataError(
            "missing_dir",
            f"{split_images}: image directory of split {split!r} not found (splits found: "
            f"{', '.join(layout.splits)}, the sub-folders of {layout.images}); set {spec.key('split')} to one "
            f"of them, or {spec.key('options.images_dir')}"))
        return result
    if layout.mode == "lists":
        looked = f"{spec.root / SPLITS_DIR / (split + '.txt')}, {spec.root / (split + '.txt')}, {split_images}"
        result.problems.append(DataError(
            "missing_dir",
            f"{spec.root}: no split list or folder for split {split!r} (looked for {looked}; lists found: "
            f"{', '.join(layout.splits)}); set {spec.key('split')} to one of them, or give the list: "
            f"{spec.option_hint('split_file')}"))
        return result
    if split not in AUTO_SPLITS:
        result.problems.append(DataError(
            "missing_dir",
            f"{split_images}: image directory of split {split!r} not found, and there is no split list (looked "
            f"for {spec.root / SPLITS_DIR / (split + '.txt')}, {spec.root / (split + '.txt')}); without split "
            f"folders or lists the images of {layout.images} are split automatically into 'train' and 'val': "
            f"set {spec.key('split')} to one of them, or give a list: {spec.option_hint('split_file')}"))
        return result
    return _scan_pool(layout, split, layout.images, layout.labels, "auto")


def _where_labels(layout: FolderLayout) -> str:
    spec = layout.spec
    if layout.labels_detected:
        how = (f"the first of {', '.join(d + '/' for d in LABEL_DIRS)} under {spec.root} that holds "
               f"*{spec.label_suffix} files")
    else:
        how = f"labels_dir {spec.labels_dir!r}"
    return f"labels are looked for in {layout.labels} ({how}); {spec.option_hint('labels_dir')} to use another folder"


def _walk_into(result: ScanResult, folder: Path, suffixes: Sequence[str]) -> dict[str, Path] | None:
    try:
        return _walk(folder, suffixes) if folder.is_dir() else {}
    except DataError as e:
        result.problems.append(e)
        return None


def _pair(layout: FolderLayout, result: ScanResult, split: str, images: Mapping[str, Path],
          labels: Mapping[str, Path], keys: Iterable[str], label_dir: Path) -> None:
    where = _where_labels(layout)
    for key in keys:
        label = labels.get(key)
        if label is None:
            expected = label_dir / f"{key}{layout.spec.label_suffix}"
            result.problems.append(DataError(
                "missing_label", f"{images[key]}: no label found (expected {expected}); {where}"))
            continue
        result.samples.append(Sample(key, images[key], label))


def _no_images(layout: FolderLayout, image_dir: Path, split: str) -> DataError:
    pattern = ", ".join(f"*{s}" for s in layout.spec.image_suffixes)
    return DataError(
        "empty_split",
        f"{image_dir}: split {split!r} has no images ({pattern}); {layout.spec.option_hint('images_dir')} or "
        f"{layout.spec.option_hint('image_suffix')}")


def _scan_pool(layout: FolderLayout, split: str, image_dir: Path, label_dir: Path, auto: str | None) -> ScanResult:
    """A split folder (``auto`` None: every image) or the automatic split of one pool of images."""
    spec = layout.spec
    result = ScanResult(image_dir, label_dir)
    images = _walk_into(result, image_dir, spec.image_suffixes)
    if images is None:
        return result
    if not images:
        result.problems.append(_no_images(layout, image_dir, split))
        return result
    labels = _walk_into(result, label_dir, [spec.label_suffix]) or {}
    keys = sorted(images)
    if auto:
        keys = split_keys(keys, spec.val_fraction, spec.split_seed)[split]
        if not keys:
            result.problems.append(DataError(
                "empty_split",
                f"{image_dir}: the automatic split leaves split {split!r} empty: {len(images)} image(s) are too "
                f"few to split (train and val need one each); add images, or give split lists "
                f"({spec.option_hint('split_file')})"))
            return result
    _pair(layout, result, split, images, labels, keys, label_dir)
    if not auto or split == AUTO_SPLITS[0]:  # the automatic split's label-only files: reported once, with train
        for key in sorted(set(labels) - set(images)):
            result.problems.append(DataError("orphan_label", f"{labels[key]}: label without a matching image "
                                                             f"(looked for {image_dir / key}.*)"))
    return result


def _scan_list(layout: FolderLayout, split: str, list_file: Path, image_dir: Path, label_dir: Path) -> ScanResult:
    spec = layout.spec
    result = ScanResult(image_dir, label_dir)
    entries = _read_list(list_file)
    if not entries:
        result.problems.append(DataError(
            "empty_split", f"{list_file}: split list of split {split!r} names no samples (one image name a line, "
                           f"relative to {image_dir}, without suffix)"))
        return result
    images = _walk_into(result, image_dir, spec.image_suffixes)
    if images is None:
        return result
    labels = _walk_into(result, label_dir, [spec.label_suffix]) or {}
    keys: list[str] = []
    seen: set[str] = set()
    for number, entry in entries:
        key = _list_key(entry, images, spec.images_dir, spec.image_suffixes)
        if key is None:
            result.problems.append(DataError(
                "missing_image",
                f"{list_file}:{number}: {entry!r} names no image (looked for {image_dir / entry}.* with "
                f"{', '.join(spec.image_suffixes)}); names are relative to {image_dir}, without suffix; "
                f"{spec.option_hint('images_dir')}"))
            continue
        if key not in seen:
            seen.add(key)
            keys.append(key)
    _pair(layout, result, split, images, labels, keys, label_dir)
    return result


# --------------------------------------------------------------------------------------------- inspection


@dataclass(frozen=True)
class FolderSummary:
    """What :func:`inspect_folder` found in a dataset folder (paths absolute).

    ``splits``: split name -> labelled samples; ``has_split``: the data says how it is split (split folders or
    lists; False: the automatic split by ``val_fraction``); ``classes_from``: "dataset.yaml", "options" or
    "labels" (counted); ``image_sizes``: (height, width) of up to ``sample`` images spread over the data, read
    from the file headers; ``problems``: the pairing problems found (first 20 messages), ``num_problems`` all.
    """

    root: Path
    yaml_path: Path | None
    images_dir: Path
    labels_dir: Path
    labels_detected: bool
    mode: str
    has_split: bool
    splits: dict[str, int]
    list_files: dict[str, Path]
    num_classes: int
    class_names: tuple[str, ...]
    classes_from: str
    ignore_index: int
    reduce_zero_label: bool
    val_fraction: float
    split_seed: int
    image_sizes: tuple[tuple[int, int], ...]
    layout: str
    num_problems: int = 0
    problems: tuple[str, ...] = ()

    @property
    def num_samples(self) -> int:
        return sum(self.splits.values())


def inspect_folder(root: str | os.PathLike, sample: int = 32, **options: Any) -> FolderSummary:
    """Describe the folder dataset at ``root`` (a folder, or its ``dataset.yaml``): its layout, splits, class
    count, ignore index and a sample of image sizes, as :class:`FolderDataset` would build it with ``options``
    (the keys of dataset.yaml plus ``split_file``). Labels are read once (to count classes, when no
    ``classes`` are given); images only to their headers. Raises :class:`DataError` (one line naming the paths
    and the key to set) where a dataset could not be built: no images/ folder, no or ambiguous label folders,
    unreadable labels."""
    spec = load_folder_spec(root, options)
    layout = resolve_layout(spec)
    splits: dict[str, int] = {}
    samples: list[Sample] = []
    problems: list[str] = []
    if spec.class_names is None:
        # a count that fails (every label unreadable, ...) is an error here, as training would raise it
        num = count_classes(layout.labels, spec.label_suffix, spec.ignore_index, spec.reduce_zero_label,
                            hint=f"give the classes ({spec.option_hint('classes')})")
        class_names = tuple(str(i) for i in range(num))
        classes_from = "labels"
    else:
        class_names = spec.class_names
        classes_from = "options" if spec.sources.get("classes") == "options" else SPEC_NAME
    for split in layout.splits:  # the classes are counted by now: each split reuses the count
        ds = FolderDataset(spec.yaml_path or spec.root, split, strict=False, **options)
        splits[split] = len(ds)
        samples += ds.samples
        problems += [str(p) for p in ds.scan.problems]
    samples.sort(key=lambda s: str(s.image))
    sizes = image_sizes([s.image for s in samples], sample)
    return FolderSummary(
        root=spec.root,
        yaml_path=spec.yaml_path,
        images_dir=layout.images,
        labels_dir=layout.labels,
        labels_detected=layout.labels_detected,
        mode=layout.mode,
        has_split=layout.has_split,
        splits=splits,
        list_files=dict(layout.list_files),
        num_classes=len(class_names),
        class_names=class_names,
        classes_from=classes_from,
        ignore_index=spec.ignore_index,
        reduce_zero_label=spec.reduce_zero_label,
        val_fraction=spec.val_fraction,
        split_seed=spec.split_seed,
        image_sizes=sizes,
        layout=layout.describe(),
        num_problems=len(problems),
        problems=tuple(problems[:20]),
    )
