"""Packaged presets: one copy (src/rrseg/configs, which the checkout's configs/ links to), in the wheel's package
data, reachable by name from any directory (load_config, rrseg train / eval / check-data / config show); and
``rrseg config show`` / ``list``."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import pytest
import yaml

from rrseg.cli.main import main
from rrseg.engine.config import (
    ConfigError,
    config_yaml,
    find_config,
    load_config,
    parse_config,
    preset_names,
    presets_dir,
)

REPO = Path(__file__).resolve().parents[2]


def test_one_copy_of_the_presets():
    assert (REPO / "configs").resolve() == presets_dir().resolve() == (REPO / "src/rrseg/configs").resolve()
    on_disk = sorted(p.relative_to(REPO / "configs").with_suffix("").as_posix()
                     for p in (REPO / "configs").glob("**/*.yaml") if p.parent.name != "_base_")
    assert preset_names() == on_disk
    assert {"demo", "upernet_swin_t/ade20k_160k_rr", "deeplabv3plus_r50/coco_stuff164k_80k"} <= set(on_disk)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_package_data_holds_every_preset_and_base():
    """What the wheel ships (tests/test_wheel.py builds it): every file under src/rrseg/configs matches one of
    pyproject's package-data patterns."""
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["rrseg"]
    root = REPO / "src" / "rrseg"
    files = [p.relative_to(root).as_posix() for p in (root / "configs").rglob("*") if p.is_file()]
    assert len(files) > 40
    # fnmatch's * also crosses "/", setuptools' does not: compare the number of parts too
    unmatched = [f for f in files if not any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/")
                                             for pat in patterns)]
    assert not unmatched


@pytest.mark.parametrize("spelling", ["upernet_swin_t/ade20k_160k_rr", "upernet_swin_t/ade20k_160k_rr.yaml",
                                      "configs/upernet_swin_t/ade20k_160k_rr.yaml",
                                      "./configs/upernet_swin_t/ade20k_160k_rr.yml"])
def test_a_preset_by_name_from_another_directory(spelling, tmp_path, monkeypatch):
    expected = load_config(REPO / "configs" / "upernet_swin_t" / "ade20k_160k_rr.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(spelling)
    assert cfg == expected and cfg.name == "upernet_swin_t_ade20k_160k_rr"
    assert cfg.loss.region.type == "rr" and cfg.data.train.type == "ade20k"  # its _base_ files, by relative path


def test_demo_by_name_and_an_existing_file_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = load_config("demo")
    assert demo.name == "demo" and demo.model.name == "deeplabv3plus_small"
    assert find_config("demo") == presets_dir() / "demo.yaml"
    (tmp_path / "demo.yaml").write_text("name: mine\nmodel: {name: deeplabv3plus_small}\n")
    assert load_config("demo.yaml").name == "mine"  # a file of that name wins over the preset
    assert load_config("demo").name == "demo"  # "demo" itself is no file here


def test_not_found_names_close_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config("upernet_swin_t/ade20k_160k_r")
    msg = str(e.value)
    assert msg.startswith("upernet_swin_t/ade20k_160k_r: config file not found, nor a packaged preset")
    assert "upernet_swin_t/ade20k_160k_rr" in msg and "rrseg config list" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"close ones: mask2former_swin_t/ade20k_160k, upernet_swin_t/"):
        load_config("swin_t")
    with pytest.raises(ConfigError, match=r"^nothing_like_it: config file not found, nor a packaged preset of that "
                                          r"name \(`rrseg config list` names the presets\)$"):
        load_config("nothing_like_it")
    missing = tmp_path / "no.yaml"  # an absolute path is a file or nothing
    with pytest.raises(ConfigError, match=rf"^{missing}: config file not found$"):
        load_config(missing)
    with pytest.raises(ConfigError, match=r"/demo: config file not found$"):
        load_config("../demo")  # never outside the presets' folder


def test_override_errors_name_the_config_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^demo: unknown config key 'optim\.lrr'; did you mean 'optim\.lr'\?"):
        load_config("demo", ["optim.lrr=1"])


@pytest.mark.parametrize("name", preset_names())
def test_show_prints_a_config_that_loads_back_the_same(name, capsys):
    assert main(["config", "show", name]) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(out)
    assert parse_config(data) == load_config(name)
    assert data["name"] and data["work_dir"]  # filled in
    assert set(data["loss"]["pixel"]) >= {"type", "loss_weight", "avg_non_ignore"}  # every default written


def test_show_with_overrides_and_every_default(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.yaml"
    mine.write_text("model: {name: deeplabv3plus_small}\n")
    assert main(["config", "show", str(mine), "--set", "loss.region.type=rr", "optim.lr=0.001"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["name"] == "mine" and data["work_dir"] == "work_dirs/mine"
    assert data["optim"]["lr"] == 0.001 and data["optim"]["betas"] == [0.9, 0.999]
    assert data["loss"]["region"]["type"] == "rr" and data["loss"]["region"]["smooth"] is None
    assert data["data"]["crop_size"] == [512, 512] and data["data"]["val"]["split"] == "val"
    assert "crop_size: [512, 512]" in config_yaml(load_config(mine))  # lists of values on one line


@pytest.mark.parametrize("argv, message", [
    (["config", "show", "nope"], "rrseg config: error: nope: config file not found, nor a packaged preset"),
    (["config", "show", "demo", "--set", "optim.lr=-1"], "rrseg config: error: demo: config key 'optim.lr'"),
    (["config", "show", "demo", "--set", "optim"], "rrseg config: error: demo: --set 'optim': expected key=value"),
])
def test_show_errors_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message) and captured.err.count("\n") == 1, captured.err


def test_config_needs_an_action(capsys):
    with pytest.raises(SystemExit) as e:
        main(["config"])
    assert e.value.code == 2


def test_list_names_the_presets(capsys):
    assert main(["config", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == preset_names()


def test_check_data_takes_a_preset_name(tmp_path, monkeypatch):
    from rrseg.cli.check_data import _training_config

    monkeypatch.chdir(tmp_path)
    targets = _training_config("upernet_swin_t/ade20k_160k_rr")
    assert targets is not None and [(t[0], t[2]) for t in targets] == [("ade20k", "training"), ("ade20k", "validation")]
    assert _training_config("data/synthetic") is None  # a missing dataset folder stays a dataset
