"""eval.group_by through ``rrseg train`` / ``rrseg eval``: pixel groups in the reports and log, the plot
against pixel count, and counts without pixel counts refused before training starts."""

from __future__ import annotations

import json

import pytest

from rrseg.engine.config import ConfigError, parse_config


def _by_hand(counts: list[int], n: int) -> dict[str, list[int]]:
    ranking = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    n_freq, n_common = round(n * 20 / 150), round(n * 55 / 150)
    return {"frequent": ranking[:n_freq], "common": ranking[n_freq : n_freq + n_common],
            "rare": ranking[n_freq + n_common :]}


@pytest.mark.slow
def test_train_and_eval_with_both_rankings(tiny_config, tiny_dataset, call_rrseg):
    cfg = tiny_config("run", eval={"interval": 0, "batch_size": 4, "group_by": "both"},
                      schedule={"iters": 2, "warmup_iters": 0})
    proc = call_rrseg("train", cfg)
    assert proc.returncode == 0, proc.stderr
    work = cfg.parent / "run"
    counts = json.loads((tiny_dataset / "counts.json").read_text())
    n = counts["num_classes"]
    expected = {**_by_hand(counts["image_counts"], n),
                **{f"pixel_{k}": v for k, v in _by_hand(counts["pixel_counts"], n).items()}}
    report = json.loads((work / "report.json").read_text())
    assert report["group_classes"] == expected and report["group_by"] == "both"
    assert [p["pixel_count"] for p in report["per_class"]] == counts["pixel_counts"]
    assert (work / "iou_vs_pixel_count.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| pixel_rare |" in (work / "report.md").read_text()
    evals = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any("pixel_rare_mIoU" in r and "rare_mIoU" in r for r in evals if r.get("event") == "eval")

    proc = call_rrseg("eval", cfg, work / "inference.safetensors", "--set", "eval.group_by=pixel",
                      "--out", cfg.parent / "ev")
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((cfg.parent / "ev" / "report.json").read_text())
    assert ev["group_classes"] == {k: v for k, v in expected.items() if k.startswith("pixel_")}
    assert (cfg.parent / "ev" / "iou_vs_pixel_count.png").is_file()


def test_pixel_groups_without_pixel_counts_stop_before_training(tmp_path, tiny_config, tiny_dataset, call_rrseg):
    image_only = tmp_path / "image_counts.json"
    counts = json.loads((tiny_dataset / "counts.json").read_text())
    image_only.write_text(json.dumps({"image_counts": counts["image_counts"]}))
    cfg = tiny_config("run", eval={"group_by": "pixel"}, loss={"counts": str(image_only)})
    proc = call_rrseg("train", cfg)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "rrseg train: error: config key 'eval.group_by': group_by 'pixel' ranks classes by pixel count")
    assert lines[0].endswith(f"(counts: {image_only})")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_group_by_value_is_checked():
    with pytest.raises(ConfigError, match=r"eval\.group_by.*'pixels' is not one of region, pixel, both"):
        parse_config({"eval": {"group_by": "pixels"}})
    assert parse_config({}).eval.group_by == "region"
    assert parse_config({"eval": {"group_by": "both"}}).eval.group_by == "both"
