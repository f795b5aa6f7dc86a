"""A catalogue of bad inputs, each through the real CLI: a one-line error that names the file, key or value,
exit status 2, no traceback, and nothing written (the folder holding every input and output is snapshotted
before and after).

Most cases run in-process (``rrseg.cli.main.main``, the same code path without the interpreter start-up);
``test_catalogue_as_subprocesses`` runs a few as real ``python -m rrseg`` processes. The messages are listed
in docs/RELIABILITY.md; ``RRSEG_CATALOGUE_JSON=FILE`` writes the ones seen (paths shortened) to FILE.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .conftest import changes, data_sections, snapshot


class Payload:
    """Unpickling this runs a shell command (here: creating a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Ctx:
    """What a case may use to build its inputs."""

    tmp: Path
    dataset: Path
    config: Callable[..., Path]  # tiny_config
    damaged: Callable[[Callable[[Path], object]], Path]
    checkpoints: dict[str, Path]
    request: pytest.FixtureRequest

    def bad_data_config(self, fn: Callable[[Path], object], **sections) -> Path:
        return self.config("run", data=data_sections(self.damaged(fn)), **sections)


def _label(root: Path, split: str = "train", name: str = "000005") -> Path:
    return root / "labels" / split / f"{name}.png"


def _edit_label(path: Path, fn: Callable[[np.ndarray], np.ndarray], mode: str | None = None) -> None:
    arr = fn(np.array(Image.open(path)))
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)


def corrupt_jpeg(c: Ctx) -> list:
    def damage(root: Path) -> None:
        p = root / "images" / "train" / "000005.jpg"
        head = p.read_bytes()[:200]  # a real JPEG header, then noise
        p.write_bytes(head + np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())

    return ["train", c.bad_data_config(damage)]


def truncated_png(c: Ctx) -> list:
    def damage(root: Path) -> None:
        p = _label(root)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    return ["train", c.bad_data_config(damage)]


def label_out_of_range(c: Ctx) -> list:
    def damage(root: Path) -> None:
        _edit_label(_label(root), lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, 9, a).astype(np.uint8))

    return ["train", c.bad_data_config(damage)]


def rgb_label(c: Ctx) -> list:
    return ["train", c.bad_data_config(lambda root: _edit_label(_label(root), lambda a: np.stack([a] * 3, -1)))]


def size_mismatch(c: Ctx) -> list:  # in the validation split, found by `rrseg eval`
    cfg = c.bad_data_config(lambda root: _edit_label(_label(root, "val", "000003"), lambda a: a[:16]))
    return ["eval", cfg, c.checkpoints["deeplab"], "--out", c.tmp / "eval_out"]


def image_without_label(c: Ctx) -> list:
    return ["train", c.bad_data_config(lambda root: _label(root).unlink())]


def empty_split(c: Ctx) -> list:
    def damage(root: Path) -> None:
        for p in (root / "images" / "val").iterdir():
            p.unlink()

    return ["train", c.bad_data_config(damage)]


def missing_dataset_root(c: Ctx) -> list:
    return ["train", c.config("run", data=data_sections(c.tmp / "no_such_dataset"))]


def unknown_config_key(c: Ctx) -> list:
    cfg = c.config("run")
    data = yaml.safe_load(cfg.read_text())
    data["optim"]["momentun"] = 0.8
    cfg.write_text(yaml.safe_dump(data))
    return ["train", cfg]


def wrong_type_in_config(c: Ctx) -> list:
    return ["train", c.config("run", data={"batch_size": "four"})]


def counts_wrong_length(c: Ctx) -> list:
    counts = c.tmp / "counts.json"
    counts.write_text(json.dumps({"image_counts": [5, 4, 3]}))
    return ["train", c.config("run", loss={"counts": str(counts)})]


def counts_negative(c: Ctx) -> list:
    counts = c.tmp / "counts.txt"
    counts.write_text("22\n18\n-15\n13\n11\n10\n")
    return ["train", c.config("run", loss={"counts": str(counts)})]


def other_architecture(c: Ctx) -> list:
    return ["eval", c.config("run"), c.checkpoints["ocrnet"], "--out", c.tmp / "eval_out"]


def other_class_count(c: Ctx) -> list:
    return ["eval", c.config("run", model={"name": "deeplabv3plus_tiny", "num_classes": 7}), c.checkpoints["deeplab"],
            "--out", c.tmp / "eval_out"]


def truncated_checkpoint(c: Ctx) -> list:
    ckpt = c.tmp / "model.safetensors"
    data = c.checkpoints["deeplab"].read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    return ["predict", ckpt, c.dataset / "images" / "val" / "000000.jpg", "--out", c.tmp / "pred_out"]


def pickled_checkpoint_with_code(c: Ctx) -> list:
    evil = c.tmp / "model.pth"
    evil.write_bytes(pickle.dumps({"state_dict": {"w": Payload(c.tmp / "PAYLOAD_RAN")}}))
    return ["eval", c.config("run"), evil, "--out", c.tmp / "eval_out"]


def yaml_python_tag(c: Ctx) -> list:
    cfg = c.tmp / "evil.yaml"
    cfg.write_text(f'model: !!python/object/apply:os.system ["touch {c.tmp / "PAYLOAD_RAN"}"]\n')
    return ["train", cfg]


def set_unknown_key(c: Ctx) -> list:
    return ["train", c.config("run"), "--set", "optim.lr=0.01", "schedule.iterations=10"]


def duplicate_config_key(c: Ctx) -> list:
    cfg = c.config("run")
    cfg.write_text(cfg.read_text() + "optim: {lr: 0.5}\n")
    return ["train", cfg]


def unknown_model_name(c: Ctx) -> list:  # refused when the config is read, before any sample is decoded
    return ["train", c.config("run", model={"name": "deeplabv3plus_tiyn"})]


def unknown_model_option(c: Ctx) -> list:
    return ["train", c.config("run"), "--set", "model.options.dropuot=0.2"]


def duplicate_key_in_dataset_yaml(c: Ctx) -> list:
    def damage(root: Path) -> None:
        spec = root / "dataset.yaml"
        spec.write_text(spec.read_text() + "name: copy\nname: again\n")

    return ["train", c.bad_data_config(damage)]


def missing_config(c: Ctx) -> list:
    return ["train", c.tmp / "no_such_config.yaml"]


def corrupt_image_to_predict(c: Ctx) -> list:  # the good image must not be predicted either
    bad = c.tmp / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    return ["predict", c.checkpoints["deeplab"], c.dataset / "images" / "val" / "000000.jpg", bad,
            "--out", c.tmp / "pred_out"]


def clashing_prediction_names(c: Ctx) -> list:
    other = c.tmp / "elsewhere" / "000000.png"
    other.parent.mkdir()
    Image.open(c.dataset / "images" / "val" / "000001.jpg").save(other)
    return ["predict", c.checkpoints["deeplab"], c.dataset / "images" / "val" / "000000.jpg", other,
            "--out", c.tmp / "pred_out"]


def stats_bad_label(c: Ctx) -> list:
    root = c.damaged(lambda r: _edit_label(_label(r), lambda a: np.stack([a] * 3, -1)))
    return ["stats", root / "labels" / "train", "--num-classes", 6, "--workers", 1, "-o", c.tmp / "counts_out.json"]


def _unwritable(c: Ctx) -> Path:
    return c.request.getfixturevalue("unwritable")


def work_dir_not_writable(c: Ctx) -> list:
    return ["train", c.config("run"), "--work-dir", _unwritable(c) / "run"]


def eval_out_not_writable(c: Ctx) -> list:
    return ["eval", c.config("run"), c.checkpoints["deeplab"], "--out", _unwritable(c) / "eval_out"]


def predict_out_not_writable(c: Ctx) -> list:
    return ["predict", c.checkpoints["deeplab"], c.dataset / "images" / "val" / "000000.jpg",
            "--out", _unwritable(c) / "pred_out"]


def stats_out_not_writable(c: Ctx) -> list:
    return ["stats", c.dataset / "labels" / "train", "--num-classes", 6, "--workers", 1,
            "-o", _unwritable(c) / "counts.json"]


# (case, the message it must give: a regex over the one line after "rrseg CMD: error: ")
UNWRITABLE = r"(output directory is not writable|cannot create output directory)"
CATALOGUE: list[tuple[Callable[[Ctx], list], str]] = [
    (corrupt_jpeg, r"^{tmp}/data/images/train/000005\.jpg: unreadable or corrupt image \(UnidentifiedImageError"),
    (truncated_png, r"^{tmp}/data/labels/train/000005\.png: unreadable or corrupt label image \(OSError"),
    (label_out_of_range, r"^{tmp}/data/labels/train/000005\.png: label values 9 outside the class range 0\.\.5 "),
    (rgb_label, r"^{tmp}/data/labels/train/000005\.png: label is a RGB image; expected a single-channel index PNG"),
    (size_mismatch, r"^{tmp}/data/labels/val/000003\.png: label is 48x16 but its image .*000003\.jpg is 48x32$"),
    (image_without_label, r"^{tmp}/data/images/train/000005\.jpg: no label found \(expected .*000005\.png\); labels "
                          r"are looked for in {tmp}/data/labels .*set data\.train\.options\.labels_dir .*folder$"),
    (empty_split, r"^{tmp}/data/images/val: split 'val' has no images"),
    (missing_dataset_root, r"^{tmp}/no_such_dataset: dataset folder or YAML file not found \(set data\.train\.root\)$"),
    (unknown_config_key, r"^{tmp}/run\.yaml: unknown config key 'optim\.momentun'; did you mean 'optim\.momentum'\?"),
    (wrong_type_in_config, r"^{tmp}/run\.yaml: config key 'data\.batch_size': expected int, got 'four'$"),
    (counts_wrong_length, r"^{tmp}/counts\.json: class counts have 3 entries but num_classes is 6$"),
    (counts_negative, r"^{tmp}/counts\.txt: count of class 2 is negative \(-15\)$"),
    (other_architecture, r"^{ckpt}/ocrnet\.safetensors: checkpoint of another architecture: \d+ missing keys .*"
                         r"\(the checkpoint holds a ocrnet_tiny, the config builds a deeplabv3plus_tiny\)$"),
    (other_class_count, r"^{ckpt}/deeplab\.safetensors: weights do not fit this model: .* has shape \(6,.*\(7,"),
    (truncated_checkpoint, r"^{tmp}/model\.safetensors: truncated or corrupt safetensors file"),
    (pickled_checkpoint_with_code, r"^{tmp}/model\.pth: not a safetensors checkpoint .* never unpickled"),
    (yaml_python_tag, r"^{tmp}/evil\.yaml: refused a YAML tag .*python/object/apply:os\.system.*plain data$"),
    (set_unknown_key, r"^{tmp}/run\.yaml: unknown config key 'schedule\.iterations'; did you mean 'schedule\.iters'"),
    (duplicate_config_key, r"^{tmp}/run\.yaml: duplicate key 'optim' \(line \d+\)$"),
    (missing_config, r"^{tmp}/no_such_config\.yaml: config file not found$"),
    (unknown_model_name, r"^{tmp}/run\.yaml: config key 'model\.name': unknown model 'deeplabv3plus_tiyn'; did you "
                         r"mean deeplabv3plus_tiny"),
    (unknown_model_option, r"^{tmp}/run\.yaml: config key 'model\.options\.dropuot': not an option of "
                           r"deeplabv3plus_tiny; did you mean 'dropout'\? \(deeplabv3plus_tiny takes .*\)$"),
    (duplicate_key_in_dataset_yaml, r"^{tmp}/data/dataset\.yaml: duplicate key 'name' \(line \d+\)$"),
    (corrupt_image_to_predict, r"^{tmp}/photo\.jpg: unreadable or corrupt image"),
    (clashing_prediction_names, r"^{tmp}/elsewhere/000000\.png: same output name 000000\.png as .*000000\.jpg$"),
    (stats_bad_label, r"^{tmp}/data/labels/train/000005\.png: label is a RGB image"),
    (work_dir_not_writable, r"^{unwritable}/run: " + UNWRITABLE),
    (eval_out_not_writable, r"^{unwritable}/eval_out: " + UNWRITABLE),
    (predict_out_not_writable, r"^{unwritable}/pred_out: " + UNWRITABLE),
    (stats_out_not_writable, r"^{unwritable}: " + UNWRITABLE),
]
SEEN: dict[str, dict] = {}


@pytest.fixture
def ctx(tmp_path, tiny_dataset, tiny_config, damaged, checkpoints, request) -> Ctx:
    return Ctx(tmp_path, tiny_dataset, tiny_config, damaged, checkpoints, request)


def check_error(proc, case: Callable, expect: str, ctx: Ctx) -> str:
    """The one error line of ``proc``, checked: exit 2, no traceback, the expected message."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    message = errors[0].split(": error: ", 1)[1]
    unwritable = str(ctx.request.getfixturevalue("unwritable")) if "{unwritable}" in expect else ""
    pattern = expect.format(tmp=re.escape(str(ctx.tmp)), ckpt=re.escape(str(ctx.checkpoints["deeplab"].parent)),
                            unwritable=re.escape(unwritable))
    assert re.search(pattern, message), f"{case.__name__}: {message!r} does not match {pattern!r}"
    return message


def record(case: Callable, argv: list, message: str, ctx: Ctx) -> None:
    short = message
    for path, name in ((ctx.tmp, "<tmp>"), (ctx.checkpoints["deeplab"].parent, "<checkpoints>"),
                       (ctx.dataset, "<data>")):
        short = short.replace(str(path), name)
    SEEN[case.__name__] = {"command": argv[0], "message": short}
    out = os.environ.get("RRSEG_CATALOGUE_JSON")
    if out:
        Path(out).write_text(json.dumps(SEEN, indent=1))


@pytest.mark.parametrize("case, expect", CATALOGUE, ids=[c.__name__ for c, _ in CATALOGUE])
def test_bad_input(case, expect, ctx, call_rrseg):
    argv = case(ctx)
    before = snapshot(ctx.tmp)
    proc = call_rrseg(*argv)
    message = check_error(proc, case, expect, ctx)
    assert changes(before, snapshot(ctx.tmp)) == [], "a failed command wrote something"
    assert not (ctx.tmp / "PAYLOAD_RAN").exists()
    record(case, [str(a) for a in argv], message, ctx)


def test_catalogue_has_at_least_15_cases():
    assert len({c.__name__ for c, _ in CATALOGUE}) >= 15


@pytest.mark.parametrize("case", [corrupt_jpeg, yaml_python_tag],
                         ids=lambda c: c.__name__)
@pytest.mark.slow
def test_catalogue_as_subprocesses(case, ctx, run_rrseg):
    """The same cases through ``python -m rrseg``: what a user's shell sees."""
    expect = dict(CATALOGUE)[case]
    argv = case(ctx)
    before = snapshot(ctx.tmp)
    proc = run_rrseg(*argv, timeout=300)
    check_error(proc, case, expect, ctx)
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # the error is all there is on stderr
    assert changes(before, snapshot(ctx.tmp)) == []
    assert not (ctx.tmp / "PAYLOAD_RAN").exists()
