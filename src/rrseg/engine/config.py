"""Configs: YAML data with ``_base_`` inheritance and dotted ``--set`` overrides, checked against a schema.

Nothing in a config is executed: files are read with ``yaml.safe_load`` (a ``!!python`` tag is an error),
values are plain data, and the schema below (dataclasses) names every valid key. An unknown or misspelt
key is an error naming it and suggesting the closest valid key; a value of the wrong type is an error
naming the key, the value and the expected type.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rrseg.errors import RRSegError
from rrseg.rebalance.base import NoRegionLoss, PixelLossOptions, RegionLossOptions
from rrseg.rebalance.pixel import CrossEntropyOptions
from rrseg.rebalance.registry import loss_class, loss_option_names, loss_registry

__all__ = [
    "Config",
    "ConfigError",
    "NoDecayRule",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "parse_config",
    "resolved_work_dir",
]


class ConfigError(RRSegError):
    """A config that does not fit the schema."""


# ---------------------------------------------------------------------------------------------- schema


@dataclass
class DatasetConfig:
    type: str = "folder"  # a name rrseg.data.build_dataset takes (rrseg.data.DATASETS, or an alias of one)
    root: str = ""
    split: str = "train"
    options: dict[str, Any] = field(default_factory=dict)  # passed to the dataset class


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=DatasetConfig)
    val: DatasetConfig = field(default_factory=lambda: DatasetConfig(split="val"))
    batch_size: int = 2  # per process
    workers: int = 2
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale: list[int] = field(default_factory=lambda: [2048, 512])  # (long, short) side, as mmseg
    ratio_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    # decode and check every training and validation sample before training starts (and before anything is
    # written), so that a corrupt file stops the run at once rather than hours in; false skips the check
    check: bool = True


@dataclass
class ModelConfig:
    name: str = "upernet_swin_t"
    num_classes: int = 0  # 0: take it from the training dataset
    # a local file (timm / safetensors / HF / mmseg checkpoint), rrseg:NAME (packaged), or timm / timm:TAG
    # (the backbone's timm weights through timm's hub download and cache); none (any case): no weights, from
    # scratch by choice; null (not set): no weights either, with a warning when the backbone has timm weights
    pretrained: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # passed to build_model


@dataclass
class LossConfig:
    # `type` names a pixel loss of rrseg.rebalance.PIXEL_LOSSES; the section's other keys are that loss's
    # options (its options class: every pixel loss takes loss_weight and avg_non_ignore)
    pixel: PixelLossOptions = field(default_factory=CrossEntropyOptions)
    aux_weight: float | None = None  # None: the model's own (0.4 for mmseg-style FCN auxiliary heads)
    # `type` names a region loss of rrseg.rebalance.REGION_LOSSES (none, or a branch the model carries in
    # training) and the other keys are its options
    region: RegionLossOptions = field(default_factory=NoRegionLoss)
    # class counts: a file (JSON from `rrseg stats` or released .txt), a released name ("ade20k"), or
    # None to count the training labels once (cached in the work dir)
    counts: str | None = None


# Which parameters get no weight decay: "norm_bias" = 1-D parameters (norms), biases, position embeddings and
# relative position tables (mmseg's BEiT / ConvNeXt layer-decay constructors, timm's habit); "swin_release" =
# the released Swin configs' mmcv custom_keys: backbone names containing norm, absolute_pos_embed or
# relative_position_bias_table (biases and the heads' BatchNorms are decayed); "none" = every parameter decays
# (mmseg's default optimizer, the SGD recipes).
NoDecayRule = Literal["norm_bias", "swin_release", "none"]


@dataclass
class OptimConfig:
    type: str = "adamw"  # sgd | adamw
    lr: float = 6e-5
    momentum: float = 0.9  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    weight_decay: float = 0.01
    no_decay: NoDecayRule = "norm_bias"  # parameters without weight decay (see NoDecayRule)
    layer_decay: float | None = None  # layer-wise lr decay (BEiT), e.g. 0.9
    head_lr_mult: float = 1.0  # lr multiplier of decode/aux heads
    clip_grad: float | None = None  # max gradient norm
    accumulate: int = 1  # gradient accumulation steps per iteration


@dataclass
class ScheduleConfig:
    iters: int = 160000
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0


@dataclass
class EvalConfig:
    interval: int = 16000  # evaluate every N iterations (0: only at the end)
    mode: str = "whole"  # whole | slide
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    stride: list[int] = field(default_factory=lambda: [341, 341])
    scales: list[float] = field(default_factory=lambda: [1.0])  # TTA scale ratios
    flip: bool = False
    batch_size: int = 1
    group_sizes: list[int] | None = None  # frequent / common sizes; default: ADE20K fractions 20/55/75 of 150
    # frequency groups ranked by region (image) count, by pixel count (pixel_frequent / ...), or both
    group_by: str = "region"


@dataclass
class TrainConfig:
    seed: int = 0
    deterministic: bool = True  # deterministic algorithms on CPU (bit-exact resume)
    amp: str = "none"  # none | bf16 | fp16 (CUDA)
    sync_bn: bool = False
    log_interval: int = 50
    checkpoint_interval: int = 16000
    keep_last: int = 2
    tensorboard: bool = True
    progress: bool = True
    nan_policy: str = "stop"  # stop (checkpoint and exit with a message) | skip (skip the step)
    # the global batch the config assumes: images per optimizer update over all processes (data.batch_size x
    # processes x optim.accumulate). The paper presets set it (their learning rates and RR's per-process pooling
    # are the preset's at that batch only); a run with another batch logs a warning. None: no assumption.
    global_batch: int | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    work_dir: str = ""  # where the run writes; empty: work_dirs/<name> (resolved_work_dir)
    name: str = ""  # a label for reports; defaults to the config file's stem
    # a paper preset's mark: the experiment it reproduces and the configs it follows (file:line); empty for
    # user configs
    paper: str = ""


# Allowed values of string fields that select an implementation. The loss sections' `type` and options come
# from the loss registry (rrseg.rebalance.registry), dataset types from the dataset registry (REGISTERED).
CHOICES: dict[str, tuple[str, ...]] = {
    "optim.type": ("sgd", "adamw"),
    "eval.mode": ("whole", "slide"),
    "eval.group_by": ("region", "pixel", "both"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.nan_policy": ("stop", "skip"),
}


def _dataset_name(name: str) -> None:
    from rrseg.data.builder import dataset_class  # here: the datasets import torchvision's transforms lazily

    dataset_class(name)  # the names and aliases build_dataset takes; else an error naming the known ones


# String fields that name an entry of a registry: the check raises an RRSegError naming the known names.
REGISTERED: dict[str, Callable[[str], Any]] = {"data.train.type": _dataset_name, "data.val.type": _dataset_name}


# ---------------------------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that also refuses duplicate keys (a silent override is a config bug)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path``, through the safe loader; every problem names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain data only
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.constructor.ConstructorError as e:
        tag = getattr(e, "problem", "") or str(e)
        raise ConfigError(f"{path}: refused a YAML tag ({tag.strip()}); configs are plain data") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        detail = " ".join(str(getattr(e, "problem", None) or e).split())  # a ReaderError spans lines
        raise ConfigError(f"{path}: invalid YAML{where} ({detail})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not v.get("_delete_", False):
            out[k] = _merge(out[k], v)
        else:
            out[k] = {kk: vv for kk, vv in v.items() if kk != "_delete_"} if isinstance(v, dict) else v
    return out


def _load_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: _base_ cycle through {' -> '.join(p.name for p in (*chain, path))}")
    data = read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _load_with_bases(path.parent / base, (*chain, path)))
    return _merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars/lists) to a config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=0.01")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
        _check_path(key)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _check_path(key: str) -> None:
    """Raise if ``key`` (dotted) does not name a field of the schema (free-form dicts excepted)."""
    cls: Any = Config
    for i, part in enumerate(key.split(".")):
        if cls is dict:
            return
        fields = _section_fields(cls)
        if part not in fields:
            prefix = ".".join(key.split(".")[:i])
            _unknown(part, list(fields), prefix)
        cls = _dataclass_of(fields[part])
        if cls is None:
            if i != len(key.split(".")) - 1:
                raise ConfigError(f"--set {key}: {'.'.join(key.split('.')[: i + 1])} is not a section")
            return


def _unknown(key: str, valid: list[str], prefix: str) -> typing.NoReturn:
    where = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else ""
    raise ConfigError(f"unknown config key {where!r}{hint} (valid here: {', '.join(sorted(valid))})")


# ---------------------------------------------------------------------------------------------- validation


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_loss_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, (PixelLossOptions, RegionLossOptions))


def _section_fields(cls: type) -> dict[str, Any]:
    """{key: type} of a schema section; a loss section's are those of every registered loss of its kind (which
    of them a section may hold depends on its ``type``: see ``_build_loss``)."""
    classes = loss_registry(cls.KIND).values() if _is_loss_section(cls) else [cls]
    out: dict[str, Any] = {}
    for c in classes:
        hints = _hints(c)
        out.update({f.name: hints[f.name] for f in dataclasses.fields(c)})
    return out


def _dataclass_of(tp: Any) -> Any:
    """The dataclass (or dict for free-form) behind a field type, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) is dict or tp is dict:
        return dict
    return None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"config key {key!r}: {value!r} is not a {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key!r}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return copy.deepcopy(value)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, str) and value in allowed:
            return value
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(allowed)}{hint}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a section (mapping), got {value!r}")
        return _build_loss(tp, value, key) if _is_loss_section(tp) else _build(tp, value, key)
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
    raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            _unknown(str(key), list(fields), prefix)
        full = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], full)
        if full in CHOICES and kwargs[key] not in CHOICES[full]:
            close = difflib.get_close_matches(str(kwargs[key]), CHOICES[full], n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config key {full!r}: {kwargs[key]!r} is not one of {', '.join(CHOICES[full])}{hint}")
        if full in REGISTERED:
            try:
                REGISTERED[full](kwargs[key])
            except RRSegError as e:
                raise ConfigError(f"config key {full!r}: {e}") from None
    return cls(**kwargs)


def _build_loss(base: Any, data: dict, prefix: str) -> Any:
    """A loss section: ``type`` picks the registered loss, whose options class checks and fills the other keys;
    a key of another loss is an error naming the key and the loss, as is an unknown ``type``."""
    name = _coerce(data.get("type", base.type), str, f"{prefix}.type")  # the base's type: the default loss
    try:
        cls = loss_class(base.KIND, name)
    except RRSegError as e:
        raise ConfigError(f"config key '{prefix}.type': {e}") from None
    own = set(loss_option_names(cls))
    for key in data:
        if key == "type" or key in own:
            continue
        owners = [n for n, c in loss_registry(base.KIND).items() if key in loss_option_names(c)]
        if not owners:
            _unknown(str(key), list(_section_fields(base)), prefix)
        raise ConfigError(f"config key '{prefix}.{key}' is an option of {' and '.join(owners)}, not of {name} "
                          f"({name} takes {', '.join(loss_option_names(cls)) or 'no options'})")
    return _build(cls, {**data, "type": name}, prefix)


def _check_combinations(cfg: Config) -> Config:
    """Keys that are valid alone but not together."""
    p = cfg.loss.pixel
    if getattr(p, "divide_by_weight_sum", False) and not p.avg_non_ignore:
        raise ConfigError("config key 'loss.pixel.divide_by_weight_sum': true divides by the labelled pixels' "
                          "weights and needs loss.pixel.avg_non_ignore: true")
    return cfg


# The keys every dump of a loss section held (config.yaml in a work dir, a checkpoint's metadata) when each
# section was one flat union of all its losses' parameters, before losses were a registry.
_FLAT_LOSS_KEYS = {
    "pixel": {"type", "loss_weight", "weight_scheme", "gamma", "prior", "tau", "sigma"},
    "region": {"type", "loss_weight", "trainable", "per_image", "prior", "smooth", "reduce_channels",
               "hidden_channels", "dropout", "logit_scale"},
}


def _upgrade(data: dict) -> dict:
    """Keys of earlier versions, translated exactly, so that older configs and checkpoint metadata still load:
    ``optim.no_decay_norm_bias: true | false`` is ``optim.no_decay: norm_bias | none``; a dumped flat loss
    section (every loss's parameters) keeps only those of its loss (the others had no effect)."""
    data = _upgrade_flat_losses(data)
    optim = data.get("optim")
    if not isinstance(optim, dict) or "no_decay_norm_bias" not in optim:
        return data
    if "no_decay" in optim:
        raise ConfigError("config keys 'optim.no_decay_norm_bias' and 'optim.no_decay' are both set; "
                          "keep optim.no_decay (no_decay_norm_bias is its older form)")
    old = optim["no_decay_norm_bias"]
    if not isinstance(old, bool):
        raise ConfigError(f"config key 'optim.no_decay_norm_bias': expected bool, got {old!r}")
    optim = {k: v for k, v in optim.items() if k != "no_decay_norm_bias"}
    optim["no_decay"] = "norm_bias" if old else "none"
    return {**data, "optim": optim}


def _upgrade_flat_losses(data: dict) -> dict:
    loss = data.get("loss")
    if not isinstance(loss, dict):
        return data
    upgraded = dict(loss)
    for kind, keys in _FLAT_LOSS_KEYS.items():
        section = loss.get(kind)
        if not isinstance(section, dict) or not keys <= set(section) or not isinstance(section["type"], str):
            continue
        try:
            own = {"type", *loss_option_names(loss_class(kind, section["type"]))}
        except RRSegError:
            continue  # an unknown type: reported as such by the schema check
        upgraded[kind] = {k: v for k, v in section.items() if k in own}
    return {**data, "loss": upgraded}


def parse_config(data: dict) -> Config:
    """A validated :class:`Config` from a plain mapping."""
    return _check_combinations(_build(Config, _upgrade(data)))


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (following ``_base_``), apply ``--set`` overrides, validate."""
    path = Path(path)
    try:
        data = apply_overrides(_load_with_bases(path), overrides or [])
        cfg = parse_config(data)
    except ConfigError as e:
        msg = str(e)
        named = msg.startswith((str(path), str(path.resolve())))  # errors in a _base_ file name that file
        raise ConfigError(msg if named else f"{path}: {msg}") from None
    if not cfg.name:
        cfg.name = path.stem
    cfg.work_dir = resolved_work_dir(cfg)
    return cfg


def resolved_work_dir(cfg: Config) -> str:
    """The run's work dir: ``work_dir``, or ``work_dirs/<name>`` (``work_dirs/run`` for a config without a
    name), so that a second run of one config, ``--resume`` or not, finds the first."""
    return cfg.work_dir or f"work_dirs/{cfg.name or 'run'}"


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
