"""Compare two evaluation reports: overall and per-group deltas, per-class IoU / precision deltas."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rrseg.errors import RRSegError

__all__ = ["compare_reports", "format_comparison", "load_report"]


def load_report(path: str | os.PathLike) -> tuple[Path, dict]:
    """A report from a report.json file or a folder holding one (a work dir or an eval folder)."""
    p = Path(path)
    file = p / "report.json" if p.is_dir() else p
    if not file.is_file():
        raise RRSegError(f"{p}: no report.json found (train or eval the run first)")
    try:
        report = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RRSegError(f"{file}: not a valid JSON report") from None
    if not isinstance(report, dict) or "per_class" not in report or "overall" not in report:
        raise RRSegError(f"{file}: not an rrseg report (no per_class / overall figures)")
    return file, report


def _delta(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return None
    return b - a


def compare_reports(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> dict:
    if a["num_classes"] != b["num_classes"]:
        raise RRSegError(f"the runs have {a['num_classes']} and {b['num_classes']} classes: not comparable")
    keys = ("mIoU", "mAcc", "mFPR", "mFDR")
    rows = {"overall": {k: {"a": a["overall"].get(k), "b": b["overall"].get(k),
                            "delta": _delta(a["overall"].get(k), b["overall"].get(k))} for k in keys}}
    for g in a.get("groups", {}):
        if g in b.get("groups", {}):
            rows[g] = {k: {"a": a["groups"][g].get(k), "b": b["groups"][g].get(k),
                           "delta": _delta(a["groups"][g].get(k), b["groups"][g].get(k))} for k in keys}
    per_class = []
    for pa, pb in zip(a["per_class"], b["per_class"]):
        per_class.append({
            "class": pa["class"], "name": pa["name"], "region_count": pa.get("region_count"),
            "group": pa.get("group"),
            "iou_a": pa["iou"], "iou_b": pb["iou"], "iou_delta": _delta(pa["iou"], pb["iou"]),
            "precision_delta": _delta(pa["precision"], pb["precision"]),
            "acc_delta": _delta(pa["acc"], pb["acc"]),
            "fp_a": pa["fp"], "fp_b": pb["fp"],
        })
    return {"a": name_a, "b": name_b, "summary": rows, "per_class": per_class}


def _fmt(v: float | None, scale: float = 100.0, digits: int = 2, sign: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{scale * v:+.{digits}f}" if sign else f"{scale * v:.{digits}f}"


def format_comparison(result: dict, top: int = 10) -> str:
    lines = [f"A = {result['a']}   B = {result['b']}", "",
             f"{'':10s} {'mIoU A':>7s} {'mIoU B':>7s} {'delta':>7s} {'mAcc d':>7s} {'mFPR A':>8s} {'mFPR B':>8s}"]
    for g, r in result["summary"].items():
        lines.append(f"{g:10s} {_fmt(r['mIoU']['a']):>7s} {_fmt(r['mIoU']['b']):>7s} "
                     f"{_fmt(r['mIoU']['delta'], sign=True):>7s} {_fmt(r['mAcc']['delta'], sign=True):>7s} "
                     f"{_fmt(r['mFPR']['a'], digits=3):>8s} {_fmt(r['mFPR']['b'], digits=3):>8s}")
    scored = [p for p in result["per_class"] if p["iou_delta"] is not None]
    if scored and top:
        ordered = sorted(scored, key=lambda p: p["iou_delta"])
        for title, chosen in (("largest IoU gains (B - A)", ordered[::-1][:top]),
                              ("largest IoU losses (B - A)", ordered[:top])):
            header = f"  {'class':24s} {'regions':>8s} {'group':>9s} {'IoU A':>6s} {'IoU B':>6s} {'delta':>7s}"
            lines += ["", title, header]
            for p in chosen:
                rc = "" if p["region_count"] is None else str(p["region_count"])
                lines.append(f"  {p['name'][:24]:24s} {rc:>8s} {p['group'] or '':>9s} {_fmt(p['iou_a']):>6s} "
                             f"{_fmt(p['iou_b']):>6s} {_fmt(p['iou_delta'], sign=True):>7s}")
    return "\n".join(lines)
