"""Every numeric config value is range-checked at load (issue 22 item 4).

A catalogue built by walking the schema's dataclasses and every registered loss's options class: each numeric
key must declare a range (``RANGES`` or its field's ``rrseg.ranges.ranged``), so a new key without one fails
here. Each key is set just outside its range through ``--set`` (a one-line ConfigError naming the key, the
value and the range) and at its boundaries (accepted); lists also at a wrong length. Then the checks across
keys, and the CLI: exit status 2, one line on stderr, nothing written.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import pytest

from rrseg.engine.config import RANGES, Config, ConfigError, config_to_dict, load_config, parse_config
from rrseg.ranges import Range, field_range
from rrseg.rebalance.base import PixelLossOptions, RegionLossOptions
from rrseg.rebalance.registry import loss_registry


@dataclasses.dataclass(frozen=True)
class Key:
    """A numeric config key: its dotted name, number type, shape and declared range."""

    name: str
    number: type  # int or float
    is_list: bool
    optional: bool
    allowed: Range | None
    overrides: tuple[str, ...] = ()  # what selects the key (a loss section's type)


def _numeric(tp: typing.Any) -> tuple[type, bool, bool] | None:
    """(int or float, is a list, may be null) for a numeric field type, else None."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            return None
        tp = args[0]
    is_list = typing.get_origin(tp) is list
    if is_list:
        (tp,) = typing.get_args(tp)
    return (tp, is_list, optional) if tp in (int, float) else None


def _keys_of(cls: type, prefix: str, overrides: tuple[str, ...] = (), table: dict[str, Range] | None = None,
             recurse: bool = True) -> list[Key]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        name, tp = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(tp):
            if recurse and not issubclass(tp, (PixelLossOptions, RegionLossOptions)):  # losses: below
                out += _keys_of(tp, f"{name}.", table=table)
            continue
        shape = _numeric(tp)
        if shape is not None:
            allowed = (table or {}).get(name) or field_range(f)
            out.append(Key(name, *shape, allowed, overrides))
    return out


def catalogue() -> list[Key]:
    """Every numeric key of the schema, and every numeric option of every registered loss (selected by type)."""
    keys = _keys_of(Config, "", table=RANGES)
    for kind in ("pixel", "region"):
        for loss, cls in loss_registry(kind).items():
            keys += _keys_of(cls, f"loss.{kind}.", (f"loss.{kind}.type={loss}",), recurse=False)
    return keys


KEYS = catalogue()
IDS = [k.name + (f"[{k.overrides[0].split('=')[1]}]" if k.overrides else "") for k in KEYS]


def _yaml(value: float | list) -> str:
    """A --set value as a user types it (YAML)."""
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def _as(number: type, value: float) -> int | float:
    return int(value) if number is int else float(value)


def outside(key: Key) -> list[int | float]:
    """Numbers just outside each bounded side of the key's range (and .nan / .inf for a float)."""
    r = key.allowed
    assert r is not None
    values = []
    if r.low is not None:
        values.append(_as(key.number, r.low if r.low_open else r.low - 1))
    if r.high is not None:
        values.append(_as(key.number, r.high if r.high_open else r.high + 1))
    if key.number is float:
        values += [math.nan, math.inf]
    return values


def boundaries(key: Key) -> list[int | float]:
    """The ends of the key's range, or the nearest in-range numbers for an open end."""
    r = key.allowed
    assert r is not None
    values = []
    if r.low is not None:
        if not r.low_open:
            values.append(_as(key.number, r.low))
        else:
            values.append(_as(key.number, (r.low + r.high) / 2 if r.high is not None else r.low + 1e-6))
    if r.high is not None:
        if not r.high_open:
            values.append(_as(key.number, r.high))
        else:
            values.append(_as(key.number, (r.low + r.high) / 2 if r.low is not None else r.high - 1e-6))
    return values


def _list_of(key: Key, item: int | float) -> list:
    r = key.allowed
    return [item] * (r.length if r.length is not None else max(r.min_length, 1))


@pytest.fixture
def cfg_path(tmp_path) -> Path:
    p = tmp_path / "mine.yaml"
    p.write_text("model: {name: deeplabv3plus_tiny}\n")
    return p


def _error(path: Path, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: config key "), msg
    return msg


def test_the_catalogue_holds_every_kind_of_key():
    names = {k.name for k in KEYS}
    assert {"data.batch_size", "optim.lr", "schedule.iters", "data.crop_size", "eval.group_sizes", "train.seed",
            "loss.aux_weight", "loss.pixel.loss_weight", "loss.pixel.gamma", "loss.region.smooth",
            "loss.region.logit_scale", "model.num_classes"} <= names
    assert len(KEYS) >= 50


def test_every_numeric_key_has_a_range():
    missing = [i for i, k in zip(IDS, KEYS) if k.allowed is None]
    assert not missing, f"numeric config keys without a range (add one to RANGES or ranged() on the field): {missing}"


def test_every_range_names_a_numeric_schema_key():
    numeric = {k.name for k in KEYS if not k.overrides}
    assert set(RANGES) <= numeric, sorted(set(RANGES) - numeric)


def test_every_default_is_in_range():
    parse_config(config_to_dict(Config()))  # every key given: every one checked
    for kind in ("pixel", "region"):
        for cls in loss_registry(kind).values():
            parse_config({"loss": {kind: dataclasses.asdict(cls())}})


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_out_of_range_values_are_refused_naming_the_key(cfg_path, key):
    for value in outside(key):
        shown = repr(_as(key.number, value)) if math.isfinite(value) else repr(value)
        if key.is_list:
            msg = _error(cfg_path, [*key.overrides, f"{key.name}={_yaml(_list_of(key, value))}"])
            assert f"config key '{key.name}[0]': {shown} is not {key.allowed}" in msg, msg
        else:
            msg = _error(cfg_path, [*key.overrides, f"{key.name}={_yaml(value)}"])
            assert msg.endswith(f"config key '{key.name}': {shown} is not {key.allowed}"), msg


@pytest.mark.parametrize("key", KEYS, ids=IDS)
def test_boundary_values_are_accepted(cfg_path, key):
    section, _, leaf = key.name.rpartition(".")
    for value in boundaries(key):
        given = _list_of(key, value) if key.is_list else value
        cfg = load_config(cfg_path, [*key.overrides, f"{key.name}={_yaml(given)}"])
        node = config_to_dict(cfg)
        for part in section.split("."):
            node = node[part]
        assert node[leaf] == given
    if key.optional:
        load_config(cfg_path, [*key.overrides, f"{key.name}=null"])


@pytest.mark.parametrize("key", [k for k in KEYS if k.is_list], ids=[i for i, k in zip(IDS, KEYS) if k.is_list])
def test_list_lengths_are_checked(cfg_path, key):
    r = key.allowed
    good = boundaries(key)[0]
    n = r.length + 1 if r.length is not None else r.min_length - 1
    assert n >= 0, "a list key's range gives its length (length= or min_length=)"
    msg = _error(cfg_path, [*key.overrides, f"{key.name}={_yaml([good] * n)}"])
    expected = f"expected {r.length}" if r.length is not None else f"expected at least {r.min_length}"
    assert f"config key '{key.name}': " in msg and f"has {n} item" in msg and expected in msg, msg


@pytest.mark.parametrize(("override", "message"), [
    ("data.batch_size=0", "config key 'data.batch_size': 0 is not >= 1"),
    ("optim.lr=-1", "config key 'optim.lr': -1.0 is not > 0"),
    ("schedule.iters=-5", "config key 'schedule.iters': -5 is not >= 1"),
    ("data.flip_prob=1.5", "config key 'data.flip_prob': 1.5 is not in [0, 1]"),
    ("data.mean=[1, 2]", "config key 'data.mean': [1.0, 2.0] has 2 items, expected 3 (each in [0, 255])"),
    ("data.crop_size=[512, 0]", "config key 'data.crop_size[1]': 0 is not >= 1"),
    ("eval.scales=[]", "config key 'eval.scales': [] has 0 items, expected at least 1 (each > 0)"),
    ("optim.betas=[0.9, 1.0]", "config key 'optim.betas[1]': 1.0 is not in [0, 1)"),
])
def test_the_messages(cfg_path, override, message):
    assert _error(cfg_path, [override]) == f"{cfg_path}: {message}"


def test_loss_options_ranges_are_their_own(cfg_path):
    msg = _error(cfg_path, ["loss.region.type=rr", "loss.region.dropout=1"])
    assert msg.endswith("config key 'loss.region.dropout': 1.0 is not in [0, 1)")
    msg = _error(cfg_path, ["loss.region.type=ceco", "loss.region.logit_scale=0"])
    assert msg.endswith("config key 'loss.region.logit_scale': 0.0 is not > 0")
    msg = _error(cfg_path, ["loss.pixel.type=focal", "loss.pixel.gamma=-0.5"])
    assert msg.endswith("config key 'loss.pixel.gamma': -0.5 is not >= 0")


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.ratio_range=[2.0, 0.5]"], "config key 'data.ratio_range': [2.0, 0.5] is not (low, high) with low <= high"),
    (["eval.mode=slide", "eval.crop_size=[512, 512]", "eval.stride=[341, 600]"],
     "config key 'eval.stride': [341, 600] is not <= eval.crop_size [512, 512] in each side"),
    (["optim.lr=0.01", "schedule.min_lr=0.1"], "config key 'schedule.min_lr': 0.1 is not <= optim.lr 0.01"),
])
def test_keys_that_do_not_fit_together(cfg_path, overrides, message):
    assert message in _error(cfg_path, overrides)


def test_keys_that_fit_together_at_their_limits(cfg_path):
    cfg = load_config(cfg_path, ["data.ratio_range=[1.0, 1.0]", "eval.mode=slide", "eval.crop_size=[64, 48]",
                                 "eval.stride=[64, 48]", "optim.lr=0.01", "schedule.min_lr=0.01",
                                 "schedule.warmup_iters=100", "schedule.iters=10"])  # warm-up >= iters: a warning
    assert cfg.eval.stride == [64, 48] and cfg.schedule.min_lr == cfg.optim.lr
    load_config(cfg_path, ["eval.mode=whole", "eval.crop_size=[64, 48]", "eval.stride=[128, 128]"])  # unused


def test_a_checkpoints_config_is_checked_too():
    with pytest.raises(ConfigError, match=r"^config key 'data.batch_size': 0 is not >= 1$"):
        parse_config({"data": {"batch_size": 0}})


@pytest.mark.parametrize("override", ["data.batch_size=0", "optim.lr=-1", "schedule.iters=-5",
                                      "loss.pixel.loss_weight=-1"])
def test_cli_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, call_rrseg, override):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {name: deeplabv3plus_tiny}\ndata: {train: {root: data}, val: {root: data}}\n")
    proc = call_rrseg("train", cfg, "--set", override)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"config key '{override.split('=')[0]}'" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]  # no work_dirs/cfg, nothing else
