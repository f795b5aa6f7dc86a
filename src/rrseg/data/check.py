"""``check_dataset``: scan a dataset and report every problem at once, with the messages training would raise.

Checked per split (split folders, split lists, or a folder dataset's automatic train/val split): the split
exists and holds images (a split list's names each name an image); every image has a label (and, as a warning,
every label an image); every image decodes fully; every label is a readable single-channel index PNG of the
image's size whose values (after reduce_zero_label) are class ids or the ignore index.
"""

from __future__ import annotations

import inspect
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rrseg.data.base import SegDataset
from rrseg.data.builder import dataset_class, detect_layout
from rrseg.data.errors import PROBLEM_KINDS, WARNING_KINDS, DataError
from rrseg.parallel import parallel_map

__all__ = ["CheckReport", "Problem", "SplitReport", "check_dataset", "resolve_dataset", "verify_samples"]


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str

    @property
    def is_warning(self) -> bool:
        return self.kind in WARNING_KINDS


@dataclass
class SplitReport:
    split: str
    images: int = 0  # image files found
    checked: int = 0  # pairs decoded and checked
    problems: list[Problem] = field(default_factory=list)


@dataclass
class CheckReport:
    dataset: str
    root: Path
    num_classes: int
    splits: list[SplitReport] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.splits for p in s.problems]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "num_classes": self.num_classes,
            "ok": self.ok,
            "problem_counts": dict(self.counts()),
            "splits": [
                {"split": s.split, "images": s.images, "checked": s.checked,
                 "problems": [{"kind": p.kind, "message": p.message} for p in s.problems]}
                for s in self.splits
            ],
        }

    def format(self, max_per_kind: int = 20) -> str:
        """The report as text: the problems grouped by kind (the first ``max_per_kind`` of each), a summary."""
        lines = [f"{self.dataset} dataset at {self.root} ({self.num_classes} classes)"]
        for s in self.splits:
            n_err = sum(not p.is_warning for p in s.problems)
            n_warn = len(s.problems) - n_err
            lines.append(f"  split {s.split!r}: {s.images} images, {s.checked} pairs checked, "
                         f"{n_err} problems" + (f", {n_warn} warnings" if n_warn else ""))
        for kind, what in PROBLEM_KINDS.items():
            found = [p for p in self.problems if p.kind == kind]
            if not found:
                continue
            tag = "warning" if kind in WARNING_KINDS else "error"
            lines.append(f"{what} ({kind}, {tag}): {len(found)}")
            lines += [f"  {p.message}" for p in found[:max_per_kind]]
            if len(found) > max_per_kind:
                lines.append(f"  ... and {len(found) - max_per_kind} more")
        n_err, n_warn = len(self.errors), len(self.problems) - len(self.errors)
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"{verdict}: {n_err} problems, {n_warn} warnings in {len(self.splits)} splits")
        return "\n".join(lines)


def resolve_dataset(path: str | os.PathLike, name: str | None = None) -> tuple[str, Path]:
    """(dataset name, root) from a dataset folder (layout recognised) or a folder ``dataset.yaml``;
    ``name`` skips the recognition. (Training configs are resolved by ``rrseg check-data`` itself.)"""
    p = Path(path)
    if name:
        dataset_class(name)  # unknown name -> clear error
        return name, p
    return detect_layout(p)


def _check_one(index: int, dataset: SegDataset) -> tuple[int, str, str] | None:
    err = dataset.check_sample(index)
    return None if err is None else (index, err.kind, str(err))


def check_dataset(
    path: str | os.PathLike,
    name: str | None = None,
    splits: Sequence[str] | None = None,
    workers: int | None = None,
    progress: bool = False,
    options: dict | None = None,
) -> CheckReport:
    """Check every split of the dataset at ``path`` (or the given ``splits``); never raises for bad files.

    ``options`` go to the dataset class, as ``build_dataset(name, root, split, **options)`` would pass them.
    """
    kind, root = resolve_dataset(path, name)
    options = dict(options or {})
    cls = dataset_class(kind)
    try:
        # a folder dataset's options can change its layout (labels_dir, split_file, ...)
        takes_options = "options" in inspect.signature(cls.available_splits).parameters  # type: ignore[attr-defined]
        available = (cls.available_splits(root, **options) if takes_options  # type: ignore[attr-defined]
                     else cls.available_splits(root))  # type: ignore[attr-defined]
    except DataError as e:  # e.g. a broken dataset.yaml, no label folder, two candidate label folders
        report = CheckReport(kind, Path(root), 0)
        report.splits.append(SplitReport("-", problems=[Problem(e.kind, str(e))]))
        return report
    wanted = list(splits) if splits else available
    report: CheckReport | None = None
    if not wanted:
        probe = cls(root, split="__none__", strict=False, **options)  # type: ignore[call-arg]
        report = CheckReport(kind, probe.root or Path(root), probe.num_classes)
        report.splits.append(SplitReport("-", problems=[Problem(
            "empty_split", f"{probe.scan.image_dir.parent}: no split folders with images found")]))
        return report
    for split in wanted:
        ds = cls(root, split=split, strict=False, **options)  # type: ignore[call-arg]
        if report is None:
            report = CheckReport(kind, ds.root or Path(root), ds.num_classes)
        sr = SplitReport(split, images=len(ds) + sum(p.kind == "missing_label" for p in ds.scan.problems))
        sr.problems += [Problem(p.kind, str(p)) for p in ds.scan.problems]
        found = _check_samples(ds, workers, progress, split)
        sr.checked = len(ds)
        sr.problems += [Problem(k, m) for _, k, m in sorted(found)]
        report.splits.append(sr)
    assert report is not None
    return report


def verify_samples(dataset: SegDataset, workers: int = 1, progress: bool = False, what: str = "") -> None:
    """Decode and check every sample of ``dataset`` (as training would read it); raise the first problem
    found, a :class:`DataError` naming the file, with how many more there are. Training calls this before
    it writes anything, so bad data stops a run at the start, not hours into it."""
    found = _check_samples(dataset, workers, progress, what or dataset.split)
    if found:
        _, kind, message = min(found)
        more = f" (and {len(found) - 1} more problems; `rrseg check-data` lists them all)" if len(found) > 1 else ""
        raise DataError(kind, message + more)


def _check_samples(ds: SegDataset, workers: int | None, progress: bool, split: str) -> list[tuple[int, str, str]]:
    # the dataset goes to each worker process once; the problems come back in sample order
    found = parallel_map(_check_one, range(len(ds)), workers, shared=ds, progress=progress,
                         description=f"checking {split}")
    return [problem for problem in found if problem is not None]
