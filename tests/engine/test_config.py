"""Configs: YAML data only, _base_ inheritance, --set overrides, schema errors that name the key."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from rrseg.engine.config import ConfigError, apply_overrides, config_to_dict, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path, "base/b.yaml", "optim: {type: sgd, lr: 0.01, momentum: 0.8}\nmodel: {name: upernet_swin_tiny}\n")
    write(tmp_path, "base/c.yaml", "optim: {momentum: 0.95}\ntrain: {seed: 5}\n")
    cfg_path = write(tmp_path, "a.yaml", "_base_: [base/b.yaml, base/c.yaml]\noptim: {lr: 6e-5}\n")
    cfg = load_config(cfg_path, ["train.seed=7", "model.options.drop_path_rate=0.3", "eval.scales=[0.5, 1.0]"])
    assert cfg.optim.type == "sgd" and cfg.optim.lr == pytest.approx(6e-5) and cfg.optim.momentum == 0.95
    assert cfg.train.seed == 7 and cfg.model.options == {"drop_path_rate": 0.3}
    assert cfg.eval.scales == [0.5, 1.0]
    assert cfg.name == "a"
    # a dataclass round trip is stable
    assert config_to_dict(parse_config(config_to_dict(cfg))) == config_to_dict(cfg)


@pytest.mark.parametrize(
    "text, overrides, match",
    [
        ("optim: {lrr: 0.1}\n", [], r"unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
        ("optimm: {lr: 0.1}\n", [], r"unknown config key 'optimm'; did you mean 'optim'"),
        ("optim: {lr: fast}\n", [], r"'optim.lr': expected float, got 'fast'"),
        ("train: {seed: 1.5}\n", [], r"'train.seed': expected int, got 1.5"),
        ("train: {amp: fp8}\n", [], r"'train.amp': 'fp8' is not one of none, bf16, fp16"),
        ("optim: {type: sgdd}\n", [], r"'optim.type': 'sgdd' is not one of sgd, adamw; did you mean 'sgd'\?$"),
        ("eval: {mode: 1}\n", [], r"'eval.mode': 1 is not one of whole, slide$"),
        ("loss: {region: {type: rrr}}\n", [], r"did you mean 'rr'"),
        ("data: {crop_size: 512}\n", [], r"'data.crop_size': expected a list of int"),
        ("", ["optim.lrr=1"], r"unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
        ("", ["model.name.sub=1"], r"model.name is not a section"),
        ("", ["novalue"], r"expected key=value"),
        ("optim: {lr: 1}\noptim: {lr: 2}\n", [], r"duplicate key 'optim'"),
        ("optim:\n  lr: 1\n  type: sgd\n  lr: 2\n", [], r"bad\.yaml: duplicate key 'lr' \(line 4\)$"),
        ("", ["model.options={dropout: 0.1, dropout: 0.2}"], r"--set model.options: duplicate key 'dropout'"),
        ("- a\n- b\n", [], r"a config must be a mapping"),
        ("optim: {lr: [1\n", [], r"invalid YAML"),
        ("loss: {pixel: {avg_non_ignore: maybe}}\n", [], r"'loss.pixel.avg_non_ignore': expected bool, got 'maybe'"),
        ("", ["loss.pixel.avg_non_ignore=maybe"], r"'loss.pixel.avg_non_ignore': expected bool, got 'maybe'"),
        ("loss: {pixel: {type: weighted_ce, avg_non_ignore: false, divide_by_weight_sum: true}}\n", [],
         r"'loss.pixel.divide_by_weight_sum': true .* needs loss.pixel.avg_non_ignore: true"),
        # losses and datasets: the choices are the registries'; an option of another loss names both
        ("loss: {pixel: {type: focl}}\n", [],
         r"'loss.pixel.type': unknown pixel loss 'focl'; did you mean 'focal'\? "
         r"\(known: ce, weighted_ce, focal, balanced_softmax, blv, mask2former\); a loss of your own: import the "
         r"module that registers it first \(rrseg COMMAND --import MODULE\)$"),
        ("loss: {pixel: {avg_non_ignore: false, divide_by_weight_sum: true}}\n", [],
         r"'loss.pixel.divide_by_weight_sum' is an option of weighted_ce, not of ce "
         r"\(ce takes loss_weight, avg_non_ignore\)$"),
        ("", ["loss.pixel.type=focal", "loss.pixel.sigma=4.0"],
         r"'loss.pixel.sigma' is an option of blv, not of focal"),
        ("", ["loss.pixel.prior=region"], r"'loss.pixel.prior' is an option of balanced_softmax, not of ce"),
        ("", ["loss.pixel.gama=2"], r"unknown config key 'loss.pixel.gama'; did you mean 'loss.pixel.gamma'"),
        ("", ["loss.pixel.type=weighted_ce", "loss.pixel.weight_scheme=sqrt"],
         r"'loss.pixel.weight_scheme': 'sqrt' is not one of log, inv_sqrt"),
        ("loss: {region: {type: rr, logit_scale: 5}}\n", [],
         r"'loss.region.logit_scale' is an option of ceco, not of rr"),
        ("", ["loss.region.trainable=true"], r"'loss.region.trainable' is an option of rr and ceco, not of none "
                                            r"\(none takes no options\)$"),
        # the model: its name and options checked against the model registry when the config is read
        ("model: {name: deeplabv3plus_smal}\n", [],
         r"bad\.yaml: config key 'model\.name': unknown model 'deeplabv3plus_smal'; did you mean "
         r"deeplabv3plus_small"),
        ("model: {name: Unet}\n", [], r"config key 'model\.name': unknown model 'Unet'; did you mean smp_unet\?; "
                                      r"a model of your own: import the module that registers it first"),
        ("model: {name: SegNet}\n", [], r"config key 'model\.name': unknown model 'SegNet'; known models: "
                                        r"deeplabv3plus_r101, .*upernet_swin_tiny; a model of your own: import the "
                                        r"module that registers it first \(rrseg COMMAND --import MODULE\)$"),
        ("", ["model.name=deeplabv3plus_tiny", "model.options.dropuot=0.2"],
         r"config key 'model\.options\.dropuot': not an option of deeplabv3plus_tiny; did you mean 'dropout'\? "
         r"\(deeplabv3plus_tiny takes output_stride, channels, aux_head, atrous_rates, dropout\)$"),
        ("model: {name: deeplabv3plus_tiny, options: {drop_path_rate: 0.1}}\n", [],
         r"config key 'model\.options\.drop_path_rate': not an option of deeplabv3plus_tiny\b.* \(deeplabv3plus_tiny "
         r"takes output_stride, channels, aux_head, atrous_rates, dropout\)$"),
        ("model: {name: ocrnet_tiny, options: {num_classes: 3}}\n", [],
         r"config key 'model\.options\.num_classes': not an option of ocrnet_tiny \(ocrnet_tiny takes channels, "
         r"ocr_channels\)$"),
        ("data: {train: {type: pascal}}\n", [],
         r"'data.train.type': unknown dataset 'pascal'; known: ade20k, ade20k_full, coco_stuff164k, cityscapes, "
         r"folder; a dataset of your own: import the module that registers it first \(rrseg COMMAND --import "
         r"MODULE\)$"),
    ],
)
def test_errors_name_the_key(tmp_path, text, overrides, match):
    p = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(p, overrides)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(str(p))


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    p = write(tmp_path, "evil.yaml", f'optim: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="refused a YAML tag"):
        load_config(p)
    assert not marker.exists()


def test_base_cycle_and_missing_base(tmp_path):
    write(tmp_path, "x.yaml", "_base_: y.yaml\n")
    write(tmp_path, "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.yaml")
    p = write(tmp_path, "z.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(p)


def test_set_values_are_yaml_scalars():
    data = apply_overrides({}, ["optim.clip_grad=null", "train.tensorboard=false", "name=run 1"])
    assert data == {"optim": {"clip_grad": None}, "train": {"tensorboard": False}, "name": "run 1"}


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(str(REPO / "configs/**/*.yaml"), recursive=True)
                                        if "_base_" not in p))
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.model.name
    if "_rr" in Path(path).stem:
        assert cfg.loss.region.type == "rr"


PRESETS = sorted(p for p in glob.glob(str(REPO / "configs/**/*.yaml"), recursive=True)
                 if "_base_" not in p and not p.endswith("demo.yaml"))


@pytest.mark.parametrize("path", PRESETS)
def test_paper_presets_average_pixel_losses_as_mmseg_017(path):
    assert load_config(path).loss.pixel.avg_non_ignore is False


def test_demo_and_user_configs_average_over_labelled_pixels(tmp_path):
    assert load_config(REPO / "configs/demo.yaml").loss.pixel.avg_non_ignore is True
    assert load_config(write(tmp_path, "mine.yaml", "model: {name: deeplabv3plus_small}\n")).loss.pixel.avg_non_ignore


@pytest.mark.parametrize("path", PRESETS)
def test_presets_use_their_recipes_weight_decay_groups(path):
    cfg = load_config(path)
    family = Path(path).parent.name
    expected = {"upernet_swin_t": "swin_release", "upernet_swin_b": "swin_release", "upernet_convnext_t": "norm_bias",
                "upernet_beit_b": "norm_bias", "upernet_beit_l": "norm_bias", "mask2former_r50": "norm_embed",
                "mask2former_swin_t": "norm_embed"}.get(family, "none")
    assert cfg.optim.no_decay == expected


def test_no_decay_rule_is_checked(tmp_path):
    p = write(tmp_path, "bad.yaml", "optim: {no_decay: swin}\n")
    with pytest.raises(ConfigError, match=r"'optim.no_decay': 'swin' is not one of norm_bias, swin_release, "
                                          r"norm_embed, none; did you mean 'swin_release'\?") as e:
        load_config(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("path", [p for p in PRESETS if Path(p).stem.endswith(("_rr", "_ceco"))])
def test_rr_presets_pool_over_the_released_per_process_batch(path):
    """RR pools over the per-process batch: each RR / CeCo preset and its baseline use the same one, 4 as the
    released configs (samples_per_gpu=4) where the release has the family, mmseg's own for ConvNeXt (2) and
    BEiT (2; BEiT-L 1 with 2 accumulated micro-batches): tests/engine/test_trainer_setup.py has the table."""
    cfg = load_config(path)
    stem = Path(path).stem
    baseline = load_config(Path(path).with_name(stem.rsplit("_", 1)[0] + ".yaml"))
    assert cfg.data.batch_size == baseline.data.batch_size
    assert cfg.optim.accumulate == baseline.optim.accumulate
    assert cfg.train.global_batch == baseline.train.global_batch == 16
    if Path(path).parent.name.startswith(("deeplabv3plus", "ocrnet", "upernet_swin")):
        assert (cfg.data.batch_size, cfg.optim.accumulate) == (4, 1)


@pytest.mark.parametrize(("old", "new"), [(True, "norm_bias"), (False, "none")])
def test_older_no_decay_key_still_loads(old, new):
    # checkpoints written before optim.no_decay carry the older key in their metadata
    data = {"optim": {"type": "sgd", "no_decay_norm_bias": old}}
    assert parse_config(data).optim.no_decay == new
    assert data == {"optim": {"type": "sgd", "no_decay_norm_bias": old}}  # the caller's mapping is untouched
    with pytest.raises(ConfigError, match="both set"):
        parse_config({"optim": {"no_decay_norm_bias": old, "no_decay": "none"}})


def test_loss_and_dataset_choices_come_from_the_registries():
    from rrseg.data.builder import DATASETS
    from rrseg.rebalance import PIXEL_LOSSES, REGION_LOSSES

    for name in PIXEL_LOSSES:
        assert type(parse_config({"loss": {"pixel": {"type": name}}}).loss.pixel) is PIXEL_LOSSES[name]
    for name in REGION_LOSSES:
        assert type(parse_config({"loss": {"region": {"type": name}}}).loss.region) is REGION_LOSSES[name]
    # every name and alias build_dataset takes, as given (build_dataset resolves it)
    for name in [*DATASETS, "ADE20K", "coco-stuff", "synthetic"]:
        assert parse_config({"data": {"val": {"type": name}}}).data.val.type == name
    # every registered model, with every option it takes at its default
    from rrseg.models import list_models, model_options

    for name in list_models():
        options = {k: v for k, v in model_options(name).items() if v is not None}
        cfg = parse_config({"model": {"name": name, "options": options}})
        assert cfg.model.name == name and cfg.model.options == options


def test_a_loss_section_holds_its_loss_options_only():
    cfg = load_config(REPO / "configs/demo.yaml", ["loss.pixel.type=balanced_softmax", "loss.pixel.prior=region"])
    assert config_to_dict(cfg)["loss"]["pixel"] == {"type": "balanced_softmax", "loss_weight": 1.0,
                                                     "avg_non_ignore": True, "prior": "region", "tau": 1.0}
    assert config_to_dict(cfg)["loss"]["region"] == {"type": "none"}
    assert config_to_dict(parse_config(config_to_dict(cfg))) == config_to_dict(cfg)


# A dump of the flat sections every config.yaml and checkpoint held before losses were a registry.
FLAT_PIXEL = {"type": "focal", "loss_weight": 1.0, "weight_scheme": "log", "gamma": 3.0, "prior": "pixel", "tau": 1.0,
              "sigma": 4.0, "avg_non_ignore": False, "divide_by_weight_sum": False}
FLAT_REGION = {"type": "rr", "loss_weight": 0.5, "trainable": False, "per_image": True, "prior": "region",
               "smooth": None, "reduce_channels": 128, "hidden_channels": 512, "dropout": 0.1, "logit_scale": 5.0}


def test_older_flat_loss_sections_still_load():
    data = {"loss": {"pixel": dict(FLAT_PIXEL), "region": dict(FLAT_REGION)}}
    cfg = parse_config(data)
    assert data == {"loss": {"pixel": FLAT_PIXEL, "region": FLAT_REGION}}  # the caller's mapping is untouched
    assert config_to_dict(cfg)["loss"]["pixel"] == {"type": "focal", "loss_weight": 1.0, "avg_non_ignore": False,
                                                     "gamma": 3.0}
    # rr's options: the dumped ones but ceco's logit_scale, and the defaults of those added since
    added = {"prior_eps": None, "ignored_region": False, "consistency_weight": 0.0, "slots": 128}
    assert config_to_dict(cfg)["loss"]["region"] == {
        **{k: v for k, v in FLAT_REGION.items() if k != "logit_scale"}, **added}
    none = parse_config({"loss": {"region": {**FLAT_REGION, "type": "none"}}})
    assert config_to_dict(none)["loss"]["region"] == {"type": "none"}
