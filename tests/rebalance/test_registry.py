"""The loss registry: names -> options classes; a new method is one options class and one entry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from rrseg.engine.components import build_criterion
from rrseg.engine.config import ConfigError, parse_config
from rrseg.errors import RRSegError
from rrseg.models import build_model
from rrseg.rebalance import (
    PIXEL_LOSSES,
    REGION_LOSSES,
    ClassCounts,
    CrossEntropyLoss,
    LossTerm,
    PixelLossOptions,
    RegionLossOptions,
    list_losses,
    loss_class,
)

COUNTS = ClassCounts(np.array([9, 5, 2, 1]), np.array([900, 500, 20, 10]))


def test_names_and_unknown_names():
    assert list_losses("pixel") == ["ce", "weighted_ce", "focal", "balanced_softmax", "blv", "mask2former"]
    assert list_losses("region") == ["none", "rr", "ceco"]
    with pytest.raises(RRSegError, match=r"^unknown pixel loss 'focl'; did you mean 'focal'\? \(known: ce, "
                                         r"weighted_ce, focal, balanced_softmax, blv, mask2former\); a loss of "
                                         r"your own: "):
        loss_class("pixel", "focl")
    with pytest.raises(RRSegError, match=r"^unknown region loss 'xyz' \(known: none, rr, ceco\); a loss of your own: "
                                         r"import the module that registers it first \(rrseg COMMAND --import "
                                         r"MODULE\)$"):
        loss_class("region", "xyz")


@pytest.mark.parametrize("name", list(PIXEL_LOSSES))
def test_every_pixel_loss_declares_typed_options_and_builds_its_term(name):
    cls = PIXEL_LOSSES[name]
    assert issubclass(cls, PixelLossOptions) and cls.type == name
    assert all(f.default is not dataclasses.MISSING for f in dataclasses.fields(cls))  # every option has a default
    term = cls().build(COUNTS, 4, ignore_index=200)
    assert isinstance(term, LossTerm) and term.ignore_index == 200


@pytest.mark.parametrize("name", list(REGION_LOSSES))
def test_every_region_loss_builds_its_branch(name):
    cls = REGION_LOSSES[name]
    assert issubclass(cls, RegionLossOptions) and cls.type == name
    assert all(f.default is not dataclasses.MISSING for f in dataclasses.fields(cls))  # every option has a default
    branch = cls().build(16, 4, COUNTS, ignore_index=200)
    assert (branch is None) == (name == "none")
    if branch is not None:
        assert branch.ignore_index == 200 and branch.etf == (name == "ceco")


@dataclass
class HalfCEOptions(PixelLossOptions):
    """A method added the documented way: its options class, here with one option of its own."""

    type: str = "half_ce"
    half: float = 0.5

    def build(self, counts: ClassCounts, num_classes: int, ignore_index: int = 255) -> LossTerm:
        return CrossEntropyLoss("loss_half", self.loss_weight * self.half, ignore_index=ignore_index,
                                avg_non_ignore=self.avg_non_ignore)


def test_a_new_method_is_one_options_class_and_one_entry(monkeypatch):
    monkeypatch.setitem(PIXEL_LOSSES, "half_ce", HalfCEOptions)
    cfg = parse_config({"loss": {"pixel": {"type": "half_ce", "half": 0.25}}})
    criterion = build_criterion(cfg, build_model("ocrnet_tiny", num_classes=4), COUNTS, 4)
    assert criterion.terms[0].name == "loss_half" and criterion.terms[0].loss_weight == 0.25
    with pytest.raises(ConfigError, match=r"'loss.pixel.half': expected float, got 'x'"):
        parse_config({"loss": {"pixel": {"type": "half_ce", "half": "x"}}})
    with pytest.raises(ConfigError, match=r"'loss.pixel.half' is an option of half_ce, not of focal"):
        parse_config({"loss": {"pixel": {"type": "focal", "half": 0.25}}})


def test_the_configs_region_options_build_the_branch_the_criterion_gets():
    cfg = parse_config({"loss": {"region": {"type": "ceco", "loss_weight": 0.8}}})
    torch.manual_seed(0)
    model = build_model("ocrnet_tiny", num_classes=4)
    branch = cfg.loss.region.build(model.feature_channels, 4, COUNTS, 200)
    assert branch.etf and branch.loss_weight == 0.8 and branch.logit_scale == 5.0 and branch.ignore_index == 200
    model.set_rebalance(branch)
    assert build_criterion(cfg, model, COUNTS, 4).terms[-1] is branch
    assert parse_config({}).loss.region.build(model.feature_channels, 4, COUNTS) is None


def test_an_options_class_must_name_itself():
    from rrseg.rebalance.registry import _table

    @dataclass
    class Forgot(PixelLossOptions):  # no `type` default of its own: it would take the default loss's name
        extra: int = 1

    with pytest.raises(ValueError, match=r"Forgot: loss name 'ce' registered twice"):
        _table(PixelLossOptions, *PIXEL_LOSSES.values(), Forgot)
    with pytest.raises(TypeError, match="subclassing PixelLossOptions"):
        _table(PixelLossOptions, RegionLossOptions)


def test_a_loss_outside_rrseg_registers_with_the_public_decorator(registries):
    from rrseg.rebalance import register_loss

    @dataclass
    class OwnRegion(RegionLossOptions):
        type: str = "own_region"

    assert register_loss(HalfCEOptions) is HalfCEOptions and register_loss(OwnRegion) is OwnRegion
    assert loss_class("pixel", "half_ce") is HalfCEOptions and list_losses("region")[-1] == "own_region"
    assert parse_config({"loss": {"pixel": {"type": "half_ce", "half": 0.25}}}).loss.pixel.half == 0.25
    with pytest.raises(ValueError, match=r"^HalfCEOptions: loss name 'half_ce' registered twice"):
        register_loss(HalfCEOptions)
    with pytest.raises(TypeError, match="subclass PixelLossOptions or RegionLossOptions"):
        register_loss(CrossEntropyLoss)

    @dataclass
    class Forgot(PixelLossOptions):  # the base's `type`: the default loss's name, taken
        extra: int = 1

    with pytest.raises(ValueError, match=r"Forgot: loss name 'ce' registered twice"):
        register_loss(Forgot)
