"""What the trainer builds before the first step, in-process: SyncBN conversion, the RR branch's ignore index,
the loss terms' averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from rrseg.engine.components import build_criterion, convert_sync_bn
from rrseg.engine.config import load_config, parse_config
from rrseg.engine.trainer import Trainer
from rrseg.errors import RRSegError
from rrseg.models import build_model
from rrseg.rebalance import ClassCounts, RegionRebalance


@pytest.mark.parametrize("name", ["deeplabv3plus_tiny", "upernet_swin_tiny"])
def test_sync_bn_keeps_the_rr_batchnorm_per_process(name):
    model = build_model(name, num_classes=4)
    model.set_rebalance(RegionRebalance(model.feature_channels, 4, [9, 5, 2, 1]))
    keys = list(model.state_dict())
    rr_bn = model.rebalance.reduce[1]
    converted = convert_sync_bn(model)
    assert list(converted.state_dict()) == keys
    assert converted.rebalance.reduce[1] is rr_bn and type(rr_bn) is nn.BatchNorm2d
    outside = [(n, m) for n, m in converted.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and not n.startswith("rebalance.")]
    assert outside and all(type(m) is nn.SyncBatchNorm for _, m in outside), [n for n, _ in outside]
    # without a branch every BatchNorm is converted
    plain = convert_sync_bn(build_model(name, num_classes=4))
    assert not any(type(m) is nn.BatchNorm2d for m in plain.modules())


def write_folder_dataset(root: Path, ignore_index: int) -> None:
    """3 classes, 32x32 images; every label has some pixels equal to ``ignore_index``."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": ["a", "b", "c"], "ignore_index": ignore_index}))
    for split, n in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.repeat(np.arange(3, dtype=np.uint8), 11)[:32][None, :].repeat(32, 0)
            label[:4] = ignore_index
            Image.fromarray(label).save(root / "labels" / split / f"{i}.png")
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{i}.jpg")


def _small_run_config(tmp_path: Path, ignore_index: int = 255, **extra) -> Path:
    """A one-iteration run of the tiny DeepLabV3+ on write_folder_dataset's data; ``extra``: top-level sections
    that replace the defaults'."""
    if not (tmp_path / "data").is_dir():
        write_folder_dataset(tmp_path / "data", ignore_index=ignore_index)
    cfg = {
        "model": {"name": "deeplabv3plus_tiny"},
        "data": {"train": {"type": "folder", "root": str(tmp_path / "data"), "split": "train"},
                 "val": {"type": "folder", "root": str(tmp_path / "data"), "split": "val"},
                 "batch_size": 2, "workers": 0, "crop_size": [32, 32], "scale": [32, 32]},
        "loss": {"counts": None},
        "schedule": {"iters": 1, "warmup_iters": 0},
        "eval": {"interval": 0},
        "train": {"deterministic": False, "tensorboard": False, "progress": False, "checkpoint_interval": 1},
        **extra,
    }
    path = tmp_path / "my_run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("region", ["rr", "ceco"])
def test_rr_branch_takes_the_ignore_index_of_the_training_data(tmp_path, region):
    path = _small_run_config(tmp_path, ignore_index=200, loss={"region": {"type": region}, "counts": None},
                             work_dir=str(tmp_path / "work"))
    trainer = Trainer(load_config(path), device="cpu")
    parts = trainer.setup()
    assert parts.ignore_index == 200
    assert parts.model.rebalance.ignore_index == 200
    pixel = parts.criterion.terms[0]
    assert pixel.ignore_index == 200


def test_the_criterion_goes_to_the_runs_device(tmp_path, monkeypatch):
    """The pixel terms' buffers (weighted CE's class weights) are made on the CPU: the criterion follows the model
    to the run's device (on a GPU, a CPU weight tensor fails in cross_entropy). Seen here through Module.to."""
    from rrseg.rebalance.base import Criterion

    moved = []
    to = torch.nn.Module.to

    def spy(self, *args, **kwargs):
        if isinstance(self, Criterion):
            moved.append(torch.device(args[0]) if args else kwargs.get("device"))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    path = _small_run_config(tmp_path, loss={"pixel": {"type": "weighted_ce"}}, work_dir=str(tmp_path / "work"))
    parts = Trainer(load_config(path), device="cpu").setup()
    assert moved == [torch.device("cpu")]
    assert parts.criterion.terms[0].weight.device == torch.device("cpu")


def test_the_branch_is_attached_before_the_weights_load(tmp_path):
    """model.pretrained: an rrseg checkpoint's rebalance.* load into the config's branch (built after the model,
    before the weights), and a branch that does not fit them is refused naming the key."""
    import torch

    from rrseg.io import write_safetensors

    torch.manual_seed(1)
    source = build_model("deeplabv3plus_tiny", num_classes=3)
    source.set_rebalance(RegionRebalance(source.feature_channels, 3, [3, 2, 1]))
    write_safetensors(tmp_path / "start.safetensors", source.state_dict())
    path = _small_run_config(tmp_path, model={"name": "deeplabv3plus_tiny",
                                              "pretrained": str(tmp_path / "start.safetensors")},
                             loss={"region": {"type": "rr"}, "counts": None}, work_dir=str(tmp_path / "work"))
    parts = Trainer(load_config(path), device="cpu").setup()
    for key, value in source.state_dict().items():
        assert torch.equal(parts.model.state_dict()[key], value), key
    narrow = _small_run_config(tmp_path, model={"name": "deeplabv3plus_tiny",
                                                "pretrained": str(tmp_path / "start.safetensors")},
                               loss={"region": {"type": "rr", "reduce_channels": 8}, "counts": None},
                               work_dir=str(tmp_path / "work2"))
    with pytest.raises(RRSegError, match=r"shape mismatch for 'rebalance\."):
        Trainer(load_config(narrow), device="cpu").setup()


@pytest.mark.parametrize("avg_non_ignore", [True, False])
@pytest.mark.parametrize("kind", ["ce", "weighted_ce", "focal", "balanced_softmax", "blv"])
def test_every_pixel_term_and_the_aux_ce_follow_avg_non_ignore(kind, avg_non_ignore):
    cfg = parse_config({"loss": {"pixel": {"type": kind, "avg_non_ignore": avg_non_ignore}}})
    model = build_model("ocrnet_tiny", num_classes=4)
    criterion = build_criterion(cfg, model, ClassCounts(np.array([9, 5, 2, 1]), np.array([900, 500, 20, 10])), 4)
    assert [t.name for t in criterion.terms][1:] == ["loss_aux"]
    assert [t.avg_non_ignore for t in criterion.terms] == [avg_non_ignore, avg_non_ignore]


def test_weight_sum_rule_reaches_weighted_ce():
    cfg = parse_config({"loss": {"pixel": {"type": "weighted_ce", "divide_by_weight_sum": True}}})
    criterion = build_criterion(cfg, build_model("ocrnet_tiny", num_classes=4), ClassCounts(np.array([9, 5, 2, 1]),
                                np.array([900, 500, 20, 10])), 4)
    assert criterion.terms[0].divide_by_weight_sum and not criterion.terms[1].divide_by_weight_sum


@pytest.mark.parametrize(("assumed", "warns"), [(None, False), (4, False), (16, True)])
def test_the_global_batch_is_logged_and_another_than_the_configs_warns(tmp_path, caplog, assumed, warns):
    """train.global_batch (what a paper preset assumes) against the run's: batch 2 x 1 process x 2 steps = 4."""
    path = _small_run_config(
        tmp_path, optim={"accumulate": 2}, work_dir=str(tmp_path / "work"), name="preset",
        train={"deterministic": False, "tensorboard": False, "progress": False, "global_batch": assumed})
    with caplog.at_level("INFO", logger="rrseg"):
        trainer = Trainer(load_config(path), device="cpu")
        parts = trainer.setup()
    assert parts.metadata["global_batch"] == 4
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert "global batch 4 = 2 images per process x 1 processes x 2 accumulation steps" in info
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "global batch" in r.getMessage()]
    if warns:
        assert warnings == [warnings[0]] and warnings[0].startswith(
            "preset assumes a global batch of 16 but this run's is 4 (2 images per process")
    else:
        assert not warnings


def test_every_paper_preset_states_its_global_batch_mode_and_precision_as_mmseg():
    """Per family, from mmseg 1.2.2's configs (file:line in each preset's comment), written here, not read
    from rrseg: images per process, accumulation, global batch, test mode (crop, stride), precision."""
    expected = {  # family: (batch per process, accumulate, global batch, eval mode, crop, stride, amp)
        "deeplabv3plus_r50": (4, 1, 16, "whole", None, None, "none"),  # 4xb4
        "deeplabv3plus_r101": (4, 1, 16, "whole", None, None, "none"),
        "ocrnet_hr18": (4, 1, 16, "whole", None, None, "none"),  # 4xb4
        "ocrnet_hr48": (4, 1, 16, "whole", None, None, "none"),
        "upernet_swin_t": (4, 1, 16, "whole", None, None, "none"),  # the release: samples_per_gpu=4
        "upernet_swin_b": (4, 1, 16, "whole", None, None, "none"),
        "upernet_convnext_t": (2, 1, 16, "slide", [512, 512], [341, 341], "fp16"),  # 8xb2, amp, L25
        "upernet_beit_b": (2, 1, 16, "slide", [640, 640], [426, 426], "none"),  # 8xb2, L10
        "upernet_beit_l": (1, 2, 16, "slide", [640, 640], [426, 426], "fp16"),  # 8xb1, accumulative_counts=2
        # Mask2Former's release (Base-ADE20K-SemanticSegmentation.yaml): IMS_PER_BATCH 16 on 8 GPUs, AMP; LTSS's
        # ADE20K-Full config the same (its train.sh: --num-gpus 8)
        "mask2former_r50": (2, 1, 16, "whole", None, None, "fp16"),
        "mask2former_swin_t": (2, 1, 16, "whole", None, None, "fp16"),
    }
    root = Path(__file__).resolve().parents[2] / "configs"
    presets = sorted(p for p in root.glob("*/*.yaml") if p.parent.name != "_base_")
    assert len(presets) == 46
    for path in presets:
        cfg = load_config(path)
        family = path.parent.name
        batch, accumulate, global_batch, mode, crop, stride, amp = expected[family]
        assert cfg.paper, path
        assert (cfg.data.batch_size, cfg.optim.accumulate, cfg.train.global_batch) == (batch, accumulate, global_batch)
        assert (cfg.eval.mode, cfg.train.amp) == (mode, amp), path
        if mode == "slide":
            assert (cfg.eval.crop_size, cfg.eval.stride) == (crop, stride), path
        if not path.stem.endswith(("_rr", "_ceco")):  # the baselines say how to launch (the pairs inherit it)
            processes = global_batch // (batch * accumulate)
            assert f"torchrun --nproc_per_node={processes}" in path.read_text(), path


def test_the_default_work_dir_is_named_after_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_small_run_config(tmp_path))
    assert cfg.work_dir == "work_dirs/my_run"
    assert load_config(_small_run_config(tmp_path, name="swin rr")).work_dir == "work_dirs/swin rr"
    assert load_config(_small_run_config(tmp_path, work_dir="elsewhere")).work_dir == "elsewhere"


@pytest.mark.slow  # trains three times
def test_a_work_dir_that_holds_a_run_is_never_overwritten_silently(tmp_path):
    """A second run into a finished work dir without --resume is refused before anything is written (the old
    run intact); --overwrite removes the old run's outputs (and nothing else) first; --resume continues."""
    from rrseg.errors import RRSegError

    path = _small_run_config(tmp_path, work_dir=str(tmp_path / "work"))
    work = tmp_path / "work"
    Trainer(load_config(path), device="cpu").train()
    (work / "notes.txt").write_text("mine")
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*")}
    with pytest.raises(RRSegError, match=r"work holds a run \(log\.jsonl, checkpoints, best\.safetensors\): "
                                         r"continue it with --resume, replace it with --overwrite"):
        Trainer(load_config(path), device="cpu").setup()
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*")} == before
    trainer = Trainer(load_config(path, ["schedule.iters=2"]), device="cpu", overwrite=True)
    trainer.train()
    log = [line for line in (work / "log.jsonl").read_text().splitlines() if '"event": "start"' in line]
    assert len(log) == 1  # one run in the log, not two
    assert all(p.stat().st_mtime_ns > max(before.values()) for p in (work / "checkpoints").iterdir())
    assert (work / "notes.txt").read_text() == "mine"
    resumed = Trainer(load_config(path, ["schedule.iters=3"]), device="cpu", resume=True)
    resumed.train()
    assert resumed.iteration == 3


def _warnings_for(tmp_path, overrides, sizes=((96, 128),) * 4):
    from rrseg.engine.trainer import settings_warnings

    return settings_warnings(load_config(_small_run_config(tmp_path), overrides), list(sizes))


def test_settings_that_train_badly_are_warned_about(tmp_path):
    """A first config sized for ADE20K on 128x96 images: warm-up longer than the run, evaluation only at the end,
    images rescaled 4x and cropped far from their size; each warning names its keys. A sized config: none."""
    sized = ["schedule.iters=200", "schedule.warmup_iters=20", "eval.interval=50", "train.log_interval=10",
             "data.scale=[128,96]", "data.crop_size=[96,96]"]
    assert _warnings_for(tmp_path, sized) == []
    ade = ["schedule.iters=20", "schedule.warmup_iters=1500", "eval.interval=16000", "train.log_interval=50",
           "data.scale=[2048,512]", "data.crop_size=[512,512]"]
    got = _warnings_for(tmp_path, ade)
    assert len(got) == 4, got
    assert got[0].startswith("schedule.warmup_iters (1500) >= schedule.iters (20): the learning rate never leaves")
    assert got[1].startswith("eval.interval (16000) >= schedule.iters (20): the model is evaluated only")
    assert got[2].startswith("train.log_interval (50) > schedule.iters (20)")
    assert got[3].startswith("data.scale [2048, 512] rescales the training images (median 128x96) by 5.3x")
    # the crop alone: images at their size, a crop 4x their area
    got = _warnings_for(tmp_path, [*sized, "data.crop_size=[256,384]"])
    assert len(got) == 1 and got[0].startswith("data.crop_size [256, 384] is far from the rescaled images (128x96)")
    assert _warnings_for(tmp_path, [*sized, "eval.interval=0"]) == []  # 0: only at the end, on purpose
    assert _warnings_for(tmp_path, sized, sizes=()) == []  # no image sizes known: no size warnings


def test_the_trainer_logs_the_settings_warnings(tmp_path, caplog):
    path = _small_run_config(tmp_path, work_dir=str(tmp_path / "work"))
    with caplog.at_level("WARNING", logger="rrseg"):
        Trainer(load_config(path, ["schedule.warmup_iters=5"]), device="cpu").setup()
    assert any(r.getMessage().startswith("schedule.warmup_iters (5) >= schedule.iters (1)") for r in caplog.records)


def test_parameter_fingerprints_do_not_depend_on_the_memory_format():
    """The end record's parameter hashes: a model in channels_last (its 1x1 kernels count as contiguous with a
    last stride other than 1) hashes as the same model in the default format."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    model = build_model("deeplabv3plus_tiny", num_classes=3)
    run = SimpleNamespace(parts=SimpleNamespace(model=model), info=SimpleNamespace(distributed=False))
    plain = Trainer.fingerprints(run)
    model.to(memory_format=torch.channels_last)
    assert any(p.dim() == 4 and p.shape[-1] == 1 and p.stride(-1) != 1 for p in model.parameters())
    assert Trainer.fingerprints(run) == plain


def test_channels_last_trains_the_same_model_in_the_other_memory_format(tmp_path):
    """train.channels_last: the weights (and images) in channels_last through training, RR included; the run
    ends where the default format's does, to summation order; its checkpoint and inference weights load into a
    model in the default format."""
    from rrseg.engine import checkpoint as ckpt

    runs = {}
    for fmt in ("default", "channels_last"):
        # SGD: Adam's first steps take the sign of gradients that rounding can flip where they are ~0
        path = _small_run_config(tmp_path, work_dir=str(tmp_path / fmt), optim={"type": "sgd", "lr": 0.01},
                                 loss={"region": {"type": "rr"}, "counts": None})
        cfg = load_config(path, ["schedule.iters=3", "train.deterministic=true",
                                 f"train.channels_last={'true' if fmt == 'channels_last' else 'false'}"])
        trainer = Trainer(cfg, device="cpu")
        trainer.train()
        runs[fmt] = trainer
    model = runs["channels_last"].parts.model
    weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 < p.shape[-1]]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                           for p in weights)
    assert all(p.is_contiguous() for p in runs["default"].parts.model.parameters())
    default, last = (runs[f].parts.model.state_dict() for f in ("default", "channels_last"))
    assert default.keys() == last.keys()
    for name in default:
        torch.testing.assert_close(last[name], default[name], rtol=1e-4, atol=1e-5, msg=name)
    fresh = build_model("deeplabv3plus_tiny", num_classes=runs["default"].parts.num_classes)  # no RR branch
    state, _ = ckpt.read_weights(tmp_path / "channels_last" / "inference.safetensors")
    ckpt.load_weights(fresh, state, "inference.safetensors")  # (strict: every key, every shape)
    for name, value in fresh.state_dict().items():
        assert value.is_contiguous(), name
        torch.testing.assert_close(value, last[name], rtol=0, atol=0, msg=name)
