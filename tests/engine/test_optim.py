"""Parameter groups and the warm-up + poly schedule (mmcv's PolyLrUpdaterHook with linear warm-up)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rrseg.engine.config import OptimConfig, ScheduleConfig
from rrseg.engine.optim import build_optimizer, lr_at, param_groups, set_lr


def mmcv_poly_lr(it, base, iters, power, min_lr, warmup_iters, warmup_ratio):
    regular = (base - min_lr) * (1 - it / iters) ** power + min_lr
    if warmup_iters and it < warmup_iters:
        k = (1 - it / warmup_iters) * (1 - warmup_ratio)
        return regular * (1 - k)
    return regular


@pytest.mark.parametrize("it", [0, 1, 700, 1499, 1500, 1501, 80000, 159999, 160000])
def test_schedule_matches_mmcv(it):
    cfg = ScheduleConfig(iters=160000, warmup_iters=1500, warmup_ratio=1e-6, power=1.0, min_lr=0.0)
    assert lr_at(it, 6e-5, cfg) == pytest.approx(mmcv_poly_lr(it, 6e-5, 160000, 1.0, 0.0, 1500, 1e-6), rel=1e-12)
    cfg = ScheduleConfig(iters=80000, warmup_iters=0, power=0.9, min_lr=1e-4)
    assert lr_at(it, 0.01, cfg) == pytest.approx(mmcv_poly_lr(min(it, 80000), 0.01, 80000, 0.9, 1e-4, 0, 0), rel=1e-12)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.backbone.pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.head = nn.Conv2d(4, 2, 1)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.num_layers = 4  # ids 0..3, 3 = the heads

    def layer_id(self, name):
        return 0 if name.startswith("backbone.0") else (1 if name.startswith("backbone") else 3)


def test_no_decay_groups_head_multiplier_and_frozen_parameters():
    cfg = OptimConfig(type="adamw", lr=1e-3, weight_decay=0.05, head_lr_mult=10.0)
    groups = param_groups(Tiny(), cfg)
    by_name = {n: g for g in groups for n in g["names"]}
    assert "frozen.weight" not in by_name
    assert by_name["backbone.0.weight"]["weight_decay"] == 0.05 and by_name["backbone.0.weight"]["lr_scale"] == 1
    for n in ("backbone.0.bias", "backbone.1.weight", "backbone.1.bias", "backbone.pos_embed", "head.bias"):
        assert by_name[n]["weight_decay"] == 0.0, n
    assert by_name["head.weight"]["lr_scale"] == 10.0 and by_name["head.weight"]["weight_decay"] == 0.05


def test_layer_decay_and_set_lr():
    cfg = OptimConfig(type="adamw", lr=1e-3, layer_decay=0.5)
    model = Tiny()
    opt = build_optimizer(model, cfg)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales == [0.125, 0.25, 1.0]  # 0.5 ** (num_layers - 1 - layer_id) for ids 0, 1, 3
    lr = set_lr(opt, 10, 1e-3, ScheduleConfig(iters=100, warmup_iters=0))
    assert lr == pytest.approx(1e-3 * 0.9)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(lr * g["lr_scale"])
    sgd = build_optimizer(model, OptimConfig(type="sgd", lr=0.01, momentum=0.9))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9


def test_layer_decay_on_beit_follows_mmseg():
    """BEiT: heads at the full lr, block i at decay ** (depth + 1 - (i + 1)), embeddings lowest."""
    from rrseg.models import build_model

    model = build_model("upernet_beit_tiny", num_classes=3)
    groups = param_groups(model, OptimConfig(type="adamw", lr=1.0, layer_decay=0.9))
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    heads = [s for n, s in scale.items() if not n.startswith("backbone.")]
    assert heads and all(s == pytest.approx(1.0) for s in heads)
    embed = [s for n, s in scale.items() if "patch_embed" in n]
    assert embed and all(s == pytest.approx(0.9 ** (model.num_layers - 1)) for s in embed)
    assert min(scale.values()) == pytest.approx(0.9 ** (model.num_layers - 1))


def decay_of(model, rule):
    return {n: g["weight_decay"] for g in param_groups(model, OptimConfig(weight_decay=0.01, no_decay=rule))
            for n in g["names"]}


def test_swin_release_rule_exempts_what_the_released_config_exempts():
    """Released: mmcv custom_keys norm / absolute_pos_embed / relative_position_bias_table (decay_mult 0). On mmseg's
    names that is the backbone's LayerNorms and relative tables; biases and the heads' BatchNorms (`bn`) decay.
    Expected set built from module types here, not from names."""
    from rrseg.models import build_model

    model = build_model("upernet_swin_tiny", num_classes=3)
    expected = set()
    for mod_name, module in model.backbone.named_modules():
        if isinstance(module, nn.LayerNorm):
            expected |= {f"backbone.{mod_name}.{n}" for n, _ in module.named_parameters(recurse=False)}
    expected |= {n for n, _ in model.named_parameters() if n.endswith("relative_position_bias_table")}
    decay = decay_of(model, "swin_release")
    assert {n for n, wd in decay.items() if wd == 0.0} == expected
    assert any(".norms." in n for n in expected) and any("downsample.norm" in n for n in expected)
    head_bn = [f"{m}.{n}" for m, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)
               and m.startswith(("decode_head.", "auxiliary_head.")) for n, _ in mod.named_parameters(recurse=False)]
    assert head_bn and all(decay[n] == 0.01 for n in head_bn)
    # smp's decoder has "conv_norm_relu" blocks: a plain substring test would exempt them, mmseg's names would not
    assert any("norm" in n for n in head_bn) and all(decay[n] == 0.01 for n in decay if "conv_norm_relu" in n)
    assert decay["backbone.model.layers.0.blocks.0.attn.qkv.bias"] == 0.01
    # the default rule, for comparison: every 1-D parameter and bias is exempt
    norm_bias = decay_of(model, "norm_bias")
    assert norm_bias["backbone.model.layers.0.blocks.0.attn.qkv.bias"] == 0.0
    assert all(norm_bias[n] == 0.0 for n in head_bn)


def test_no_decay_none_and_plain_substring_without_a_backbone():
    assert set(decay_of(Tiny(), "none").values()) == {0.01}
    flat = nn.ModuleDict({"norm": nn.LayerNorm(4), "fc": nn.Linear(4, 4)})
    assert decay_of(flat, "swin_release") == {"norm.weight": 0.0, "norm.bias": 0.0, "fc.weight": 0.01, "fc.bias": 0.01}


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_fused_update_is_the_default_update_to_rounding(kind):
    """optim.fused: torch's fused kernel, the same update as its default implementation (which stays the default)."""
    assert OptimConfig().fused is False
    def model() -> nn.Module:  # (no bias before a BatchNorm: its ~0 gradient is rounding noise, which Adam scales up)
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))

    models = [model(), model()]
    opts = [build_optimizer(m, OptimConfig(type=kind, lr=0.01, weight_decay=0.05, fused=f))
            for m, f in zip(models, (False, True))]
    assert [bool(o.defaults["fused"]) for o in opts] == [False, True]
    for step in range(3):
        x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(step))
        for m, o in zip(models, opts):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert (models[0][2].weight - model()[2].weight).abs().max() > 1e-3  # it trained
