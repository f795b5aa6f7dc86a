"""Running several configs as one experiment and summarising them side by side (the demo, the study)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from rrseg.errors import RRSegError

__all__ = ["plot_curves", "read_log", "summary_row", "summary_table"]

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


def plot_curves(runs: Mapping[str, str | os.PathLike], path: str | os.PathLike,
                terms: Sequence[str] = ("loss_ce", "loss_aux", "loss_rr")) -> None:
    """Training curves (each logged loss term) of several runs, one panel per term; PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rrseg.metrics.report import save_figure

    logs = {name: [r for r in read_log(d) if r.get("event") == "train"] for name, d in runs.items()}
    present = [t for t in terms if any(t in r for recs in logs.values() for r in recs)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4.2 * max(1, len(present)), 3.4), dpi=110,
                             squeeze=False)
    for ax, term in zip(axes[0], present):
        for name, recs in logs.items():
            pts = [(r["iteration"], r[term]) for r in recs if term in r]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, label=name, lw=1.4)
        ax.set_title(term)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
