"""Compare two runs class by class: per-group and per-class IoU deltas, and a plot of per-class IoU
against region count for both.

A run is a work dir (its report.json), an eval folder, or a report.json file.

example:
  rrseg compare runs/demo/ce runs/demo/rr --out runs/demo/compare
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", help="baseline run: work dir, eval folder or report.json")
    p.add_argument("run_b", help="other run: work dir, eval folder or report.json")
    p.add_argument("--out", help="folder for compare.json, compare.md and iou_vs_count.png (default: RUN_B/compare)")
    p.add_argument("--top", type=int, default=10, help="classes listed with the largest gains and losses")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rrseg.io import atomic_write_json, atomic_write_text, ensure_writable_dir
    from rrseg.metrics.report import plot_iou_vs_count
    from rrseg.tools.compare import compare_reports, format_comparison, load_report

    _, a = load_report(args.run_a)
    b_path, b = load_report(args.run_b)
    name_a = a.get("name") or Path(args.run_a).name
    name_b = b.get("name") or Path(args.run_b).name
    if name_a == name_b:
        name_a, name_b = f"A: {name_a}", f"B: {name_b}"
    result = compare_reports(a, b, name_a, name_b)
    out = ensure_writable_dir(args.out or (b_path.parent / "compare"))
    text = format_comparison(result, args.top)
    print(text)
    atomic_write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", "```\n" + text + "\n```\n")
    plot_iou_vs_count({name_a: a, name_b: b}, out / "iou_vs_count.png", title=f"{name_a} vs {name_b}")
    print(f"wrote {out}/compare.json, compare.md, iou_vs_count.png")
    return 0
