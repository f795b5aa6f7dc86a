"""What the commands print, with and without ``-q``: ``-q`` keeps the results (final tables, the paths written)
and the warnings and errors, and hides the progress (bars, per-image lines, set-up messages), for train,
eval and predict alike (rrseg.output); log.jsonl of a real run is strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

# what only progress looks like: rich's bar, the per-image lines of predict, set-up messages of train
BAR = "━"


def in_process(capsys, *args: object) -> tuple[int, str, str]:
    from rrseg.cli.main import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _reject(constant: str):
    raise AssertionError(f"{constant} in log.jsonl is not JSON")


@pytest.fixture(scope="module")
def configs(tmp_path_factory, tiny_dataset) -> dict[str, Path]:
    """Two tiny training configs (progress bar on, as by default), one trained with -q, one without."""
    root = tmp_path_factory.mktemp("output")
    out = {}
    for name in ("quiet", "loud"):
        cfg = {
            "name": name,
            "model": {"name": "deeplabv3plus_tiny"},
            "data": {"train": {"type": "folder", "root": str(tiny_dataset), "split": "train"},
                     "val": {"type": "folder", "root": str(tiny_dataset), "split": "val"},
                     "batch_size": 4, "workers": 0, "crop_size": [32, 32], "scale": [48, 32]},
            "schedule": {"iters": 4, "warmup_iters": 1},
            "loss": {"region": {"type": "rr"}, "counts": str(tiny_dataset / "counts.json")},
            "eval": {"interval": 2, "batch_size": 4},
            "train": {"progress": True, "tensorboard": False, "log_interval": 1, "checkpoint_interval": 100},
            "work_dir": str(root / name),
        }
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out[name] = path
    return out


@pytest.fixture(scope="module")
def trained(configs) -> dict[str, tuple[int, str, str]]:
    """``rrseg -q train`` and ``rrseg train`` of the two configs, in this process, on one thread: (rc, out, err)."""
    import contextlib
    import io

    import torch

    from rrseg.cli.main import main

    # capsys is function-scoped: this module-scoped fixture captures by hand (the console handler looks the
    # streams up at each message, and rich's console at each write)

    results = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, argv in (("quiet", ["-q", "train"]), ("loud", ["train"])):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main([*argv, str(configs[name]), "--device", "cpu"])
            results[name] = (rc, out.getvalue(), err.getvalue())
    finally:
        torch.set_num_threads(threads)
    return results


def _work_dir(cfg: Path) -> Path:
    return Path(yaml.safe_load(cfg.read_text())["work_dir"])


@pytest.mark.slow  # trains twice (4 iterations of the tiny model)
def test_train_quiet_keeps_the_table_and_the_files_and_hides_the_progress(trained, configs):
    rc, out, err = trained["quiet"]
    work = _work_dir(configs["quiet"])
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["mIoU", "mAcc", "mDice", "mFPR", "mFDR", "classes", "ranked", "by"], out
    assert [line.split()[0] for line in lines[1:5]] == ["overall", "frequent", "common", "rare"]
    assert lines[-1] == (f"wrote {work}/report.json, report.md, iou_vs_count.png, inference.safetensors, "
                         "best.safetensors")
    assert BAR not in out + err and "global batch" not in out + err
    # without -q: the set-up messages and the bar first, the same results last
    rc, loud, loud_err = trained["loud"]
    assert rc == 0, loud_err
    assert "global batch 4 = 4 images per process" in loud and BAR in loud and "4/4" in loud
    table_at = loud.index("overall")
    assert loud.rindex(BAR) < table_at and loud.rindex("global batch") < table_at
    assert loud.splitlines()[-1] == lines[-1].replace(str(work), str(_work_dir(configs["loud"])))


@pytest.mark.slow
def test_log_of_a_real_run_is_strict_json(trained, configs):
    records = [json.loads(line, parse_constant=_reject)
               for line in (_work_dir(configs["quiet"]) / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "train", "train", "eval", "train", "train", "eval", "end"]
    for r in records:  # a value that was NaN is null and named in "nonfinite"; nothing else is null
        assert sorted(k for k, v in r.items() if v is None) == sorted(r.get("nonfinite", [])), r


@pytest.mark.slow
def test_predict_quiet_prints_only_where_it_wrote(trained, configs, tiny_dataset, tmp_path, capsys):
    ckpt = _work_dir(configs["quiet"]) / "inference.safetensors"
    images = sorted((tiny_dataset / "images" / "val").iterdir())[:2]
    rc, out, err = in_process(capsys, "predict", ckpt, *images, "--out", tmp_path / "a", "--device", "cpu", "-q")
    assert rc == 0 and err == ""
    assert out.splitlines() == [f"wrote 2 predictions to {tmp_path / 'a'}/ (<name>.png: class ids; "
                                "<name>_overlay.jpg: colours)"]
    rc, loud, err = in_process(capsys, "predict", ckpt, *images, "--out", tmp_path / "b", "--device", "cpu")
    assert rc == 0 and err == ""
    assert loud.splitlines() == [*(f"{img} -> {tmp_path / 'b' / (img.stem + '.png')}" for img in images),
                                 out.splitlines()[0].replace(str(tmp_path / "a"), str(tmp_path / "b"))]


@pytest.mark.slow
def test_eval_quiet_keeps_the_table_and_the_files(trained, configs, tmp_path, capsys):
    work = _work_dir(configs["quiet"])
    rc, out, err = in_process(capsys, "-q", "eval", configs["quiet"], work, "--out", tmp_path / "q", "--device",
                              "cpu")
    assert rc == 0, err
    assert "overall" in out and "rare" in out and "worst classes by IoU" in out
    assert out.splitlines()[-1] == f"wrote {tmp_path / 'q'}/report.json, report.md, iou_vs_count.png"
    rc, loud, err = in_process(capsys, "eval", configs["quiet"], work, "--out", tmp_path / "l", "--device", "cpu")
    assert rc == 0, err
    assert loud.replace(str(tmp_path / "l"), str(tmp_path / "q")).endswith(out)  # -q hides nothing of the results


def test_stats_quiet_keeps_its_summary(tiny_dataset, tmp_path, capsys):
    args = ("stats", tiny_dataset, "-o", tmp_path / "c.json", "--workers", 1)
    rc, loud, _ = in_process(capsys, *args)
    rc_q, quiet, err = in_process(capsys, "-q", *args)
    assert rc == rc_q == 0 and err == ""
    assert quiet == loud and f"wrote {tmp_path / 'c.json'}" in quiet


def test_convert_takes_quiet_after_its_kind(tmp_path, capsys):
    """``-q`` after the command works for every command, convert's kinds included."""
    import numpy as np
    from PIL import Image

    raw = tmp_path / "raw" / "val2017"
    raw.mkdir(parents=True)
    Image.fromarray(np.array([[0, 12], [5, 255]], np.uint8), mode="L").save(raw / "1.png")
    rc, out, err = in_process(capsys, "convert", "coco-stuff", tmp_path / "raw", tmp_path / "ann", "--workers", 1, "-q")
    assert rc == 0 and out == "converted 1, skipped 0 existing, failed 0\n", (out, err)


def test_quiet_level_is_results_and_the_help_says_so():
    import argparse
    import logging

    from rrseg.cli.main import build_parser, log_level
    from rrseg.output import RESULT

    assert logging.INFO < RESULT < logging.WARNING and logging.getLevelName(RESULT) == "RESULT"
    assert log_level(argparse.Namespace(quiet=True)) == RESULT
    help_text = " ".join(build_parser().format_help().split())
    assert "results, warnings and errors only: no progress" in help_text
