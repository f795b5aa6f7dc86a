"""`rrseg stats` throughput against pure PNG decoding of the same files.

Writes N ADE20K-like label PNGs (683x512, mode L, blocky regions of ~10 classes), then times, for 1 and
for W processes: (a) decoding every file to a numpy array and nothing else, (b) compute_stats (decode +
reduce_zero_label + per-class image and pixel counts). Reported: files/s and (b)/(a).

  python benchmarks/stats_throughput.py [--files 400 --workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from rrseg.data.stats import compute_stats


def decode(path: str) -> int:
    with Image.open(path) as im:
        return np.asarray(im).shape[0]


def pure_decode(files: list[str], workers: int) -> None:
    if workers == 1:
        for f in files:
            decode(f)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(decode, files, chunksize=max(1, min(64, len(files) // (workers * 8)))))


def write_labels(root: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        coarse = rng.integers(0, 151, size=(16, 22), dtype=np.uint8)
        coarse[rng.random(coarse.shape) < 0.5] = rng.integers(0, 151, size=10, dtype=np.uint8)[0]
        label = np.kron(coarse, np.ones((32, 32), np.uint8))[:512, :683]
        path = root / f"ADE_train_{i:08d}.png"
        Image.fromarray(label, mode="L").save(path)
        files.append(str(path))
    return files


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=400)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_labels(Path(tmp), args.files)
        print(f"{args.files} label PNGs of 683x512")
        print("| processes | pure decode (files/s) | rrseg stats (files/s) | ratio |\n|---|---|---|---|")
        for workers in sorted({1, args.workers}):
            best = {"decode": float("inf"), "stats": float("inf")}
            for _ in range(args.repeats):  # interleaved, best of
                t = time.perf_counter()
                pure_decode(files, workers)
                best["decode"] = min(best["decode"], time.perf_counter() - t)
                t = time.perf_counter()
                compute_stats(files, 150, reduce_zero_label=True, workers=workers)
                best["stats"] = min(best["stats"], time.perf_counter() - t)
            d, s = args.files / best["decode"], args.files / best["stats"]
            print(f"| {workers} | {d:.0f} | {s:.0f} | {s / d:.2f} |")


if __name__ == "__main__":
    main()
