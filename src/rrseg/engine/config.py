"""Configs: YAML data with ``_base_`` inheritance and dotted ``--set`` overrides, checked against a schema.

Nothing in a config is executed: files are read with YAML's safe loader (:func:`rrseg.schema.read_yaml`: a
``!!python`` tag is an error, as is a duplicate key), values are plain data, and the schema below (dataclasses,
checked by :class:`rrseg.schema.Checker`) names every valid key. An unknown or misspelt key is an error naming
it and suggesting the closest valid key; a value of the wrong type or not one of its choices (a ``Literal``
field) is an error naming the key, the value and the expected type; a number outside its key's range
(``RANGES`` below, a loss option's on its field) is an error naming the key, the value and the range; a model,
dataset or loss that its registry does not know, or a model option the model does not take, is an error naming
the key and the close names: all before anything runs or is written.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from rrseg.errors import ConfigError, RRSegError
from rrseg.ranges import Range
from rrseg.rebalance.base import NoRegionLoss, PixelLossOptions, RegionLossOptions
from rrseg.rebalance.pixel import CrossEntropyOptions
from rrseg.rebalance.registry import loss_class, loss_option_names, loss_registry
from rrseg.schema import Checker, Registered, parse_yaml, read_yaml, section, setting

__all__ = [
    "Config",
    "ConfigError",
    "NoDecayRule",
    "apply_overrides",
    "config_to_dict",
    "config_yaml",
    "find_config",
    "find_preset",
    "load_config",
    "parse_config",
    "preset_names",
    "presets_dir",
    "resolved_work_dir",
]


# ---------------------------------------------------------------------------------------------- schema


@dataclass
class DatasetConfig:
    type: str = setting("folder", "the dataset type: a name rrseg.data.build_dataset takes (rrseg.data.DATASETS, "
                                  "or an alias of one)")
    root: str = setting("", "the dataset's folder (type folder: the folder or its dataset.yaml)")
    split: str = setting("train", "the split to read")
    options: dict[str, Any] = setting({}, "passed to the dataset class (keyword arguments)")


@dataclass
class DataConfig:
    train: DatasetConfig = section(DatasetConfig, "the training dataset")
    val: DatasetConfig = section(lambda: DatasetConfig(split="val"),
                                 "the validation dataset (evaluated during training and by rrseg eval)")
    batch_size: int = setting(2, "images per process and iteration (the global batch: x processes x "
                                 "optim.accumulate)")
    workers: int = setting(2, "data-loading worker processes per training process (0: load in the training "
                              "process)")
    crop_size: list[int] = setting([512, 512], "training: the random crop [height, width]; a smaller image is "
                                               "padded to it (image 0, label the ignore index)")
    scale: list[int] = setting([2048, 512], "the base size (long, short) side, as mmseg: training rescales it by a "
                                            "ratio from ratio_range, evaluation resizes each image into it (aspect "
                                            "kept)")
    ratio_range: list[float] = setting([0.5, 2.0], "training: the random ratio [low, high] scale is multiplied by")
    cat_max_ratio: float = setting(0.75, "training: the random crop is drawn again (up to 10 times) while one class "
                                         "(ignore excluded) covers this fraction of it or more; 1: never")
    flip_prob: float = setting(0.5, "training: the probability of a horizontal flip")
    photometric: bool = setting(True, "training: mmseg's photometric distortion (brightness, contrast, saturation, "
                                      "hue)")
    mean: list[float] = setting([123.675, 116.28, 103.53], "per channel (RGB): subtracted from the image, in 0-255 "
                                                           "units")
    std: list[float] = setting([58.395, 57.12, 57.375], "per channel (RGB): the image is divided by it, in 0-255 "
                                                        "units")
    check: bool = setting(True, "decode and check every training and validation sample before training starts (and "
                                "before anything is written), so that a corrupt file stops the run at once rather "
                                "than hours in; false skips the check")


@dataclass
class ModelConfig:
    name: str = setting("upernet_swin_t", "the model: a name rrseg.models.build_model takes "
                                          "(rrseg.models.list_models())")
    num_classes: int = setting(0, "the classifier's classes; 0: take it from the training dataset")
    pretrained: str | None = setting(
        None, "a local file (timm / safetensors / HF / mmseg checkpoint), rrseg:NAME (packaged), or timm / timm:TAG "
              "(the backbone's timm weights through timm's hub download and cache); none (any case): no weights, "
              "from scratch by choice; null (not set): no weights either, with a warning when the backbone has timm "
              "weights")
    options: dict[str, Any] = setting({}, "passed to build_model (keyword arguments): the options of the model "
                                          "model.name names (rrseg.models.model_options(name) lists them)")


@dataclass
class LossConfig:
    pixel: PixelLossOptions = section(
        CrossEntropyOptions, "the pixel loss: `type` names a pixel loss of rrseg.rebalance.PIXEL_LOSSES; the "
                             "section's other keys are that loss's options (its options class: every pixel loss "
                             "takes loss_weight and avg_non_ignore)")
    aux_weight: float | None = setting(None, "the auxiliary heads' cross-entropy weight; null: the model's own (0.4 "
                                             "for mmseg-style FCN auxiliary heads)")
    region: RegionLossOptions = section(
        NoRegionLoss, "the region loss: `type` names a region loss of rrseg.rebalance.REGION_LOSSES (none, or a "
                      "branch the model carries in training) and the other keys are its options")
    counts: str | None = setting(None, "class counts: a file (JSON from `rrseg stats` or released .txt), a released "
                                       "name (\"ade20k\"), or null to count the training labels once (cached in the "
                                       "work dir)")


# Which parameters get no weight decay (optim.no_decay: its meaning says what each rule is).
NoDecayRule = Literal["norm_bias", "swin_release", "norm_embed", "none"]


@dataclass
class OptimConfig:
    type: Literal["sgd", "adamw"] = setting("adamw", "the optimizer: sgd or adamw")
    lr: float = setting(6e-5, "the base learning rate (reached at the end of warm-up, then decayed by the schedule)")
    momentum: float = setting(0.9, "sgd: the momentum")
    betas: list[float] = setting([0.9, 0.999], "adamw: the betas")
    weight_decay: float = setting(0.01, "the weight decay of the parameters that decay (see no_decay)")
    no_decay: NoDecayRule = setting(
        "norm_bias", "which parameters get no weight decay: norm_bias = 1-D parameters (norms), biases, position "
                     "embeddings and relative position tables (mmseg's BEiT / ConvNeXt layer-decay constructors, "
                     "timm's habit); swin_release = the released Swin configs' mmcv custom_keys: backbone names "
                     "containing norm, absolute_pos_embed or relative_position_bias_table (biases and the heads' "
                     "BatchNorms are decayed); norm_embed = the parameters of normalisation layers (BatchNorm, "
                     "GroupNorm, LayerNorm, ...) and of embeddings (nn.Embedding, relative_position_bias_table, "
                     "absolute_pos_embed), biases decayed (detectron2's rule, the Mask2Former release); none = every "
                     "parameter decays (mmseg's default optimizer, the SGD recipes)")
    layer_decay: float | None = setting(None, "layer-wise lr decay (BEiT), e.g. 0.9: the lr of layer i of n is "
                                              "scaled by layer_decay^(n - 1 - i); null: none")
    head_lr_mult: float = setting(1.0, "the lr multiplier of the decode / auxiliary heads")
    backbone_lr_mult: float = setting(1.0, "the lr multiplier of the backbone (Mask2Former's BACKBONE_MULTIPLIER)")
    clip_grad: float | None = setting(None, "the max gradient norm (clipped to it); null: no clipping")
    accumulate: int = setting(1, "gradient accumulation steps (batches) per iteration")
    fused: bool = setting(False, "the update as torch's fused kernel (fused=True, CPU and CUDA): one kernel per "
                                 "parameter group instead of several per parameter (AdamW on the demo model, CPU: "
                                 "0.8 ms against 5.3 ms per step), the same update to floating-point rounding; false: "
                                 "torch's default implementation, as mmseg's optimizers")


@dataclass
class ScheduleConfig:
    iters: int = setting(160000, "training iterations (optimizer updates)")
    warmup_iters: int = setting(1500, "iterations of linear warm-up (0: none)")
    warmup_ratio: float = setting(1e-6, "the warm-up's first lr as a fraction of the scheduled lr")
    power: float = setting(1.0, "the poly decay's power: lr = (base - min_lr) x (1 - iteration / iters)^power + "
                                "min_lr")
    min_lr: float = setting(0.0, "the lr the poly decay ends at")


@dataclass
class EvalConfig:
    interval: int = setting(16000, "evaluate every N iterations (0: only at the end)")
    mode: Literal["whole", "slide"] = setting("whole", "inference: whole (the whole image at once) or slide "
                                                       "(overlapping crop_size windows, stride apart)")
    crop_size: list[int] = setting([512, 512], "slide: the window [height, width]")
    stride: list[int] = setting([341, 341], "slide: the step between windows [height, width]")
    scales: list[float] = setting([1.0], "TTA scale ratios (of data.scale), the logits averaged")
    flip: bool = setting(False, "TTA: the horizontally flipped image too, the logits averaged")
    batch_size: int = setting(1, "validation images per batch (per process)")
    group_sizes: list[int] | None = setting(None, "frequent / common sizes (the rest: rare); default: ADE20K "
                                                  "fractions 20/55/75 of 150, at least one class per group, no "
                                                  "rare group below 3 classes (rrseg.metrics.groups)")
    group_by: Literal["region", "pixel", "both", "ltss_image", "ltss_pixel", "ltss_both"] = setting(
        "region", "frequency groups ranked by region (image) count (region), by pixel count (pixel: groups "
                  "pixel_frequent / ...), or both; ADE20K-Full only: LTSS's own per-class labels by image frequency "
                  "(ltss_image), pixel frequency (ltss_pixel) or both (ltss_both), the columns of LTSS's tables")


@dataclass
class TrainConfig:
    seed: int = setting(0, "the random seed (initialisation, data order, augmentation, dropout)")
    deterministic: bool = setting(True, "deterministic algorithms on CPU (bit-exact resume)")
    amp: Literal["none", "bf16", "fp16"] = setting("none", "mixed precision: none, bf16 or fp16 (CUDA)")
    sync_bn: bool = setting(False, "BatchNorm statistics synchronised over the processes (DDP)")
    compile: bool = setting(
        False, "torch.compile (inductor) of the training step's forward pass and loss (the model, its RR / CeCo "
               "branch and the loss terms), with eager's dropout masks: faster steps after a compilation at the "
               "start (a minute or more on a CPU, which needs a C++ compiler). Evaluation runs the model "
               "uncompiled; checkpoints, exports and resume are the same with it on or off")
    channels_last: bool = setting(
        False, "the model's weights and the training images in channels_last memory format (timm's --channels-last): "
               "faster convolutions where the backend has channels_last kernels (CUDA mixed precision; the demo's CPU "
               "step within +-4 % with rrseg's malloc setting, 0.95x without it); the same model to floating-point "
               "summation order. Checkpoints and exports are stored in the usual layout")
    log_interval: int = setting(50, "a training record (loss terms, lr) in log.jsonl and TensorBoard every N "
                                    "iterations")
    checkpoint_interval: int = setting(16000, "a training checkpoint every N iterations (and one at the end)")
    keep_last: int = setting(2, "training checkpoints kept, the latest (0: all)")
    tensorboard: bool = setting(True, "TensorBoard events in the work dir (tb/)")
    progress: bool = setting(True, "a progress bar while training (and while the data is checked, on a "
                                   "terminal); shown only when progress is (not with rrseg -q)")
    nan_policy: Literal["stop", "skip"] = setting("stop", "a non-finite loss: stop (checkpoint and exit with a "
                                                          "message) or skip (skip the step)")
    global_batch: int | None = setting(
        None, "the global batch the config assumes: images per optimizer update over all processes (data.batch_size "
              "x processes x optim.accumulate). The paper presets set it (their learning rates and RR's per-process "
              "pooling are the preset's at that batch only); a run with another batch logs a warning. null: no "
              "assumption")


@dataclass
class Config:
    model: ModelConfig = section(ModelConfig, "the model")
    data: DataConfig = section(DataConfig, "the datasets, the loading and the training augmentation")
    loss: LossConfig = section(LossConfig, "the training loss: a pixel loss, auxiliary heads and a region loss")
    optim: OptimConfig = section(OptimConfig, "the optimizer")
    schedule: ScheduleConfig = section(ScheduleConfig, "the iterations and the learning-rate schedule (linear "
                                                       "warm-up, then poly decay)")
    eval: EvalConfig = section(EvalConfig, "evaluation: when, how (whole / slide, TTA) and the frequency groups")
    train: TrainConfig = section(TrainConfig, "the training run: seed, precision, logging, checkpoints")
    work_dir: str = setting("", "where the run writes; empty: work_dirs/<name> (resolved_work_dir)")
    name: str = setting("", "a label for reports (and the default work dir); defaults to the config file's stem")
    paper: str = setting("", "a paper preset's mark: the experiment it reproduces and the configs it follows "
                             "(file:line); empty for user configs")


# A string key with a fixed set of values is a Literal field (optim.type, eval.mode, ...). The loss sections'
# `type` and options come from the loss registry (rrseg.rebalance.registry); the keys below name an entry of
# another registry, checked at load (an error naming close or known names) and listed in the reference.


def _dataset_name(name: str) -> None:
    from rrseg.data.builder import dataset_class  # here: the datasets import torchvision's transforms lazily

    dataset_class(name)  # the names and aliases build_dataset takes; else an error naming the known ones


def _dataset_names() -> list[str]:
    from rrseg.data.builder import DATASETS

    return list(DATASETS)


def _model_name(name: str) -> None:
    from rrseg.models import get_model_factory  # here: the models import timm (not needed by --help)

    get_model_factory(name)  # the registered names; else an error naming the close ones


def _model_names() -> list[str]:
    from rrseg.models import list_models

    return list_models()


_DATASET = Registered(_dataset_name, _dataset_names, " (or an alias)")
REGISTERED: dict[str, Registered] = {
    "model.name": Registered(_model_name, _model_names),
    "data.train.type": _DATASET,
    "data.val.type": _DATASET,
}

# The allowed values of every numeric key (a list's items one by one; `length` / `min_length`: its number of
# items), checked at load. A loss option declares its range on its options class's field (rrseg.ranges.ranged).
# tests/engine/test_config_ranges.py fails for a numeric key with no range.
RANGES: dict[str, Range] = {
    "model.num_classes": Range(">= 0"),  # 0: from the training dataset
    "data.batch_size": Range(">= 1"),
    "data.workers": Range(">= 0"),  # 0: load in the main process
    "data.crop_size": Range(">= 1", length=2),  # (height, width)
    "data.scale": Range(">= 1", length=2),  # (long, short) side
    "data.ratio_range": Range("> 0", length=2),  # (low, high), low <= high (_check_combinations)
    "data.cat_max_ratio": Range("(0, 1]"),  # 1: no re-drawn crops
    "data.flip_prob": Range("[0, 1]"),
    "data.mean": Range("[0, 255]", length=3),  # RGB, of 0..255 pixel values
    "data.std": Range("> 0", length=3),
    "loss.aux_weight": Range(">= 0"),
    "optim.lr": Range("> 0"),
    "optim.momentum": Range("[0, 1)"),
    "optim.betas": Range("[0, 1)", length=2),
    "optim.weight_decay": Range(">= 0"),
    "optim.layer_decay": Range("(0, 1]"),
    "optim.head_lr_mult": Range("> 0"),
    "optim.backbone_lr_mult": Range("> 0"),
    "optim.clip_grad": Range("> 0"),  # null: no clipping
    "optim.accumulate": Range(">= 1"),
    "schedule.iters": Range(">= 1"),
    "schedule.warmup_iters": Range(">= 0"),  # >= iters is a warning when training starts, not an error
    "schedule.warmup_ratio": Range("[0, 1]"),
    "schedule.power": Range(">= 0"),
    "schedule.min_lr": Range(">= 0"),  # and <= optim.lr (_check_combinations)
    "eval.interval": Range(">= 0"),  # 0: only at the end
    "eval.crop_size": Range(">= 1", length=2),
    "eval.stride": Range(">= 1", length=2),  # <= eval.crop_size in slide mode (_check_combinations)
    "eval.scales": Range("> 0", min_length=1),
    "eval.batch_size": Range(">= 1"),
    "eval.group_sizes": Range(">= 0", length=2),  # (frequent, common)
    "train.seed": Range("[0, 4294967295]"),  # numpy's seeds: 32 bits
    "train.log_interval": Range(">= 1"),
    "train.checkpoint_interval": Range(">= 1"),
    "train.keep_last": Range(">= 0"),  # 0: keep every checkpoint
    "train.global_batch": Range(">= 1"),
}


# ---------------------------------------------------------------------------------------------- loading


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
    data = read_yaml(path, "config")
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
            value = parse_yaml(raw) if raw.strip() else ""
        except ConfigError as e:  # a duplicate key in a mapping value
            raise ConfigError(f"--set {key}: {e}") from None
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


# The config's checker (rrseg.schema: types, Literal choices, ranges, registries, unknown keys), and its checks
# under the names this module uses.
_CHECK = Checker(noun="config key", ranges=RANGES, registered=REGISTERED,
                 builders={PixelLossOptions: _build_loss, RegionLossOptions: _build_loss})
_coerce, _build, _unknown = _CHECK.coerce, _CHECK.build, _CHECK.unknown


def _check_model_options(cfg: Config) -> None:
    """model.options: keywords of the model model.name names (the name was checked when it was read)."""
    from rrseg.models import model_options

    name = cfg.model.name
    accepted = list(model_options(name))
    for key in cfg.model.options:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config key 'model.options.{key}': not an option of {name}{hint} ({name} takes "
                              f"{', '.join(accepted) or 'no options'})")


def _check_combinations(cfg: Config) -> Config:
    """Keys that are valid alone but not together."""
    _check_model_options(cfg)
    low, high = cfg.data.ratio_range
    if low > high:
        raise ConfigError(f"config key 'data.ratio_range': {cfg.data.ratio_range!r} is not (low, high) with "
                          "low <= high")
    if cfg.eval.mode == "slide" and any(s > c for s, c in zip(cfg.eval.stride, cfg.eval.crop_size)):
        raise ConfigError(f"config key 'eval.stride': {cfg.eval.stride!r} is not <= eval.crop_size "
                          f"{cfg.eval.crop_size!r} in each side (slide mode: a larger stride leaves pixels unseen)")
    if cfg.schedule.min_lr > cfg.optim.lr:
        raise ConfigError(f"config key 'schedule.min_lr': {cfg.schedule.min_lr!r} is not <= optim.lr "
                          f"{cfg.optim.lr!r} (the poly schedule goes from optim.lr down to min_lr)")
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
    """Read ``path`` (following ``_base_``), apply ``--set`` overrides, validate. ``path`` is a config file or
    the name of a packaged preset (:func:`find_config`: ``demo``, ``upernet_swin_t/ade20k_160k_rr``)."""
    file = find_config(path)
    path = Path(path)
    try:
        data = apply_overrides(_load_with_bases(file), overrides or [])
        cfg = parse_config(data)
    except ConfigError as e:
        msg = str(e)
        # errors in a _base_ file name that file
        named = msg.startswith((str(path), str(path.resolve()), str(file), str(file.resolve())))
        raise ConfigError(msg if named else f"{path}: {msg}") from None
    if not cfg.name:
        cfg.name = file.stem
    cfg.work_dir = resolved_work_dir(cfg)
    return cfg


def resolved_work_dir(cfg: Config) -> str:
    """The run's work dir: ``work_dir``, or ``work_dirs/<name>`` (``work_dirs/run`` for a config without a
    name), so that a second run of one config, ``--resume`` or not, finds the first."""
    return cfg.work_dir or f"work_dirs/{cfg.name or 'run'}"


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


class _ShowDumper(yaml.SafeDumper):
    """Sections as blocks, lists of plain values on one line (``crop_size: [512, 512]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ShowDumper.add_representer(list, _represent_list)


def config_yaml(cfg: Config) -> str:
    """``cfg`` as YAML, every key in schema order (what ``rrseg config show`` prints; it loads back as is)."""
    return yaml.dump(config_to_dict(cfg), Dumper=_ShowDumper, sort_keys=False, default_flow_style=False, width=120)


# ---------------------------------------------------------------------------------------------- presets
# The packaged configs (the demo and the paper presets) live in the package, rrseg/configs/<model>/<name>.yaml
# with their shared rrseg/configs/_base_/*.yaml; a checkout's top-level configs/ links to that folder. Each is
# reachable by name from anywhere: `rrseg train upernet_swin_t/ade20k_160k_rr`, `rrseg train demo`.

_PRESET_SUFFIXES = (".yaml", ".yml")


def presets_dir() -> Path:
    """The folder of the packaged configs (``rrseg/configs``)."""
    from importlib import resources

    return Path(str(resources.files("rrseg") / "configs"))


def preset_names() -> list[str]:
    """The packaged configs by name, sorted: ``demo``, ``upernet_swin_t/ade20k_160k_rr``, ... (the ``_base_``
    fragments they share left out)."""
    root = presets_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
                  if "_base_" not in p.relative_to(root).parts)


def _preset_key(name: str | os.PathLike) -> str | None:
    """The preset name a relative path or name spells (``configs/demo.yaml``, ``demo.yaml`` and ``demo`` spell
    ``demo``), or None for an absolute path or one that leaves the folder."""
    text = os.fspath(name).replace(os.sep, "/")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if text.startswith("/") or not parts or ".." in parts:
        return None
    if parts[0] == "configs" and len(parts) > 1:  # a checkout's path: configs/<model>/<name>.yaml
        parts = parts[1:]
    key = "/".join(parts)
    for suffix in _PRESET_SUFFIXES:
        key = key.removesuffix(suffix)
    return key


def find_preset(name: str | os.PathLike) -> Path | None:
    """The packaged config ``name`` names (:func:`_preset_key`), or None."""
    key = _preset_key(name)
    if key is None:
        return None
    file = presets_dir() / f"{key}.yaml"
    return file if file.is_file() else None


def find_config(name: str | os.PathLike) -> Path:
    """The config file ``name`` names: an existing path as it is, else the packaged preset of that name
    (:func:`find_preset`), else a ConfigError naming the closest preset names."""
    path = Path(name)
    if path.exists() or _preset_key(name) is None:
        return path  # (a missing absolute path: read_yaml's "config file not found")
    preset = find_preset(name)
    if preset is not None:
        return preset
    key = _preset_key(name) or ""
    names = preset_names()
    close = difflib.get_close_matches(key, names, n=4, cutoff=0.6) or [n for n in names if key in n][:4]
    hint = f"; close ones: {', '.join(close)}" if close else ""
    raise ConfigError(f"{name}: config file not found, nor a packaged preset of that name{hint} "
                      "(`rrseg config list` names the presets)")
