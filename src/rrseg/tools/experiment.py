"""Running several configs as one experiment and summarising them side by side (the demo, the study)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rrseg.errors import RRSegError

__all__ = ["images_with_classes", "last_run", "plot_curves", "plot_predictions", "read_log", "summary_row",
           "summary_table"]

COLUMNS = (
    ("overall", "mIoU"), ("frequent", "mIoU"), ("common", "mIoU"), ("rare", "mIoU"),
    ("overall", "mAcc"), ("rare", "mAcc"), ("rare", "mPrecision"), ("rare", "mFPR"),
)


def summary_row(report: Mapping) -> dict[str, float]:
    """The figures the demo and the study compare: mIoU overall and per group, mAcc, rare-class
    precision and false-positive rate (FP / (FP + TN), averaged over rare classes)."""
    groups = report.get("groups", {})
    row = {}
    for group, key in COLUMNS:
        source = report["overall"] if group == "overall" else groups.get(group, {})
        value = source.get(key)
        row[f"{group}_{key}"] = float("nan") if value is None else float(value)
    return row


def _cell(v: float, key: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.3f}" if key.endswith("mFPR") else f"{100 * v:.2f}"


def summary_table(rows: Mapping[str, Mapping[str, float]], markdown: bool = False) -> str:
    """Rows of :func:`summary_row` (name -> row) as a text or Markdown table, figures in %."""
    keys = [f"{g}_{k}" for g, k in COLUMNS]
    heads = ["mIoU", "freq mIoU", "common mIoU", "rare mIoU", "mAcc", "rare mAcc", "rare prec", "rare FPR"]
    if markdown:
        lines = ["| method | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
        for name, row in rows.items():
            lines.append(f"| {name} | " + " | ".join(_cell(row.get(k), k) for k in keys) + " |")
        return "\n".join(lines)
    width = max(12, *(len(n) for n in rows))
    lines = [f"{'':{width}s} " + " ".join(f"{h:>11s}" for h in heads)]
    for name, row in rows.items():
        lines.append(f"{name:{width}s} " + " ".join(f"{_cell(row.get(k), k):>11s}" for k in keys))
    return "\n".join(lines)


def read_log(work_dir: str | os.PathLike) -> list[dict]:
    path = Path(work_dir) / "log.jsonl"
    if not path.is_file():
        raise RRSegError(f"{path}: no training log")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return records


def last_run(records: Sequence[dict]) -> list[dict]:
    """The records of the latest run in a log: from its last fresh (not resumed) start on. A work dir trained
    again without ``--resume`` appends to the same log, and the earlier run must not be mixed in."""
    starts = [i for i, r in enumerate(records) if r.get("event") == "start" and not r.get("resume")]
    return list(records[starts[-1]:]) if starts else list(records)


def plot_curves(runs: Mapping[str, str | os.PathLike], path: str | os.PathLike,
                terms: Sequence[str] = ("loss_ce", "loss_aux", "loss_rr")) -> None:
    """Training curves (each logged loss term) of several runs, one panel per term; PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rrseg.metrics.report import save_figure

    logs = {name: [r for r in last_run(read_log(d)) if r.get("event") == "train"] for name, d in runs.items()}
    present = [t for t in terms if any(t in r for recs in logs.values() for r in recs)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4.2 * max(1, len(present)), 3.4), dpi=110,
                             squeeze=False)
    for ax, term in zip(axes[0], present):
        for name, recs in logs.items():
            # log.jsonl holds a non-finite value as null (listed in the record's "nonfinite"): a gap in the curve
            pts = [(r["iteration"], math.nan if r[term] is None else r[term]) for r in recs if term in r]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, label=name, lw=1.4)
        ax.set_title(term)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def images_with_classes(dataset: Any, classes: Iterable[int], n: int) -> list[int]:
    """Indices of the first ``n`` samples of ``dataset`` (in its order: sorted by file name for the folder
    datasets) whose label contains any of ``classes``. A fixed rule that never looks at predictions."""
    import numpy as np

    wanted = np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
    picked: list[int] = []
    for i in range(len(dataset)):
        if len(picked) >= n:
            break
        if np.isin(dataset.load_label(i), wanted).any():
            picked.append(i)
    return picked


def _colour(label: Any, palette: Any, num_classes: int) -> Any:
    """An RGB picture of a class map; ignored / out-of-range pixels black."""
    import numpy as np

    rgb = np.zeros((*label.shape, 3), dtype=np.uint8)
    valid = (label >= 0) & (label < num_classes)
    rgb[valid] = palette[label[valid].astype(np.int64)]
    return rgb


def plot_predictions(checkpoints: Mapping[str, str | os.PathLike], dataset: Any, classes: Sequence[int],
                     path: str | os.PathLike, n: int = 6, what: str = "rare", device: str = "cpu") -> list[str]:
    """One row per image: image / ground truth / each run's prediction, in the dataset's palette, each row
    labelled ``what: <names of the classes present>``. Images: :func:`images_with_classes` (the first ``n``
    by file name that contain one of ``classes``). Models come from ``checkpoints`` (name -> rrseg
    checkpoint), loaded as ``rrseg predict`` loads them. PNG, atomic. Returns the sample keys shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    from rrseg.engine.inference import load_for_inference, predict_label
    from rrseg.metrics.report import save_figure

    models = {name: load_for_inference(ckpt, device) for name, ckpt in checkpoints.items()}
    c = dataset.num_classes
    for name, (_, meta, _) in models.items():
        if int(meta["num_classes"]) != c:
            raise RRSegError(f"{checkpoints[name]}: a model of {meta['num_classes']} classes for a dataset of {c}")
    palette = np.asarray(dataset.palette, dtype=np.uint8)
    picked = images_with_classes(dataset, classes, n)
    wanted = {int(k) for k in classes}
    cols = 2 + len(models)
    rows = max(1, len(picked))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols + 1.6, 1.75 * rows + 0.3), dpi=110, squeeze=False)
    heads = ["image", "ground truth", *models]
    for r, index in enumerate(picked):
        image = dataset.load_image(index)
        label = dataset.load_label(index, image.shape[:2])
        panels = [image, _colour(label, palette, c)]
        for model, _, cfg in models.values():
            panels.append(_colour(predict_label(model, image, cfg, c, device), palette, c))
        present = [k for k in np.unique(label).tolist() if k in wanted]
        for j, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[j], fontsize=9)
        names = ", ".join(dataset.class_names[k] for k in present)
        axes[r][0].set_ylabel(f"{dataset.samples[index].key}\n{what}: {names}", fontsize=7)
        # the rare classes' colours, to find them in the ground truth and the predictions
        axes[r][-1].legend(handles=[Patch(color=palette[k] / 255, label=dataset.class_names[k]) for k in present],
                           loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    if not picked:
        for ax in axes[0]:
            ax.axis("off")
        axes[0][0].set_title("no validation image contains these classes", fontsize=9, loc="left")
    save_figure(fig, path)
    return [dataset.samples[i].key for i in picked]
