"""Reports from a confusion matrix: a JSON-ready dict, a text table, Markdown, and plots.

A report holds the overall figures, the frequency-group means and the per-class figures (with each class's
region count and group), so that two runs can be compared class by class afterwards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from rrseg.metrics.confusion import SegMetrics
from rrseg.metrics.groups import frequency_groups, group_summary

__all__ = ["build_report", "format_report", "markdown_report", "plot_iou_vs_count", "save_figure"]


def build_report(
    metrics: SegMetrics,
    class_names: Sequence[str] | None = None,
    region_counts: Sequence[int] | np.ndarray | None = None,
    group_sizes: tuple[int, int] | None = None,
    group_thresholds: tuple[float, float] | None = None,
) -> dict:
    """Overall figures, per-group means (when region counts are known) and per-class figures."""
    c = metrics.num_classes
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    report: dict = {
        "num_classes": c,
        "overall": {"aAcc": metrics.aAcc, "mIoU": metrics.mIoU, "mAcc": metrics.mAcc, "mDice": metrics.mDice,
                    **{k: v for k, v in metrics.summary().items() if k in ("mPrecision", "mFPR", "mFDR")}},
    }
    group_of = [None] * c
    if region_counts is not None:
        counts = np.asarray(region_counts)
        if counts.shape != (c,):
            raise ValueError(f"region counts have {counts.size} entries for {c} classes")
        groups = frequency_groups(counts, group_sizes, group_thresholds)
        report["groups"] = {k: v for k, v in group_summary(metrics, groups).items() if k != "all"}
        report["group_classes"] = {k: v.tolist() for k, v in groups.items()}
        for name, idx in groups.items():
            for i in idx:
                group_of[int(i)] = name
    per = metrics.per_class()
    report["per_class"] = [
        {
            "class": i,
            "name": names[i],
            "region_count": None if region_counts is None else int(np.asarray(region_counts)[i]),
            "group": group_of[i],
            **{k: per[k][i] for k in ("iou", "acc", "precision", "dice", "fp_rate", "fdr", "tp", "fp", "fn",
                                      "label_pixels")},
        }
        for i in range(c)
    ]
    return report


def _pct(v: float | None) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"


def _rows(report: dict) -> list[tuple[str, dict]]:
    rows = [("overall", report["overall"])]
    rows += [(name, g) for name, g in report.get("groups", {}).items()]
    return rows


def format_report(report: dict, worst: int = 10) -> str:
    """A plain-text table: overall and per-group figures (in %), then the ``worst`` classes by IoU."""
    lines = [f"{'':10s} {'mIoU':>6s} {'mAcc':>6s} {'mDice':>6s} {'mFPR':>7s} {'mFDR':>6s}  classes"]
    for name, g in _rows(report):
        n = report["num_classes"] if name == "overall" else len(report["group_classes"][name])
        fpr = g.get("mFPR")
        fpr_s = "    n/a" if fpr is None or math.isnan(fpr) else f"{100 * fpr:7.3f}"
        lines.append(f"{name:10s} {_pct(g['mIoU'])} {_pct(g['mAcc'])} {_pct(g['mDice'])} {fpr_s} "
                     f"{_pct(g.get('mFDR'))}  {n}")
    lines.append(f"aAcc {_pct(report['overall']['aAcc']).strip()}")
    scored = [p for p in report["per_class"] if p["iou"] is not None]
    if worst and scored:
        lines.append(f"\n{min(worst, len(scored))} worst classes by IoU:")
        lines.append(f"  {'class':24s} {'IoU':>6s} {'Acc':>6s} {'Prec':>6s} {'regions':>8s}  group")
        for p in sorted(scored, key=lambda p: p["iou"])[:worst]:
            rc = "" if p["region_count"] is None else str(p["region_count"])
            lines.append(f"  {p['name'][:24]:24s} {_pct(p['iou'])} {_pct(p['acc'])} {_pct(p['precision'])} "
                         f"{rc:>8s}  {p['group'] or ''}")
    return "\n".join(lines)


def markdown_report(report: dict, title: str | None = None) -> str:
    """Markdown: the group table and the full per-class table."""
    out = [f"# {title}\n"] if title else []
    out.append("| | mIoU | mAcc | mDice | mFPR (%) | mFDR |\n|---|---|---|---|---|---|")
    for name, g in _rows(report):
        fpr = g.get("mFPR")
        fpr_s = "n/a" if fpr is None or math.isnan(fpr) else f"{100 * fpr:.3f}"
        out.append(f"| {name} | {_pct(g['mIoU']).strip()} | {_pct(g['mAcc']).strip()} | "
                   f"{_pct(g['mDice']).strip()} | {fpr_s} | {_pct(g.get('mFDR')).strip()} |")
    out.append(f"\naAcc: {_pct(report['overall']['aAcc']).strip()}\n")
    out.append("| class | name | regions | group | IoU | Acc | Precision | FP pixels |\n"
               "|---|---|---|---|---|---|---|---|")
    for p in report["per_class"]:
        out.append(f"| {p['class']} | {p['name']} | {'' if p['region_count'] is None else p['region_count']} | "
                   f"{p['group'] or ''} | {_pct(p['iou']).strip()} | {_pct(p['acc']).strip()} | "
                   f"{_pct(p['precision']).strip()} | {p['fp']} |")
    return "\n".join(out) + "\n"


def plot_iou_vs_count(reports: Mapping[str, dict], path: str | os.PathLike, title: str = "") -> None:
    """Per-class IoU against region count (log scale), one series per report; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    markers = "os^Dv<>"
    for j, (name, rep) in enumerate(reports.items()):
        pts = [(p["region_count"], p["iou"]) for p in rep["per_class"]
               if p["region_count"] is not None and p["iou"] is not None]
        if not pts:
            continue
        x, y = zip(*pts)
        ax.scatter(np.maximum(x, 0.8), 100 * np.asarray(y), s=18, alpha=0.75, marker=markers[j % len(markers)],
                   label=f"{name} (mIoU {100 * rep['overall']['mIoU']:.1f})")
    ax.set_xscale("log")
    ax.set_xlabel("region count (training images containing the class)")
    ax.set_ylabel("IoU (%)")
    ax.set_title(title or "per-class IoU against region count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    from rrseg.io import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
