"""Reports from a confusion matrix: a JSON-ready dict, a text table, Markdown, and plots.

A report holds the overall figures, the frequency-group means and the per-class figures (with each class's
region count and group), so that two runs can be compared class by class afterwards.

Groups come from one or both rankings (``group_by``): by region count ``frequent`` / ``common`` / ``rare``
(``report["groups"]["rare"]`` as always), by pixel count ``pixel_frequent`` / ``pixel_common`` /
``pixel_rare``; ``report["group_ranking"]`` maps each group to "region" or "pixel", and the tables and plots
say which ranking a group comes from.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from rrseg.metrics.confusion import SegMetrics
from rrseg.metrics.groups import GROUP_NAMES, group_ranking, group_summary, ranked_groups

__all__ = ["build_report", "format_report", "markdown_report", "plot_iou_vs_count", "save_figure"]


def build_report(
    metrics: SegMetrics,
    class_names: Sequence[str] | None = None,
    region_counts: Sequence[int] | np.ndarray | None = None,
    group_sizes: tuple[int, int] | None = None,
    group_thresholds: tuple[float, float] | None = None,
    pixel_counts: Sequence[int] | np.ndarray | None = None,
    group_by: str = "region",
    groups: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Overall figures, per-group means (when counts are known) and per-class figures.

    ``group_by``: "region" (groups ranked by region count, the default), "pixel" (by ``pixel_counts``) or
    "both"; see :func:`rrseg.metrics.groups.ranked_groups`. Without any counts there are no groups.
    ``groups``: the groups of ``group_by`` already ranked (``ranked_groups``' result, as
    :class:`rrseg.engine.evaluator.Evaluator` keeps them), used as they are instead of ranking the counts again.
    """
    c = metrics.num_classes
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    report: dict = {
        "num_classes": c,
        "overall": {"aAcc": metrics.aAcc, "mIoU": metrics.mIoU, "mAcc": metrics.mAcc, "mDice": metrics.mDice,
                    **{k: v for k, v in metrics.summary().items() if k in ("mPrecision", "mFPR", "mFDR")}},
    }
    region = pixel = None
    if region_counts is not None:
        region = np.asarray(region_counts)
        if region.shape != (c,):
            raise ValueError(f"region counts have {region.size} entries for {c} classes")
    if pixel_counts is not None:
        pixel = np.asarray(pixel_counts)
        if pixel.shape != (c,):
            raise ValueError(f"pixel counts have {pixel.size} entries for {c} classes")
    group_of: dict[str, list[str | None]] = {"region": [None] * c, "pixel": [None] * c}
    if groups is None and (region is not None or (pixel is not None and group_by == "pixel")):
        groups = ranked_groups(region, pixel, group_by, group_sizes, group_thresholds)
    if groups is not None:
        report["group_by"] = group_by
        report["groups"] = {k: v for k, v in group_summary(metrics, groups).items() if k != "all"}
        report["group_classes"] = {k: v.tolist() for k, v in groups.items()}
        report["group_ranking"] = {k: group_ranking(k) for k in groups}
        for name, idx in groups.items():
            for i in idx:
                group_of[group_ranking(name)][int(i)] = name
    per = metrics.per_class()
    report["per_class"] = [
        {
            "class": i,
            "name": names[i],
            "region_count": None if region is None else int(region[i]),
            "pixel_count": None if pixel is None else int(pixel[i]),
            "group": group_of["region"][i],
            "pixel_group": group_of["pixel"][i],
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


_RANKED_BY = {"region": "region count", "pixel": "pixel count"}


def _ranked_by(report: dict, name: str) -> str:
    """What a group row's classes are ranked by ("" for the overall row); LTSS's labels (``group_by: ltss_*``)
    are named as such."""
    if name == "overall":
        return ""
    ranking = report.get("group_ranking", {}).get(name, group_ranking(name))  # older reports: region only
    if str(report.get("group_by", "")).startswith("ltss_"):
        return f"LTSS's {'image' if ranking == 'region' else 'pixel'} frequency labels"
    return _RANKED_BY[ranking]


def _groups_of(p: dict) -> str:
    return " / ".join(g for g in (p.get("group"), p.get("pixel_group")) if g)


def format_report(report: dict, worst: int = 10) -> str:
    """A plain-text table: overall and per-group figures (in %, with the ranking each group comes from),
    then the ``worst`` classes by IoU."""
    rows = _rows(report)
    w = max(10, *(len(name) for name, _ in rows))
    lines = [f"{'':{w}s} {'mIoU':>6s} {'mAcc':>6s} {'mDice':>6s} {'mFPR':>7s} {'mFDR':>6s}  classes"
             + ("  ranked by" if len(rows) > 1 else "")]
    for name, g in rows:
        n = report["num_classes"] if name == "overall" else len(report["group_classes"][name])
        fpr = g.get("mFPR")
        fpr_s = "    n/a" if fpr is None or math.isnan(fpr) else f"{100 * fpr:7.3f}"
        by = _ranked_by(report, name)
        row = (f"{name:{w}s} {_pct(g['mIoU'])} {_pct(g['mAcc'])} {_pct(g['mDice'])} {fpr_s} "
               f"{_pct(g.get('mFDR'))}  {n:<7d}  {by}")
        lines.append(row.rstrip())
    lines.append(f"aAcc {_pct(report['overall']['aAcc']).strip()}")
    scored = [p for p in report["per_class"] if p["iou"] is not None]
    if worst and scored:
        lines.append(f"\n{min(worst, len(scored))} worst classes by IoU:")
        lines.append(f"  {'class':24s} {'IoU':>6s} {'Acc':>6s} {'Prec':>6s} {'regions':>8s}  group")
        for p in sorted(scored, key=lambda p: p["iou"])[:worst]:
            rc = "" if p["region_count"] is None else str(p["region_count"])
            lines.append(f"  {p['name'][:24]:24s} {_pct(p['iou'])} {_pct(p['acc'])} {_pct(p['precision'])} "
                         f"{rc:>8s}  {_groups_of(p)}".rstrip())
    return "\n".join(lines)


def markdown_report(report: dict, title: str | None = None) -> str:
    """Markdown: the group table (with the ranking each group comes from) and the full per-class table."""
    out = [f"# {title}\n"] if title else []
    out.append("| | mIoU | mAcc | mDice | mFPR (%) | mFDR | ranked by |\n|---|---|---|---|---|---|---|")
    for name, g in _rows(report):
        fpr = g.get("mFPR")
        fpr_s = "n/a" if fpr is None or math.isnan(fpr) else f"{100 * fpr:.3f}"
        out.append(f"| {name} | {_pct(g['mIoU']).strip()} | {_pct(g['mAcc']).strip()} | "
                   f"{_pct(g['mDice']).strip()} | {fpr_s} | {_pct(g.get('mFDR')).strip()} | "
                   f"{_ranked_by(report, name)} |")
    out.append(f"\naAcc: {_pct(report['overall']['aAcc']).strip()}\n")
    pixels = any(p.get("pixel_count") is not None for p in report["per_class"])
    out.append("| class | name | regions | group | IoU | Acc | Precision | FP pixels |"
               + (" pixels | pixel group |" if pixels else "") + "\n"
               "|---|---|---|---|---|---|---|---|" + ("---|---|" if pixels else ""))
    for p in report["per_class"]:
        row = (f"| {p['class']} | {p['name']} | {'' if p['region_count'] is None else p['region_count']} | "
               f"{p['group'] or ''} | {_pct(p['iou']).strip()} | {_pct(p['acc']).strip()} | "
               f"{_pct(p['precision']).strip()} | {p['fp']} |")
        if pixels:
            pc = p.get("pixel_count")
            row += f" {'' if pc is None else pc} | {p.get('pixel_group') or ''} |"
        out.append(row)
    return "\n".join(out) + "\n"


def plot_iou_vs_count(
    reports: Mapping[str, dict], path: str | os.PathLike, title: str = "", count: str = "region"
) -> None:
    """Per-class IoU against region count (``count="pixel"``: pixel count), log scale, one series per report;
    the first report's groups of that ranking are marked and named with it. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if count not in _RANKED_BY:
        raise ValueError(f"count must be 'region' or 'pixel', got {count!r}")
    key = f"{count}_count"
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    markers = "os^Dv<>"
    for j, (name, rep) in enumerate(reports.items()):
        pts = [(p[key], p["iou"]) for p in rep["per_class"] if p.get(key) is not None and p["iou"] is not None]
        if not pts:
            continue
        x, y = zip(*pts)
        ax.scatter(np.maximum(x, 0.8), 100 * np.asarray(y), s=18, alpha=0.75, marker=markers[j % len(markers)],
                   label=f"{name} (mIoU {100 * rep['overall']['mIoU']:.1f})")
    ax.set_xscale("log")
    ax.set_xlabel("region count (training images containing the class)" if count == "region"
                  else "pixel count (training pixels of the class)")
    ax.set_ylabel("IoU (%)")
    ax.set_title(title or f"per-class IoU against {_RANKED_BY[count]}")
    if reports:
        _mark_groups(ax, next(iter(reports.values())), count)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save_figure(fig, path)


def _mark_groups(ax, report: dict, ranking: str) -> None:
    """Dashed lines between the groups of ``ranking`` on the count axis, each group named at the top, with
    the ranking it comes from."""
    from matplotlib.transforms import blended_transform_factory

    key = f"{ranking}_count"
    names = [n for n in (GROUP_NAMES if ranking == "region" else [f"pixel_{g}" for g in GROUP_NAMES])
             if report.get("group_classes", {}).get(n)]
    if not names or any(p.get(key) is None for p in report["per_class"]):
        return
    counts = np.maximum([p[key] for p in report["per_class"]], 0.8).astype(np.float64)
    spans = [(counts[report["group_classes"][n]].min(), counts[report["group_classes"][n]].max()) for n in names]
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for (lo, _), (_, hi) in itertools.pairwise(spans):  # from frequent down: lo of a group, hi of the next
        ax.axvline(math.sqrt(lo * hi), color="0.4", linestyle="--", linewidth=0.8)
    for n, (lo, hi) in zip(names, spans):
        ax.text(math.sqrt(lo * hi), 0.98, n.removeprefix("pixel_"), transform=top, ha="center", va="top",
                fontsize=7, color="0.3")
    ax.text(0.01, 0.02, f"groups ranked by {_RANKED_BY[ranking]}", transform=ax.transAxes, fontsize=7,
            color="0.3")


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
