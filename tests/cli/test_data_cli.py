"""``rrseg make-synthetic``, ``rrseg check-data`` and ``rrseg convert`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SRC = Path(__file__).resolve().parents[2] / "src"


def rrseg(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "rrseg", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def in_process(capsys, *args: object) -> tuple[int, str, str]:
    from rrseg.cli.main import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.slow
def test_make_synthetic_then_check_data(capsys, tmp_path: Path) -> None:
    out = tmp_path / "syn"
    r = rrseg("make-synthetic", out, "--classes", 6, "--train", 30, "--val", 8, "--size", "40x32", "--seed", 2,
              "--workers", 1)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out} (38 images, 40x32, seed 2)" in r.stdout
    assert "Spearman(image counts, pixel counts):" in r.stdout and "image counts: max" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "counts.json", "dataset.yaml", "design.json", "images", "labels", "synthetic.json"]
    assert json.loads((out / "counts.json").read_text())["num_images"] == 30

    rc, stdout, _ = in_process(capsys, "check-data", out)
    assert rc == 0 and stdout.splitlines()[-1] == "OK: 0 problems, 0 warnings in 2 splits"

    bad = out / "labels" / "val" / "000003.png"
    Image.fromarray(np.full((32, 40), 9, np.uint8), mode="L").save(bad)
    (out / "images" / "train" / "000007.jpg").write_bytes(b"\xff\xd8 truncated")
    r = rrseg("check-data", out / "dataset.yaml", "--json", tmp_path / "report.json")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}: label values 9 outside the class range 0..5 (ignore index 255)" in r.stdout
    assert "000007.jpg: unreadable or corrupt image" in r.stdout
    assert r.stdout.splitlines()[-1] == "FAILED: 2 problems, 0 warnings in 2 splits"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is False and report["problem_counts"] == {"label_range": 1, "corrupt_image": 1}


def test_quiet_and_verbose_set_what_the_library_logs(capsys, tmp_path: Path) -> None:
    """The library's messages (here make_synthetic's statistics) are logged; the CLI prints them on stdout,
    ``-q`` / ``--quiet`` (before or after the command) hides them and keeps the result (where it wrote), ``-v``
    keeps them. No development check ("[ok]" / "[NOT MET]") is printed."""
    import logging

    args = ("--classes", 4, "--train", 6, "--val", 2, "--size", 24, "--workers", 1)
    rc, out, err = in_process(capsys, "make-synthetic", tmp_path / "a", *args)
    assert rc == 0 and f"wrote {tmp_path / 'a'} (8 images" in out and not err
    assert "Spearman" in out and "NOT MET" not in out and "[ok]" not in out
    for folder, argv in (("b", ("-q", "make-synthetic", tmp_path / "b", *args)),
                         ("c", ("make-synthetic", tmp_path / "c", *args, "--quiet"))):
        rc, out, err = in_process(capsys, *argv)
        assert rc == 0 and err == "", argv
        assert len(out.splitlines()) == 1 and out.startswith(f"wrote {tmp_path / folder} (8 images"), out
    rc, out, _ = in_process(capsys, "-v", "make-synthetic", tmp_path / "d", *args)
    assert rc == 0 and "wrote" in out
    # main() leaves the rrseg logger as it found it (no handler, level unset)
    assert not logging.getLogger("rrseg").handlers and logging.getLogger("rrseg").level == logging.NOTSET


def test_convert_coco_stuff(capsys, tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "val2017"
    raw.mkdir(parents=True)
    Image.fromarray(np.array([[0, 12], [182, 255]], np.uint8), mode="L").save(raw / "000000000139.png")
    rc, out, err = in_process(capsys, "convert", "coco-stuff", tmp_path / "raw", tmp_path / "annotations",
                              "--workers", 1)
    assert rc == 0, err
    assert "converted 1, skipped 0 existing, failed 0" in out
    assert "unexpected raw ids mapped to 255: 182 (1 files)" in err
    got = np.asarray(Image.open(tmp_path / "annotations" / "val2017" / "000000000139_labelTrainIds.png"))
    np.testing.assert_array_equal(got, [[0, 11], [255, 255]])


def test_check_data_reads_a_training_config(capsys, tmp_path: Path) -> None:
    from rrseg.data.synthetic import make_synthetic

    make_synthetic(tmp_path / "syn", num_classes=4, num_train=6, num_val=3, size=24, workers=1, verbose=False)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data:\n  train: {{type: folder, root: {tmp_path / 'syn'}, split: train}}\n"
                   f"  val: {{type: folder, root: {tmp_path / 'syn'}, split: val}}\n")
    rc, out, _ = in_process(capsys, "check-data", cfg)
    assert rc == 0 and "split 'train': 6 images" in out and "split 'val': 3 images" in out
    cfg.write_text(f"data:\n  train: {{type: folder, root: {tmp_path / 'syn'}, split: train}}\n"
                   f"  val: {{type: folder, root: {tmp_path / 'syn'}, split: test}}\n")
    rc, out, _ = in_process(capsys, "check-data", cfg)
    assert rc == 1 and "image directory of split 'test' not found" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("check-data", "{tmp}/nowhere"), "rrseg check-data: error: {tmp}/nowhere: dataset folder not found"),
        (("check-data", "{tmp}", "--dataset", "pascal"), "rrseg check-data: error: unknown dataset 'pascal'"),
        (("make-synthetic", "{tmp}/new", "--classes", "1"), "rrseg make-synthetic: error: a synthetic dataset needs at "
                                                        "least 2 classes"),
        (("convert", "cityscapes", "{tmp}"), "rrseg convert: error: {tmp}: no *_labelIds.png files found"),
    ],
)
def test_expected_errors_exit_2_with_one_line(capsys, tmp_path: Path, args: tuple, message: str) -> None:
    rc, _, err = in_process(capsys, *(a.format(tmp=tmp_path) for a in args))
    assert rc == 2 and err.strip().startswith(message.format(tmp=tmp_path)) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["make-synthetic", "check-data", "convert"])
def test_help_has_an_example(capsys, command: str) -> None:
    rc, out, _ = in_process(capsys, command, "--help")
    assert rc == 0 and "example:" in out and f"rrseg {command}" in out
