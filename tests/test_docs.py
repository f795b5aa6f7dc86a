"""The docs run as written: every Python snippet of README.md and docs/*.md is executed, and every shell command
of the README's bash blocks runs against the synthetic set, in a temporary directory.

A snippet runs with the names its prose says the reader has (``loader``, ``model``, ``images``, ...) given by the
test (GIVENS: small, CPU, no downloads), and with the few replacements listed in it, each with its reason (a
download, a size). A command runs as written or with the changes listed beside it (a stand-in for a real dataset
or run, a shorter schedule), or is listed as not run with the reason. A snippet or command that the tables do
not know fails the fast test below: add it to the table."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import cli_env, write_ade20k_full

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


# ------------------------------------------------------------------------------------------------ extraction
@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # of the opening fence
    section: str  # the heading above it
    text: str

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path, language: str) -> list[Block]:
    """The ```language blocks of a Markdown file, with the heading each sits under."""
    blocks, section, inside, start, lines = [], "", False, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not inside and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif not inside and line.strip() == f"```{language}":
            inside, start, lines = True, number, []
        elif inside and line.strip() == "```":
            blocks.append(Block(path, start, section, "\n".join(lines) + "\n"))
            inside = False
        elif inside:
            lines.append(line)
    return blocks


def shell_commands(block: Block) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and spacing dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    commands = []
    for line in joined.splitlines():
        command = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
        command = " ".join(command.split())
        if command:
            commands.append(command)
    return commands


# ------------------------------------------------------------------------------------------------ stand-ins
def write_ade20k_standin(base: Path, synthetic: Path | None = None, n_train: int = 8, n_val: int = 4,
                         size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """``base/ADEChallengeData2016`` in ADE20K's layout (``ADE_train_*.jpg`` / ``.png``, labels 0 = other,
    1..150). From ``synthetic`` (a synthetic set's images and labels, class k -> k + 1, unlabelled -> 0) when
    given, else random blocks."""
    rng = np.random.default_rng(seed)
    root = base / "ADEChallengeData2016"
    splits = (("train", "training", "ADE_train", n_train), ("val", "validation", "ADE_val", n_val))
    for split, folder, prefix, n in splits:
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        sources = sorted((synthetic / "images" / split).glob("*.jpg"))[:n] if synthetic else [None] * n
        assert len(sources) == n, f"{synthetic}: fewer than {n} {split} images"
        for i, source in enumerate(sources, 1):
            stem = f"{prefix}_{i:08d}"
            if source is None:
                w, h = size
                label = np.kron(rng.integers(0, 151, (h // 8, w // 8)), np.ones((8, 8), np.int64)).astype(np.uint8)
                image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / "images" / folder / f"{stem}.jpg", quality=95)
            else:
                raw = np.asarray(Image.open(synthetic / "labels" / split / f"{source.stem}.png"))
                label = np.where(raw == 255, 0, raw.astype(np.int64) + 1).astype(np.uint8)
                shutil.copyfile(source, root / "images" / folder / f"{stem}.jpg")
            Image.fromarray(label, mode="L").save(root / "annotations" / folder / f"{stem}.png")
    return root


# ------------------------------------------------------------------------------------------------ Python snippets
def _ade_loader(batches: int = 1, b: int = 2, size: int = 64, seed: int = 0):
    """Batches (images [B,3,H,W] float, labels [B,H,W] int64 in 0..149 with 255 ignored), as a loader gives."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        labels = torch.randint(0, 150, (b, size, size), generator=gen)
        labels[:, :, : size // 8] = 255
        out.append((torch.randn(b, 3, size, size, generator=gen), labels))
    return out


def givens_smp(tmp: Path) -> dict:
    return {"loader": _ade_loader()}


def check_smp(ns: dict, tmp: Path) -> None:
    import segmentation_models_pytorch as smp
    import torch

    assert ns["logits"].shape == (2, 150, 64, 64)
    smp.FPN("resnet50", encoder_weights=None, classes=150).load_state_dict(torch.load(tmp / "fpn.pt"))  # strict


def givens_hf(tmp: Path) -> dict:
    import torch
    import transformers

    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=150,
    )
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config)
    (images, labels), = _ade_loader(size=32)
    train_ds = [{"pixel_values": images[i], "labels": labels[i]} for i in range(2)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "hf"), use_cpu=True, report_to="none", max_steps=1, per_device_train_batch_size=2,
        save_steps=1, logging_steps=1, remove_unused_columns=False, disable_tqdm=True, seed=0,
    )
    return {"model": model, "batch": {"pixel_values": images, "labels": labels}, "training_args": args,
            "train_ds": train_ds}


def check_hf(ns: dict, tmp: Path) -> None:
    logged = [log for log in ns["trainer"].state.log_history if "loss_rr" in log]
    assert logged and logged[0]["loss_rr"] > 0
    assert (tmp / "hf" / "checkpoint-1" / "region_rebalance.safetensors").is_file()


def givens_plain(tmp: Path) -> dict:
    import torch
    from torch import nn

    class Model(nn.Module):  # returns the classifier's input next to the logits, as the prose asks
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 512, 3, stride=4, padding=1), nn.ReLU())
            self.classifier = nn.Conv2d(512, 150, 1)

        def forward(self, x):
            features = self.body(x)
            return features, self.classifier(features)

    model = Model()
    return {"model": model, "loader": _ade_loader(batches=2),
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.01)}


def check_plain(ns: dict, tmp: Path) -> None:
    import math

    assert math.isfinite(ns["loss"].item()) and ns["rr"].training


def givens_model(tmp: Path) -> dict:
    (images, labels), = _ade_loader(size=64)
    return {"images": images, "labels": labels}


def check_model(ns: dict, tmp: Path) -> None:
    assert ns["logits"].shape == (2, 150, 64, 64)
    assert not any(k.startswith("rebalance.") for k in ns["state"]) and ns["loss"].requires_grad
    assert "drop_path_rate" in ns["model_options"]("upernet_swin_t") and "upernet_swin_t" in ns["list_models"]()


def givens_datasets(tmp: Path) -> dict:
    write_ade20k_standin(tmp / "data" / "ade", n_train=8, n_val=2)  # where the snippet (and the presets) read it
    return {}


def check_datasets(ns: dict, tmp: Path) -> None:
    batch = next(iter(ns["loader"]))
    assert batch["image"].shape == (8, 3, 512, 512) and batch["label"].shape == (8, 512, 512)
    assert len(ns["val"]) == 2 and ns["train"].num_classes == 150


def check_counts(ns: dict, tmp: Path) -> None:
    from rrseg.rebalance import ClassCounts

    # the released sources the block names load (the JSON path is `rrseg stats` output, run in the commands test)
    assert ClassCounts.load("ade20k_image_label_stats.txt").image_counts.tolist() == \
        ClassCounts.load("ade20k").image_counts.tolist()
    for name in ("ade20k", "coco_stuff164k", "cityscapes"):
        ClassCounts.load(name)


def check_extensions(ns: dict, tmp: Path) -> None:
    """docs/CONTRIBUTING.md's module registered what it says (tests/test_extensions.py trains with it)."""
    import torch
    import torch.nn.functional as F

    from rrseg.data import dataset_class
    from rrseg.engine.config import ConfigError, parse_config
    from rrseg.models import build_model

    model = build_model("tiny_cnn", 3, channels=8).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 3, 8, 8) and out.features.shape == (2, 8, 8, 8) and model.feature_channels == 8
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[0, :4] = 255
    plain = F.cross_entropy(F.interpolate(out.logits, size=(32, 32), mode="bilinear", align_corners=False), labels,
                            ignore_index=255)
    cfg = parse_config({"loss": {"pixel": {"type": "smooth_ce", "smoothing": 0.0}}})
    torch.testing.assert_close(cfg.loss.pixel.build(None, 3)(out, labels), plain)
    with pytest.raises(ConfigError, match=r"'loss.pixel.smoothing': 1.0 is not in \[0, 1\)"):
        parse_config({"loss": {"pixel": {"type": "smooth_ce", "smoothing": 1.0}}})
    assert dataset_class("pets") is ns["PetsDataset"] and callable(ns["LossHistory"]().on_iteration_end)


@dataclass
class Snippet:
    anchor: str  # text only this block holds
    givens: Callable[[Path], dict] | None = None
    replace: list[tuple[str, str, str]] = field(default_factory=list)  # (old, new, why)
    check: Callable[[dict, Path], None] | None = None
    slow: bool = False
    needs: str | None = None  # a module the snippet needs that is no dev dependency, so may be absent


SNIPPETS = {
    "counts": Snippet('counts = "ade20k"', check=check_counts),
    "smp": Snippet("RRWrapper(model, counts=", givens_smp, [
        ('encoder_weights="imagenet"', "encoder_weights=None", "ImageNet weights are a download"),
    ], check_smp, slow=True, needs="segmentation_models_pytorch"),
    "hf": Snippet("region_rebalance_for(model,", givens_hf, check=check_hf, slow=True),
    "plain": Snippet("RegionRebalance(in_channels=512", givens_plain, check=check_plain),
    "models": Snippet('"upernet_swin_t", num_classes=150', givens_model, [
        ('pretrained="timm"', "pretrained=None", "timm's ImageNet weights are a download"),
    ], check_model, slow=True),
    "datasets": Snippet('build_dataset("ade20k"', givens_datasets, check=check_datasets, slow=True),
    "extensions": Snippet("class LabelSmoothingOptions", check=check_extensions),
}


def python_blocks() -> list[Block]:
    return [b for path in DOCS for b in fenced_blocks(path, "python")]


def snippet_of(block: Block) -> str:
    found = [key for key, s in SNIPPETS.items() if s.anchor in block.text]
    assert len(found) == 1, (f"{block.where}: a Python block that tests/test_docs.py does not know (or knows "
                             f"twice: {found}); add it to SNIPPETS")
    return found[0]


def test_every_python_snippet_is_in_the_table():
    keys = [snippet_of(b) for b in python_blocks()]
    assert sorted(keys) == sorted(SNIPPETS), f"blocks: {keys}; table: {sorted(SNIPPETS)} (a block went away?)"


def _snippet_params():
    params = []
    for block in python_blocks():
        key = [k for k, s in SNIPPETS.items() if s.anchor in block.text]
        if len(key) != 1:  # test_every_python_snippet_is_in_the_table says which
            continue
        marks = [pytest.mark.slow] if SNIPPETS[key[0]].slow else []
        params.append(pytest.param(block, key[0], id=f"{key[0]}@{block.where}", marks=marks))
    return params


@pytest.mark.parametrize(("block", "key"), _snippet_params())
def test_python_snippet_runs(block: Block, key: str, tmp_path, monkeypatch, registries):
    import torch

    snippet = SNIPPETS[key]
    if snippet.needs:
        pytest.importorskip(snippet.needs)
    monkeypatch.chdir(tmp_path)  # what a snippet writes (fpn.pt, checkpoints) goes there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = block.text
    for old, new, why in snippet.replace:
        assert old in code, f"{block.where}: no longer holds {old!r} (replaced here: {why}); update SNIPPETS"
        code = code.replace(old, new)
    namespace = snippet.givens(tmp_path) if snippet.givens else {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        exec(compile(code, block.where, "exec"), namespace)  # the README's own code
    finally:
        torch.set_num_threads(threads)
    if snippet.check:
        snippet.check(namespace, tmp_path)


# ------------------------------------------------------------------------------------------------ shell commands
@dataclass
class Run:
    """Run the command, after ``before(cwd)`` (the stand-ins it needs), with ``changes`` (old, new, why)."""

    changes: list[tuple[str, str, str]] = field(default_factory=list)
    before: Callable[[Path], None] | None = None
    after: Callable[[Path, subprocess.CompletedProcess], None] | None = None


@dataclass
class NotRun:
    why: str


SMALL_SYNTHETIC = ("data/synthetic", "data/synthetic --train 64 --val 8",
                   "size only: the 1500 default images take ~15 s and every later step (training's evaluation, "
                   "eval --tta) grows with them; the defaults are tests/data/test_synthetic.py's")
SHORT_DEMO = ("data.batch_size=8", "data.batch_size=8 schedule.iters=2 schedule.warmup_iters=1",
              "the demo's 1000 iterations take minutes; 2 show the command works")
PRESET_RUN = "the trained preset needs ADE20K and days of GPUs: the 2-iteration demo run of runs/mine stands in"


def _rrseg(cwd: Path, *args: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "rrseg", *map(str, args)], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"rrseg {' '.join(map(str, args))}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def ade20k_standin(cwd: Path) -> None:
    write_ade20k_standin(cwd / "data" / "ade", synthetic=cwd / "data" / "synthetic", n_train=16, n_val=4)


def ade20k_full_standin(cwd: Path) -> None:
    write_ade20k_full(cwd / "data")


def demo_baseline(cwd: Path) -> None:
    _rrseg(cwd, "train", "configs/demo.yaml", "--set", "data.batch_size=8", "schedule.iters=2",
           "schedule.warmup_iters=1", "--work-dir", "runs/baseline")


def photos(cwd: Path) -> None:
    (cwd / "photos").mkdir()
    for image in sorted((cwd / "data" / "synthetic" / "images" / "val").glob("*.jpg"))[:2]:
        shutil.copyfile(image, cwd / "photos" / image.name)


def ade20k_predictions(cwd: Path) -> None:
    """my_predictions/: the demo run's predictions of the ADE20K stand-in's validation images (the synthetic
    classes 0..29 are its classes 1..30 with the zero label reduced: the same ids)."""
    images = sorted((cwd / "data/ade/ADEChallengeData2016/images/validation").glob("*.jpg"))
    _rrseg(cwd, "predict", "runs/mine/inference.safetensors", *images, "--out", "my_predictions")


def ade20k_full_predictions(cwd: Path) -> None:
    """my_predictions/ for ADE20K-Full's validation images: its labels (16-bit PNGs, 65535 -> 511)."""
    shutil.rmtree(cwd / "my_predictions")
    (cwd / "my_predictions").mkdir()
    for tif in sorted((cwd / "data/ADE20K_2021_17_01/annotations_detectron2/validation").glob("*.tif")):
        pred = np.asarray(Image.open(tif)).astype(np.uint16)
        pred = np.where(pred == 65535, 511, pred).astype(np.uint16)
        Image.fromarray(pred).save(cwd / "my_predictions" / f"{tif.stem}.png")


def coco_stuff_raw(cwd: Path) -> None:
    """stuffthingmaps_trainval2017/{train2017,val2017}: raw ids (the synthetic labels' 0..29, 255)."""
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        (cwd / "stuffthingmaps_trainval2017" / folder).mkdir(parents=True)
        for label in sorted((cwd / "data" / "synthetic" / "labels" / split).glob("*.png"))[:3]:
            shutil.copyfile(label, cwd / "stuffthingmaps_trainval2017" / folder / label.name)


def my_experiment(cwd: Path) -> None:
    (cwd / "my_experiment.yaml").write_text(
        "model: {name: deeplabv3plus_tiny}\n"
        "data:\n  train: {type: folder, root: data/synthetic, split: train}\n"
        "  val: {type: folder, root: data/synthetic, split: val}\n")


def expect_files(*names: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(cwd: Path, proc: subprocess.CompletedProcess) -> None:
        missing = [n for n in names if not (cwd / n).exists()]
        assert not missing, f"not written: {missing}\n{proc.stdout[-1500:]}"

    return check


def expect_in_output(*texts: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(cwd: Path, proc: subprocess.CompletedProcess) -> None:
        assert all(t in proc.stdout for t in texts), proc.stdout[-2000:]

    return check


# (README section, command as written, with comments and extra spaces removed) -> what the test does with it;
# in README order, the commands of a section run one after the other in one folder
COMMANDS: dict[tuple[str, str], Run | NotRun] = {
    ("Two commands", "make demo"): NotRun("the demo itself (~8 min); tests/tools/test_demo.py runs it at a tiny size"),
    ("Two commands", "make test"): NotRun("runs this test suite"),
    ("Command line", "rrseg make-synthetic data/synthetic"): Run(
        [SMALL_SYNTHETIC], after=expect_files("data/synthetic/counts.json", "data/synthetic/dataset.yaml")),
    ("Command line", "rrseg init data/synthetic"): Run(after=expect_files("synthetic.yaml")),
    ("Command line", "rrseg check-data data/ade/ADEChallengeData2016"): Run(
        before=ade20k_standin, after=expect_in_output("OK")),
    ("Command line", "rrseg stats data/ade/ADEChallengeData2016/annotations/training --num-classes 150 "
                     "--reduce-zero-label -o ade20k_counts.json --txt ade20k --plot ade20k_counts.png"): Run(
        after=expect_files("ade20k_counts.json", "ade20k_image_label_stats.txt", "ade20k_pix_label_stats.txt",
                           "ade20k_counts.png")),
    ("Command line", "rrseg stats data/ADE20K_2021_17_01 -o ade20k_full_counts.json"): Run(
        before=ade20k_full_standin, after=expect_files("ade20k_full_counts.json")),
    ("Command line", "rrseg train configs/upernet_swin_t/ade20k_160k_rr.yaml"): NotRun(
        "160k iterations of UPerNet Swin-T on ADE20K: GPUs and days (the presets load and build: "
        "tests/engine/test_config_presets.py, tests/rebalance/test_released_presets.py)"),
    ("Command line", "rrseg train configs/demo.yaml --set loss.region.type=rr data.batch_size=8 --work-dir runs/mine"):
        Run([SHORT_DEMO], after=expect_files("runs/mine/inference.safetensors", "runs/mine/report.json")),
    ("Command line", "rrseg config show upernet_swin_t/ade20k_160k_rr"): Run(
        after=expect_in_output("upernet_swin_t")),
    ("Command line", "torchrun --nproc_per_node=4 -m rrseg train configs/upernet_swin_t/ade20k_160k_rr.yaml"): NotRun(
        "4 GPU processes on ADE20K; torchrun itself (gloo, CPU) is tested in tests/engine/test_trainer.py"),
    ("Command line", "rrseg eval configs/upernet_swin_t/ade20k_160k_rr.yaml work_dirs/upernet_swin_t_ade20k_160k_rr "
                     "--slide --tta"): Run([
        ("configs/upernet_swin_t/ade20k_160k_rr.yaml work_dirs/upernet_swin_t_ade20k_160k_rr",
         "configs/demo.yaml runs/mine", PRESET_RUN),
        ("--tta", "--tta --set 'eval.crop_size=[96,96]' 'eval.stride=[64,64]'",
         "the preset's 512x512 windows, not the demo's 128x96 images"),
    ], after=expect_in_output("overall", "wrote")),
    ("Command line", "rrseg predict work_dirs/upernet_swin_t_ade20k_160k_rr/inference.safetensors photos/*.jpg "
                     "--out predictions/"): Run(
        [("work_dirs/upernet_swin_t_ade20k_160k_rr", "runs/mine", PRESET_RUN)], before=photos,
        after=expect_in_output("wrote 2 predictions")),
    ("Command line", "rrseg compare work_dirs/upernet_swin_t_ade20k_160k work_dirs/upernet_swin_t_ade20k_160k_rr"): Run(
        [("work_dirs/upernet_swin_t_ade20k_160k work_dirs/upernet_swin_t_ade20k_160k_rr", "runs/baseline runs/mine",
          "the trained presets need ADE20K and GPUs: two 2-iteration demo runs (without and with RR) stand in")],
        before=demo_baseline, after=expect_files("runs/mine/compare/compare.md")),
    ("Command line", "rrseg score my_predictions/ data/ade/ADEChallengeData2016/annotations/validation "
                     "--num-classes 150 --reduce-zero-label --counts ade20k_counts.json --group-by both"): Run(
        before=ade20k_predictions, after=expect_in_output("4 images scored", "pixel_rare")),
    ("Command line", "rrseg score my_predictions/ data/ADE20K_2021_17_01 --counts ade20k_full_counts.json"): Run(
        before=ade20k_full_predictions, after=expect_in_output("2 images scored")),
    ("Command line", "rrseg convert coco-stuff stuffthingmaps_trainval2017 data/coco_stuff164k/annotations"): Run(
        before=coco_stuff_raw, after=expect_in_output("converted 6")),
    ("The synthetic long-tailed dataset", "rrseg make-synthetic data/synthetic"): NotRun(
        "the Command line section's first command, run there"),
    ("The synthetic long-tailed dataset",
     "rrseg make-synthetic data/s50 --classes 50 --train 2000 --val 400 --size 160x120 --seed 1"): Run(
        [("--train 2000 --val 400", "--train 100 --val 20", "size only (2400 images take ~30 s)")],
        after=expect_files("data/s50/counts.json")),
    ("Checking a dataset", "rrseg check-data data/synthetic"): Run(after=expect_in_output("OK")),
    ("Checking a dataset", "rrseg check-data data/ade/ADEChallengeData2016 --split val --json check.json"): Run(
        after=expect_files("check.json")),
    ("Checking a dataset", "rrseg check-data my_experiment.yaml"): Run(before=my_experiment,
                                                                        after=expect_in_output("OK")),
}


def readme_commands() -> list[tuple[str, str]]:
    return [(block.section, command) for block in fenced_blocks(README, "bash") for command in shell_commands(block)]


def test_every_readme_command_is_in_the_table():
    """Every command of the README's bash blocks is run by the test below or listed with why not; every entry
    of the table is still in the README."""
    found = readme_commands()
    unknown = [c for c in found if c not in COMMANDS]
    assert not unknown, f"README commands that tests/test_docs.py does not know (add them to COMMANDS): {unknown}"
    stale = [c for c in COMMANDS if c not in found]
    assert not stale, f"COMMANDS entries no longer in the README: {stale}"
    assert any(section == "Command line" for section, _ in found)
    not_run = {c: plan.why for c, plan in COMMANDS.items() if isinstance(plan, NotRun)}
    assert all(why for why in not_run.values())


def test_the_readme_puts_ade20k_where_the_presets_read_it():
    """The README's ADE20K folder is the one the ADE20K presets' data roots name (as mmseg's: data/ade/...)."""
    from rrseg.engine.config import load_config

    cfg = load_config(ROOT / "configs" / "upernet_swin_t" / "ade20k_160k_rr.yaml")
    used = {c.split()[2] for _, c in readme_commands() if c.startswith("rrseg check-data data/ade")}
    assert len(used) == 1, used
    for root in (cfg.data.train.root, cfg.data.val.root):  # as written, or resolved against the current folder
        assert str(root) == next(iter(used)) or str(root).endswith(os.sep + next(iter(used))), (used, root)


def _shell(cwd: Path, bin_dir: Path, command: str) -> subprocess.CompletedProcess:
    env = cli_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # ~20 commands, two short demo trainings
def test_readme_commands_run(tmp_path):
    """The README's commands in order, in one folder, as a user types them (``rrseg`` on the PATH is this
    checkout's); the configs/ folder of the checkout is linked in, as a checkout has it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rrseg"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rrseg "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    ran = []
    for key in readme_commands():
        plan = COMMANDS[key]
        if isinstance(plan, NotRun):
            continue
        command = key[1]
        for old, new, why in plan.changes:
            assert old in command, f"{key}: no longer holds {old!r} (changed here: {why}); update COMMANDS"
            command = command.replace(old, new)
        if plan.before:
            plan.before(cwd)
        proc = _shell(cwd, bin_dir, command)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
            f"{command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        if plan.after:
            plan.after(cwd, proc)
        ran.append(command)
    assert len(ran) == sum(isinstance(p, Run) for p in COMMANDS.values())
